"""The `postgres` store against a real PostgreSQL 15: schema migration, the Store/Mailbox interface,
content-addressed bodies, UIDs from concurrent writers, and our IMAP server serving it."""

from __future__ import annotations

import multiprocessing
import os
import threading

import imapclient
import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install '.[postgres]')")

from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password  # noqa: E402
from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer  # noqa: E402
from fetchdeliver.storage import open_store, pgschema  # noqa: E402
from fetchdeliver.storage.postgres import PostgresStore  # noqa: E402
from imap_helpers import MULTIPART, make_server, plain  # noqa: E402
from postgres_support import pg_url, postgres_server  # noqa: E402,F401

CORPUS = os.path.join(os.path.dirname(__file__), "..", "corpus", "odd")


def migrate(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return pgschema.migrate(conn)


@pytest.fixture
def db(pg_url):
    migrate(pg_url)
    return pg_url


def test_migrate_is_versioned_and_safe_from_several_nodes_at_once(pg_url):
    results = []

    def run():
        results.append(migrate(pg_url))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    applied = sorted(n for r in results for n in r)
    assert applied == list(range(1, pgschema.LATEST + 1))     # each step applied exactly once
    assert migrate(pg_url) == []
    with psycopg.connect(pg_url) as conn:
        assert pgschema.current_version(conn) == pgschema.LATEST


def test_a_store_on_an_unmigrated_database_says_what_to_run(pg_url):
    from fetchdeliver.errors import ConfigError

    with pytest.raises(ConfigError, match="fetchdeliver db migrate"):
        PostgresStore(pg_url + "?mailuser=alice").deliver(plain(1))


def test_deliver_read_flags_expunge_vanished(db):
    store = open_store(db + "?mailuser=alice")
    assert isinstance(store, PostgresStore) and store.user == "alice"
    r1 = store.deliver(plain(1))
    r2 = store.deliver(MULTIPART, flags=["\\Seen", "$Label"])
    store.deliver(plain(3), "Work/Reports")
    assert (r1.uid, r2.uid) == (1, 2)
    names = {e.name: e.attributes for e in store.list()}
    assert "\\Noselect" in names["Work"] and "\\HasChildren" in names["Work"]
    box = store.open("INBOX")
    msgs = box.sync()
    assert [m.uid for m in msgs] == [1, 2]
    assert box.read(msgs[1]) == MULTIPART
    assert msgs[1].flags == {"\\Seen", "$Label"}
    assert box.keywords() == ["$Label"]
    assert box.size(msgs[0]) == len(plain(1)) + plain(1).count(b"\n")
    m0 = box.highestmodseq()
    box.set_flags([(msgs[0], frozenset({"\\Flagged"}))])
    assert box.highestmodseq() > m0
    box.expunge([msgs[0]])
    assert [m.uid for m in box.sync()] == [2]
    assert box.vanished_since(m0) == [1]
    # the other user sees nothing of alice's
    assert [m.uid for m in open_store(db + "?mailuser=bob").open("INBOX").sync()] == []
    # a rollback of a delivery (tempfail for another recipient) removes it
    r = store.deliver(plain(4))
    r.rollback()
    assert [m.uid for m in box.sync()] == [2]
    assert r.uid == 3 and box.uidnext() == 4     # UIDs are never reused, not even after a rollback


def _state(msgs):
    return [(m.uid, set(m.flags), m.modseq) for m in msgs]


def test_a_selected_mailbox_follows_another_nodes_commits_as_a_delta(db):
    """Changes committed on another connection without this process's knowledge (as another node
    would: only its NOTIFY comes) reach an open mailbox's sync(): new, re-flagged, expunged and a
    UID inserted below the last one (`store copy`'s append_uid); untouched messages stay the very
    objects, and the result equals a fresh mailbox's full read."""
    import time

    from fetchdeliver.storage.postgres import expunge_uids, insert_message, next_uid_modseq

    store = PostgresStore(db, user="alice")
    for i in (1, 2, 3):
        store.deliver(plain(i))
    box = store.open("INBOX")
    box.append_uid(10, plain(10), (), 0.0)
    first = box.sync()
    assert [m.uid for m in first] == [1, 2, 3, 10]
    assert box.sync() is first                                # nothing changed: the same list
    with psycopg.connect(db) as conn:                          # "another node"
        with conn.transaction():
            insert_message(conn, box.id, plain(4), ["\\Seen"], time.time())       # UID 11
        with conn.transaction():
            insert_message(conn, box.id, plain(5), (), time.time(), uid=7)         # below UID 10
        with conn.transaction():
            _, modseq = next_uid_modseq(conn, box.id, 0)
            conn.execute("UPDATE fd_message SET flags = %s, modseq = %s WHERE mailbox_id = %s AND uid = 2",
                         (["\\Flagged"], modseq, box.id))
            conn.execute("SELECT pg_notify('fd_mailbox', %s)", (str(box.id),))
        with conn.transaction():
            expunge_uids(conn, box.id, [3])
    deadline = time.monotonic() + 10
    while [m.uid for m in box.sync()] != [1, 2, 7, 10, 11] and time.monotonic() < deadline:
        time.sleep(0.05)
    now = box.sync()
    fresh = store.open("INBOX").sync()
    assert _state(now) == _state(fresh)
    assert [m.uid for m in now] == [1, 2, 7, 10, 11]
    assert now[1].flags == {"\\Flagged"} and now[4].flags == {"\\Seen"}
    assert now[0] is first[0] and now[3] is first[3]        # untouched: the same objects
    assert box.highestmodseq() == store.open("INBOX").highestmodseq()
    assert box.uidnext() == 12
    assert box.read(now[2]) == plain(5)


def test_one_body_for_many_recipients(db):
    raw = plain(7) * 50
    for user in ("u%d" % i for i in range(20)):
        PostgresStore(db, user=user).deliver(raw)
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM fd_blob").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM fd_message").fetchone()[0] == 20


