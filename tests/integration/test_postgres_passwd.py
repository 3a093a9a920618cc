"""A per-user `postgresql://` mail location in the passwd-file (userdb_mail), port and all: the IMAP
server serves that user's mail from PostgreSQL, others from their Maildir."""

from __future__ import annotations

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install '.[postgres]')")

from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, mail_location, parse_passwd  # noqa: E402
from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer  # noqa: E402
from fetchdeliver.storage import pgschema  # noqa: E402
from fetchdeliver.storage.maildir import MaildirStore  # noqa: E402
from fetchdeliver.storage.postgres import PostgresStore, close_pools  # noqa: E402
from imap_helpers import RawClient  # noqa: E402
from postgres_support import pg_url, postgres_server  # noqa: E402,F401


def test_the_parser_keeps_the_url_whole():
    entries = parse_passwd("pg:{PLAIN}x:1:1::/home/pg::userdb_mail=postgresql://fd:pw@db.example.org:5433/mail"
                           "?mailuser=pg\nmd:{PLAIN}x:1:1::/home/md::userdb_mail=maildir:~/Maildir:LAYOUT=fs\n")
    assert mail_location(entries["pg"]) == "postgresql://fd:pw@db.example.org:5433/mail?mailuser=pg"
    assert mail_location(entries["md"]) == "maildir:/home/md/Maildir"


def test_imap_serves_a_user_whose_passwd_entry_names_postgresql(pg_url, tmp_path):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pgschema.migrate(conn)
    assert ":" in pg_url.split("@", 1)[1]          # the URL has a port: the colon the parser used to cut at
    passwd = tmp_path / "passwd"
    passwd.write_text(f"pgu:{{PLAIN}}secret::::{tmp_path}::userdb_mail={pg_url}\n"
                      f"mdu:{{PLAIN}}secret::::{tmp_path}::userdb_mail=maildir:~/Maildir\n")
    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(str(passwd)),
                       login_failure_delay=0)
    srv = ThreadedServer(cfg).start()
    try:
        for user in ("pgu", "mdu"):
            c = RawClient(srv.port())
            assert c.command("l", f"LOGIN {user} secret".encode())[-1].startswith(b"l OK")
            raw = f"Subject: for {user}\r\n\r\nhello\r\n".encode()
            c.send(b"a APPEND INBOX {%d+}\r\n" % len(raw) + raw + b"\r\n")
            assert c.until("a")[-1].startswith(b"a OK")
            c.close()
        box = PostgresStore(pg_url, user="pgu").open("INBOX")
        assert [box.read(m) for m in box.sync()] == [b"Subject: for pgu\r\n\r\nhello\r\n"]
        md = MaildirStore(str(tmp_path / "Maildir")).open("INBOX")
        assert len(md.sync()) == 1
    finally:
        srv.stop()
        close_pools()
