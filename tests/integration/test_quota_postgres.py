"""Quotas in PostgreSQL (#14): usage kept by triggers in the delivering transaction, enforced at
delivery (MDA exit 77/75, LMTP 552 5.2.2/452 4.2.2), at IMAP APPEND/COPY (OVERQUOTA), and across
concurrent writers (nobody takes the last free message twice)."""

from __future__ import annotations

import subprocess
import threading

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install '.[postgres]')")

from fetchdeliver.errors import QuotaExceeded  # noqa: E402
from fetchdeliver.storage import pgschema  # noqa: E402
from fetchdeliver.storage.base import StorageError  # noqa: E402
from fetchdeliver.storage.postgres import PostgresQuota, PostgresStore, close_pools, rfc822_size  # noqa: E402
from lmtp_support import RawClient, Server, dot_stuff, to_wire, write_config  # noqa: E402
from postgres_support import pg_url, postgres_server  # noqa: E402,F401


@pytest.fixture
def db(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pgschema.migrate(conn)
    yield pg_url
    close_pools()


def body(n: int, size: int = 1000) -> bytes:
    return f"Subject: pg quota {n}\n\n".encode() + b"y" * size + b"\n"


def store_with(url: str, user: str, limits) -> PostgresStore:
    store = PostgresStore(url, user=user)
    store.quota = PostgresQuota(store, lambda: limits)
    return store


def true_usage(url: str, user: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT coalesce(sum(m.size), 0), count(*) FROM fd_message m JOIN fd_mailbox b "
                           "ON b.id = m.mailbox_id JOIN fd_user u ON u.id = b.user_id WHERE u.name = %s",
                           (user,)).fetchone()
    return int(row[0]), int(row[1])


def test_usage_follows_every_change_and_full_is_refused(db):
    store = store_with(db, "alice", (None, 4))
    for i in range(3):
        store.deliver(body(i))
    store.create("Archive")
    inbox, archive = store.open("INBOX"), store.open("Archive")
    msgs = inbox.sync()
    assert inbox.copy_to(msgs[:1], archive)                       # 4 of 4
    with pytest.raises(QuotaExceeded) as exc:
        store.deliver(body(9))
    assert exc.value.resource == "MESSAGE"
    with pytest.raises(StorageError) as refused:                  # IMAP COPY / APPEND: NO [OVERQUOTA]
        inbox.copy_to(msgs[1:2], archive)
    assert refused.value.code == "OVERQUOTA"
    with pytest.raises(StorageError) as refused:
        archive.append(body(10))
    assert refused.value.code == "OVERQUOTA"
    st = store.quota.status()
    assert (st.bytes, st.messages) == true_usage(db, "alice") and st.messages == 4
    inbox.expunge(msgs[:1])
    store.delete("Archive")                                       # its message leaves the count too
    st = store.quota.status()
    assert (st.bytes, st.messages) == true_usage(db, "alice") and st.messages == 2
    store.rename("INBOX", "Old")                                  # RFC 3501: INBOX's mail moves
    assert (store.quota.status().bytes, store.quota.status().messages) == true_usage(db, "alice")


def test_limits_set_in_the_database_apply_without_config(db):
    store = store_with(db, "carol", None)
    store.deliver(body(1))
    store.quota.set_limits(2 * rfc822_size(body(0)), None)   # sizes count line ends as CRLF
    store.deliver(body(2))
    with pytest.raises(QuotaExceeded) as exc:
        store.deliver(body(3))
    assert exc.value.resource == "STORAGE"
    assert store.quota.status().bytes_limit == 2 * rfc822_size(body(0))


def test_concurrent_writers_never_share_the_last_room(db):
    limit = 10
    results: list[str] = []

    def node():
        store = store_with(db, "dave", (None, limit))
        for i in range(4):
            try:
                store.deliver(body(i))
                results.append("ok")
            except QuotaExceeded:
                results.append("full")

    threads = [threading.Thread(target=node) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results.count("ok") == limit and results.count("full") == 20 - limit
    assert true_usage(db, "dave")[1] == limit


@pytest.mark.parametrize("tempfail", [False, True])
def test_mda_and_lmtp_over_quota_in_postgres(db, tmp_path, fetchdeliver_cmd, tempfail):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[delivery]\nstate_dir = "{tmp_path}/state"\n\n[storage]\nurl = "{db}"\nuser = "erin"\n\n'
                   f'[quota]\nmessages = 2\ntempfail = {"true" if tempfail else "false"}\n')
    codes = [subprocess.run(fetchdeliver_cmd + ["deliver", "-c", str(cfg)], input=body(i), capture_output=True,
                            timeout=60).returncode for i in range(3)]
    assert codes == [0, 0, 75 if tempfail else 77]
    assert true_usage(db, "erin")[1] == 2

    lcfg = write_config(tmp_path, f"""
        [[recipient]]
        address = "frank@example.org"

        [storage]
        url = "{db}"

        [quota]
        messages = 1
        tempfail = {"true" if tempfail else "false"}
        """)
    server = Server(lcfg)
    try:
        replies = []
        for i in range(2):
            c = RawClient(server.host, server.port)
            c.reply()
            c.cmd("LHLO test")
            c.cmd("MAIL FROM:<s@example.org>")
            c.cmd("RCPT TO:<frank@example.org>")
            c.cmd("DATA")
            c.send(dot_stuff(to_wire(body(i))))
            replies.append(c.reply())
            c.close()
    finally:
        server.stop()
    assert replies[0][0] == 250
    assert (replies[1][0], replies[1][1][0].split()[0]) == ((452, "4.2.2") if tempfail else (552, "5.2.2"))
    assert true_usage(db, "frank@example.org")[1] == 1


def test_imap_quota_on_postgres(db, tmp_path):
    from fetchdeliver.config import Settings
    from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password
    from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer
    from imap_helpers import RawClient

    passwd = str(tmp_path / "passwd")
    set_password(passwd, "gina", "secret", "SHA256-CRYPT")
    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                       default_mail=db, login_failure_delay=0)
    cfg.quota_settings = Settings({"quota": {"messages": 2}}, "test")
    srv = ThreadedServer(cfg).start()
    try:
        c = RawClient(srv.port())
        assert c.command("l", b"LOGIN gina secret")[-1].startswith(b"l OK")
        results = []
        for i in range(3):
            raw = to_wire(body(i))
            c.send(f"a{i} APPEND INBOX {{{len(raw)}+}}\r\n".encode() + raw + b"\r\n")
            results.append(c.until(f"a{i}")[-1])
        assert [r.split()[1] for r in results] == [b"OK", b"OK", b"NO"]
        assert results[2].startswith(b"a2 NO [OVERQUOTA]")
        assert c.command("q", b"GETQUOTAROOT INBOX")[:2] == [b'* QUOTAROOT INBOX "User quota"\r\n',
                                                              b'* QUOTA "User quota" (MESSAGE 2 2)\r\n']
        c.command("c", b"CREATE Trash")
        c.command("s", b"SELECT INBOX")
        assert c.command("m", b"MOVE 1 Trash")[-1].startswith(b"m OK")      # full, yet a MOVE goes through
        assert c.command("k", b"COPY 1 Trash")[-1].startswith(b"k NO [OVERQUOTA]")
        assert true_usage(db, "gina")[1] == 2
    finally:
        srv.stop()