def _append_many(url: str, n: int, tag: str, q) -> None:
    store = PostgresStore(url, user="alice")
    q.put([store.deliver(plain(i, tag)).uid for i in range(n)])


def test_two_writers_never_reuse_a_uid(db):
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_append_many, args=(db, 40, f"w{k}", q)) for k in range(2)]
    for p in procs:
        p.start()
    uids = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    everything = uids[0] + uids[1]
    assert len(set(everything)) == 80 and sorted(everything) == list(range(1, 81))
    box = PostgresStore(db, user="alice").open("INBOX")
    msgs = box.sync()
    assert [m.uid for m in msgs] == list(range(1, 81))
    bodies = {box.read(m) for m in msgs}
    assert bodies == {plain(i, f"w{k}") for k in range(2) for i in range(40)}


def _serve(tmp_path, url: str):
    passwd = str(tmp_path / "passwd")
    set_password(passwd, "alice", "secret", "SHA256-CRYPT")

    class PerUser(PasswdFileAuthenticator):
        """The store of the logged-in user: one database, a mail user per login."""

        def storage_for(self, account):
            return PostgresStore(url, user=account.user)

    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PerUser(passwd), login_failure_delay=0,
                       idle_poll=0.2)
    return ThreadedServer(cfg).start()


def test_our_imap_server_serves_a_postgres_store(tmp_path, db):
    store = PostgresStore(db, user="alice")
    for i in range(1, 4):
        store.deliver(plain(i))
    store.deliver(MULTIPART)
    server = _serve(tmp_path, db)
    try:
        c = imapclient.IMAPClient("127.0.0.1", port=server.port(), ssl=False, timeout=30)
        c.login("alice", "secret")
        info = c.select_folder("INBOX")
        assert info[b"EXISTS"] == 4
        env = c.fetch([4], ["ENVELOPE"])[4][b"ENVELOPE"]
        assert env.subject == b"=?UTF-8?B?w4RyZ2Vy?= report"
        assert c.search(["SUBJECT", "number 2"]) == [2]
        assert c.search(["TEXT", "zebra"]) == [4]
        # IMAP speaks CRLF: LF line ends go out as CRLF, as from a Maildir (and Dovecot)
        assert c.fetch([4], ["BODY.PEEK[]"])[4][b"BODY[]"] == MULTIPART.replace(b"\n", b"\r\n")
        c.add_flags([1], ["\\Seen", "$Work"])
        assert set(c.get_flags([1])[1]) == {b"\\Seen", b"$Work"}
        c.append("INBOX", plain(9), flags=["\\Draft"])
        c.create_folder("Archive")
        c.copy([1, 2], "Archive")
        c.delete_messages([3])
        c.expunge()
        assert c.search(["ALL"]) == [1, 2, 4, 5]     # UIDs (imapclient searches by UID)
        c.select_folder("Archive")
        assert c.search(["ALL"]) == [1, 2]
        c.logout()
        # what the server cached (ENVELOPE, header fields) was written to the database
        with psycopg.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM fd_message WHERE envelope IS NOT NULL").fetchone()[0] >= 1
            assert conn.execute("SELECT count(*) FROM fd_field").fetchone()[0] > 0
        box = store.open("INBOX")
        assert {m.uid for m in box.sync()} == {1, 2, 4, 5}
        assert box.vanished_since(1) == [3]
        assert {m.uid: m.flags for m in box.sync()}[5] == {"\\Draft"}
    finally:
        server.stop()


def test_the_odd_corpus_comes_back_byte_exact_through_imap(tmp_path, db):
    """Stored byte-exact, and served over IMAP exactly as the same server serves it from a Maildir."""
    names = sorted(n for n in os.listdir(CORPUS) if not n.startswith("."))
    assert names, "the malformed-mail corpus tests/corpus/odd is empty"
    raws = []
    store = PostgresStore(db, user="alice")
    for n in names:
        with open(os.path.join(CORPUS, n), "rb") as f:
            raw = f.read()
        raws.append(raw)
        store.deliver(raw)
    box = store.open("INBOX")
    assert [box.read(m) for m in box.sync()] == raws
    items = ["BODY.PEEK[]", "BODY.PEEK[HEADER]", "BODY.PEEK[TEXT]", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE"]
    answers = []
    md_dir = tmp_path / "md"
    md_dir.mkdir()
    md_server, _, _ = make_server(md_dir, n_plain=0, extra=raws)
    pg_server = _serve(tmp_path, db)
    try:
        for server in (pg_server, md_server):
            c = imapclient.IMAPClient("127.0.0.1", port=server.port(), ssl=False, timeout=30)
            c.login("alice", "secret")
            c.select_folder("INBOX", readonly=True)
            got = c.fetch(list(range(1, len(raws) + 1)), items)
            answers.append({i: {k: v for k, v in d.items() if k != b"SEQ"} for i, d in got.items()})
            c.logout()
    finally:
        pg_server.stop()
        md_server.stop()
    pg, md = answers
    assert len(pg) == len(raws)
    for i, name in enumerate(names, start=1):
        assert pg[i] == md[i], name


@pytest.mark.parametrize("raw", [
    b"Received: from a\n\tby b\nReceived: x\n",            # nothing but trace fields
    b"Return-Path: <a@b>\r\nDelivered-To: c@d\r\nSubject: s\r\n\r\nbody\r\n",
    b"Received: unterminated",
    b"received: lower\n continued\nX: y\n\n\x00\xff",
    b"",
])
def test_trace_headers_split_from_the_shared_body_come_back_byte_exact(db, raw):
    store = PostgresStore(db, user="alice")
    store.deliver(raw)
    box = store.open("INBOX")
    (m,) = box.sync()
    assert box.read(m) == raw


def test_idle_wakes_when_another_node_delivers(tmp_path, db, fetchdeliver_cmd):
    """A delivery by another process (another node) wakes IDLE through LISTEN/NOTIFY, not polling."""
    import subprocess

    from imap_helpers import RawClient

    store = PostgresStore(db, user="alice")
    store.deliver(plain(1))
    passwd = str(tmp_path / "passwd")
    set_password(passwd, "alice", "secret", "SHA256-CRYPT")

    class PerUser(PasswdFileAuthenticator):
        def storage_for(self, account):
            return PostgresStore(db, user=account.user)

    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PerUser(passwd), login_failure_delay=0,
                       idle_poll=600)      # polling cannot explain a wake-up within the test
    server = ThreadedServer(cfg).start()
    conf = tmp_path / "config.toml"
    conf.write_text(f'[delivery]\nstate_dir = "{tmp_path}/state"\n\n[storage]\nurl = "{db}"\nuser = "alice"\n')
    try:
        c = RawClient(server.port())
        c.command("a", b"LOGIN alice secret")
        c.command("b", b"SELECT INBOX")
        c.send(b"c IDLE\r\n")
        assert c.line().startswith(b"+")
        r = subprocess.run(fetchdeliver_cmd + ["deliver", "-c", str(conf)], input=plain(2),
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        c.sock.settimeout(10)
        assert c.line() == b"* 2 EXISTS\r\n"
        c.send(b"DONE\r\n")
        c.until("c")
        c.close()
    finally:
        server.stop()


def test_imap_metadata_in_postgres(tmp_path, db):
    """METADATA (RFC 5464) with a PostgreSQL store: entries in fd_metadata, per user, moved by RENAME,
    dropped by DELETE, the limits as with a Maildir."""
    from imap_helpers import RawClient

    PostgresStore(db, user="alice").create("Work")
    server = _serve(tmp_path, db)
    try:
        c = RawClient(server.port())
        c.command("a", b"LOGIN alice secret")
        assert b"METADATA" in c.command("b", b"CAPABILITY")[0].split()
        assert c.command("c", b'SETMETADATA "" (/shared/comment "Shared comment")')[-1].startswith(b"c OK")
        assert c.command("d", b'SETMETADATA Work (/private/color "red" /private/bin ~{2}\r\n\x00\xff)')[-1] \
            .startswith(b"d OK")
        got = c.command("e", b"GETMETADATA (DEPTH infinity) Work /private")
        assert got[0] == b'* METADATA "Work" (/private/bin {2}\r\n'
        assert got[1] == b'\x00\xff /private/color "red")\r\n'
        assert c.command("f", b'GETMETADATA "" /shared/comment')[0] == \
            b'* METADATA "" (/shared/comment "Shared comment")\r\n'
        big = b"x" * 70000
        c.send(b"g SETMETADATA Work (/private/big {%d+}\r\n" % len(big) + big + b")\r\n")
        assert c.until("g")[-1].startswith(b"g NO [METADATA MAXSIZE 65536]")
        mailbox_id = c.command("h0", b"STATUS Work (MAILBOXID)")[0]
        assert mailbox_id.startswith(b'* STATUS "Work" (MAILBOXID (Fpg')
        c.command("h", b"RENAME Work Job")
        assert c.command("h1", b"STATUS Job (MAILBOXID)")[0] == mailbox_id.replace(b'"Work"', b'"Job"')   # RFC 8474
        assert c.command("i", b"GETMETADATA Job /private/color")[0] == b'* METADATA "Job" (/private/color "red")\r\n'
        c.command("j", b"DELETE Job")
        c.command("k", b"CREATE Job")
        assert c.command("l", b"GETMETADATA Job /private/color")[0] == b'* METADATA "Job" (/private/color NIL)\r\n'
        c.close()
        with psycopg.connect(db) as conn:
            rows = conn.execute("SELECT u.name, m.mailbox, m.entry FROM fd_metadata m JOIN fd_user u ON "
                                "u.id = m.user_id ORDER BY 2, 3").fetchall()
        assert rows == [("alice", "", "/shared/comment")]
    finally:
        server.stop()
