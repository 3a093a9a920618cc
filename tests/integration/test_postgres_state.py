"""The state database in PostgreSQL ([storage] url): the fetch state, the duplicate memory, pending
deliveries and Sieve memories shared by every node; a real PostgreSQL 15 and a real Dovecot.

- the State protocol on PgState (the same calls tests/unit/test_state.py makes on sqlite);
- `after = "keep"`: a second node (its own state directory) fetches nothing already fetched;
- a node SIGKILLed in the middle of a fetch: another node takes the account over after the lease
  expired, and every message is delivered exactly once (the pending rows and their tokens are found
  in PostgreSQL);
- two and three nodes fetching the same 10 accounts at once: each message delivered once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install '.[postgres]')")

from conftest import make_message  # noqa: E402
from fetchdeliver.state import Pending, message_key, new_token  # noqa: E402
from fetchdeliver.storage import pgschema  # noqa: E402
from fetchdeliver.storage.pgstate import PgState  # noqa: E402
from postgres_support import pg_url, postgres_server  # noqa: E402,F401

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def db(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pgschema.migrate(conn)
    return pg_url


def wait_for(cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stored_ids(db: str, user: str) -> list[bytes]:
    """Message-IDs of every message of `user` in PostgreSQL (one per stored message)."""
    from fetchdeliver.storage.postgres import PostgresStore

    box = PostgresStore(db, user=user).open("INBOX")
    out = []
    for m in box.sync():
        for line in box.read(m).split(b"\n"):
            if line.lower().startswith(b"message-id:"):
                out.append(line.split(b":", 1)[1].strip())
                break
    return out


def count_messages(db: str, user: str) -> int:
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM fd_message m JOIN fd_mailbox b ON b.id = m.mailbox_id "
                            "JOIN fd_user u ON u.id = b.user_id WHERE u.name = %s", (user,)).fetchone()[0]


# -- the protocol ---------------------------------------------------------------------------------

def test_state_protocol_on_postgres(db, tmp_path):
    a, b = PgState(db, str(tmp_path / "a")), PgState(db, str(tmp_path / "b"))   # two nodes
    raw = b"Message-ID: <x@y>\n\nhi\n"
    key = message_key(raw, "<x@y>")
    assert not b.is_delivered("acct", key)
    p = Pending(new_token(), "", None, "uidl-1", key, time.time())
    a.add_pending("acct", [p])
    got = b.pending("acct")                                   # the other node sees it
    assert [q.token for q in got] == [p.token] and got[0].key == key and got[0].uidvalidity is None
    b.complete("acct", delivered=got)
    assert a.is_delivered("acct", key) and a.pop3_seen("acct") == {"uidl-1"} and a.pending("acct") == []
    a.pop3_forget("acct", ["uidl-1"])
    assert b.pop3_seen("acct") == set()

    assert a.imap_uidvalidity("acct", "INBOX") is None
    a.imap_reset_folder("acct", "INBOX", 7, [1, 2])
    assert b.imap_uidvalidity("acct", "INBOX") == 7 and b.imap_seen("acct", "INBOX") == {1, 2}
    q = Pending(new_token(), "INBOX", 7, "3", message_key(b"other", ""), time.time())
    stale = Pending(new_token(), "INBOX", 6, "4", message_key(b"old", ""), time.time())
    a.add_pending("acct", [q, stale])
    a.complete("acct", delivered=[q, stale], seen=[("INBOX", 7, "5")])
    assert b.imap_seen("acct", "INBOX") == {1, 2, 3, 5}      # UID 4 was under an older UIDVALIDITY
    b.imap_forget("acct", "INBOX", [1])
    a.imap_reset_folder("acct", "INBOX", 8)
    assert a.imap_seen("acct", "INBOX") == set() and a.imap_uidvalidity("acct", "INBOX") == 8
    f = Pending(new_token(), "INBOX", 8, "9", message_key(b"f", ""), time.time())
    a.add_pending("acct", [f])
    a.complete("acct", failed=[f])
    assert a.pending("acct") == [] and a.imap_seen("acct", "INBOX") == set()

    # memories: remembered once across nodes, expiring
    assert a.duplicate_seen("id1", 60) is False
    assert b.duplicate_seen("id1", 60) is True
    assert a.remember("vacation", "k", 10, now=1000.0) is False
    assert b.remember("vacation", "k", 10, now=1005.0) is True
    assert b.remember("vacation", "k", 10, now=1011.0) is False     # expired: remembered anew
    b.forget("vacation", "k")
    assert a.remember("vacation", "k", 10, now=1012.0) is False
    assert a.expire_memory(now=10 ** 12) >= 2
    a.close()
    b.close()


def test_remember_is_atomic_across_nodes(db, tmp_path):
    """Eight threads, each its own PgState, remember one key: exactly one sees it first."""
    results = []
    states = [PgState(db, str(tmp_path / f"n{i}")) for i in range(8)]
    barrier = threading.Barrier(len(states))

    def run(st):
        barrier.wait()
        results.append(st.remember("duplicate", "same-key", 60))

    threads = [threading.Thread(target=run, args=(st,)) for st in states]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [False] + [True] * 7


# -- fetching from several nodes --------------------------------------------------------------------

def node_config(tmp_path, node: str, db: str, dovecot, accounts: list[str], *, protocol: str = "imap",
                after: str = "keep", lease_ttl: int = 120, batch_size: int | None = None) -> str:
    cfg = tmp_path / f"{node}.toml"
    text = (f'[delivery]\nstate_dir = "{tmp_path}/{node}-state"\n\n[storage]\nurl = "{db}"\n'
            f'user = "collector"\nlease_ttl = {lease_ttl}\n')
    for user in accounts:
        text += (f'\n[[account]]\nname = "{user}"\nprotocol = "{protocol}"\nhost = "127.0.0.1"\n'
                 f'port = {dovecot.port(protocol)}\ntls = "none"\nuser = "{user}"\n'
                 f'password = "{dovecot.users[user]}"\nafter = "{after}"\n')
        if batch_size is not None:
            text += f"batch_size = {batch_size}\n"
    cfg.write_text(text)
    return str(cfg)


def test_keep_second_node_fetches_nothing_again(tmp_path, db, dovecot, fetchdeliver_cmd):
    """after = "keep": what node a fetched is in PostgreSQL's fetch state, so node b (its own state
    directory) fetches nothing again, for IMAP and POP3; a new message is fetched once, by either."""
    dovecot.append_many("alice", [make_message(i, "keep", body_lines=5) for i in range(8)])
    for proto in ("imap", "pop3"):
        for node in ("a", "b"):
            cfg = node_config(tmp_path, f"{proto}-{node}", db, dovecot, ["alice"], protocol=proto)
            r = subprocess.run(fetchdeliver_cmd + ["fetch", "-c", cfg], capture_output=True, text=True,
                               timeout=120)
            assert r.returncode == 0, r.stdout + r.stderr
            if proto == "imap" and node == "a":
                assert "8 fetched, 8 delivered" in r.stdout, r.stdout
            else:
                # b (IMAP) knows the UIDs; POP3 knows no UIDLs yet but every message is in the
                # shared duplicate memory, so nothing is delivered twice.
                assert " 0 delivered" in r.stdout, r.stdout + r.stderr
    dovecot.append("alice", make_message(99, "keep-new"))
    cfg = node_config(tmp_path, "imap-b", db, dovecot, ["alice"])
    r = subprocess.run(fetchdeliver_cmd + ["fetch", "-c", cfg], capture_output=True, text=True, timeout=120)
    assert "1 fetched, 1 delivered" in r.stdout, r.stdout + r.stderr
    ids = stored_ids(db, "collector")
    assert len(ids) == 9 and len(set(ids)) == 9
    assert len(dovecot.contents("alice")) == 9       # kept on the server


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_node_killed_during_fetch_another_takes_over_each_message_once(tmp_path, db, dovecot,
                                                                       fetchdeliver_cmd, protocol):
    """SIGKILL node a in the middle of a fetch (after some messages committed in PostgreSQL, with
    pending rows and an unacknowledged source); node b takes the account over when a's lease
    expired: every message is stored exactly once and deleted from the server."""
    n = 60
    dovecot.append_many("alice", [make_message(i, "kill", body_lines=400) for i in range(n)])
    cfg_a = node_config(tmp_path, "a", db, dovecot, ["alice"], protocol=protocol, after="delete",
                        lease_ttl=3, batch_size=10)
    a = subprocess.Popen(fetchdeliver_cmd + ["fetch", "-c", cfg_a], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: count_messages(db, "collector") >= 12 or a.poll() is not None), "no progress"
        assert a.poll() is None, "node a finished before it could be killed: " + str(a.communicate())
        a.send_signal(signal.SIGKILL)
    finally:
        a.wait(30)
    killed_at = count_messages(db, "collector")
    assert 0 < killed_at < n
    cfg_b = node_config(tmp_path, "b", db, dovecot, ["alice"], protocol=protocol, after="delete", lease_ttl=3)
    outs = []

    def run_b():
        r = subprocess.run(fetchdeliver_cmd + ["fetch", "-c", cfg_b], capture_output=True, text=True,
                           timeout=120)
        outs.append((r.returncode, r.stdout + r.stderr))
        return r.returncode == 0 and "another node is fetching" not in r.stdout

    assert wait_for(run_b, timeout=60), outs[-3:]          # skipped while a's lease lives (3 s)
    ids = stored_ids(db, "collector")
    assert len(ids) == n, (killed_at, outs[-1])
    assert len(set(ids)) == n                               # each exactly once
    assert dovecot.contents("alice") == {}


@pytest.mark.parametrize("nodes", [2, 3])
def test_nodes_fetching_the_same_ten_accounts_deliver_each_message_once(tmp_path, db, dovecot,
                                                                       fetchdeliver_cmd, nodes):
    """2 or 3 `fetchdeliver fetch` processes at once over the same 10 IMAP accounts with
    after = "keep": leases keep them off each other's accounts, and an account fetched after another
    node released it is known from the shared fetch state. Each message stored once."""
    users = [f"user{k}" for k in range(10)]
    expected = []
    for k, user in enumerate(users):
        dovecot.add_user(user, f"pw{k}")
        msgs = [make_message(i, f"ten-{user}", body_lines=20) for i in range(6)]
        dovecot.append_many(user, msgs)
        expected += msgs
    procs = []
    for node in range(nodes):
        order = users[node * 3:] + users[:node * 3]          # different orders: real contention
        cfg = node_config(tmp_path, f"n{node}", db, dovecot, order)
        procs.append(subprocess.Popen(fetchdeliver_cmd + ["fetch", "-c", cfg], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ids = stored_ids(db, "collector")
    assert len(ids) == len(expected), outs
    assert len(set(ids)) == len(expected)
    # a second round by every node fetches nothing new
    for node in range(nodes):
        r = subprocess.run(fetchdeliver_cmd + ["fetch", "-c", str(tmp_path / f"n{node}.toml")],
                           capture_output=True, text=True, timeout=120)
        delivered = [int(x) for x in re.findall(r"(\d+) delivered", r.stdout)]
        assert r.returncode == 0 and delivered and not any(delivered), r.stdout
    assert len(stored_ids(db, "collector")) == len(expected)


# -- `fetchdeliver imap` with [storage] url ---------------------------------------------------------

def test_fetchdeliver_imap_serves_storage_url_for_every_passwd_user(tmp_path, db):
    """`fetchdeliver imap`'s configuration with [storage] url and a plain passwd-file (no
    userdb_mail): each user logs in to their own mail in PostgreSQL, and only theirs."""
    import argparse

    import imapclient

    from fetchdeliver.imapserver.auth import set_password
    from fetchdeliver.imapserver.command import build_config
    from fetchdeliver.imapserver.server import ThreadedServer
    from fetchdeliver.storage.postgres import PostgresStore

    passwd = str(tmp_path / "passwd")
    set_password(passwd, "alice", "secret", "SHA256-CRYPT")
    set_password(passwd, "bob", "secret2", "SHA256-CRYPT")
    PostgresStore(db, user="alice").deliver(b"Subject: for alice\nMessage-ID: <a@x>\n\nhello alice\n")
    for i in range(2):
        PostgresStore(db, user="bob").deliver(b"Subject: for bob %d\n\nhello bob\n" % i)
    data = {"imap": {"listen": ["127.0.0.1:0"], "passwd_file": passwd, "login_failure_delay": 0},
            "delivery": {"maildir": str(tmp_path / "unused-Maildir")},    # [storage] url wins
            "storage": {"url": db}}
    cfg = build_config(argparse.Namespace(), data)
    server = ThreadedServer(cfg).start()
    try:
        for user, pw, n, subject in (("alice", "secret", 1, b"for alice"), ("bob", "secret2", 2, b"for bob 0")):
            c = imapclient.IMAPClient("127.0.0.1", port=server.port(), ssl=False, timeout=30)
            c.login(user, pw)
            assert c.select_folder("INBOX")[b"EXISTS"] == n
            uid = c.search(["ALL"])[0]
            assert c.fetch([uid], ["ENVELOPE"])[uid][b"ENVELOPE"].subject == subject
            c.logout()
    finally:
        server.stop()
    assert not os.path.exists(tmp_path / "unused-Maildir")


def test_watch_rate_limit_is_shared_by_the_nodes(db):
    """[[watch]] rate_limit with [storage] url: three nodes' limiters, one rule of 4 per hour,
    20 matches spread over them: 4 notifications in all."""
    from fetchdeliver.daemon.watch import SharedLimiter, WatchRule

    rule = WatchRule({"name": "boss", "rate_limit": "4/1h", "mailto": ["me@example.org"]}, 0)
    nodes = [SharedLimiter(db) for _ in range(3)]
    allowed = [nodes[i % 3].allow(rule, time.monotonic()) for i in range(20)]
    assert sum(allowed) == 4 and allowed[:4] == [True] * 4
    other = WatchRule({"name": "other", "rate_limit": "1/1h"}, 1)
    assert nodes[1].allow(other, 0.0) and not nodes[2].allow(other, 0.0)


def test_recovery_finds_the_tokens_of_committed_deliveries_in_postgres(db, tmp_path):
    """What fetch's recover() does after a node died between COMMIT and recording: the delivered
    message's token is found in PostgreSQL (recorded, not fetched again), the other one is not
    (fetched again); another user's messages do not count."""
    from fetchdeliver.storage.postgres import PostgresStore

    state = PgState(db, str(tmp_path / "s"))
    store = PostgresStore(db, user="collector")
    done = Pending(new_token(), "", None, "u1", message_key(b"one", ""), time.time())
    lost = Pending(new_token(), "", None, "u2", message_key(b"two", ""), time.time())
    elsewhere = Pending(new_token(), "", None, "u3", message_key(b"three", ""), time.time())
    state.add_pending("acct", [done, lost, elsewhere])
    received = "Received: from pop.example by node-a with POP3 (fetchdeliver; account acct) id {} for <c@x>\n"
    store.deliver(received.format(done.token).encode() + b"Subject: one\n\none\n")
    PostgresStore(db, user="someone-else").deliver(received.format(elsewhere.token).encode() + b"\nx\n")
    wanted = {p.token: p.key[2] for p in state.pending("acct")}
    found = store.find_tokens(wanted, min(p.at for p in (done, lost)) - 60)
    assert found == {done.token}
    assert store.find_tokens(wanted, time.time() + 3600) == set()      # only messages stored since


def test_postgres_restarted_during_a_fetch_nothing_lost_nothing_twice(tmp_path, db, postgres_server, dovecot,
                                                                      fetchdeliver_cmd):
    """PostgreSQL restarted (fast shutdown: connections cut) in the middle of a POP3 fetch with
    after = "delete": whatever the interrupted run did or did not record, the next run leaves every
    message stored exactly once and the source empty."""
    n = 60
    dovecot.append_many("alice", [make_message(i, "restart", body_lines=400) for i in range(n)])
    cfg = node_config(tmp_path, "a", db, dovecot, ["alice"], protocol="pop3", after="delete", batch_size=10,
                      lease_ttl=3)
    a = subprocess.Popen(fetchdeliver_cmd + ["fetch", "-c", cfg], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: count_messages(db, "collector") >= 12 or a.poll() is not None), "no progress"
        restarted = a.poll() is None
        postgres_server.restart()
        out = a.communicate(timeout=120)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait(30)
    assert restarted, "the fetch ended before PostgreSQL could be restarted"
    assert a.returncode in (0, 1), out
    if a.returncode:
        assert "PostgreSQL" in out[1] and "not available" in out[1], out   # a clear error, not a traceback
    # the next run (node b): a's lease was released, or expires after 3 s if the release met the restart
    cfg_b = node_config(tmp_path, "b", db, dovecot, ["alice"], protocol="pop3", after="delete", lease_ttl=3)
    outs = []

    def run_b():
        r = subprocess.run(fetchdeliver_cmd + ["fetch", "-c", cfg_b], capture_output=True, text=True, timeout=120)
        outs.append((r.returncode, r.stdout + r.stderr))
        return r.returncode == 0 and "another node is fetching" not in r.stdout

    assert wait_for(run_b, timeout=60), outs[-3:]
    ids = stored_ids(db, "collector")
    assert len(ids) == n and len(set(ids)) == n, (out, outs)
    assert dovecot.contents("alice") == {}


def test_qresync_sync_point_is_shared_through_postgres(tmp_path, db, request, fetchdeliver_cmd):
    """The QRESYNC sync point of a folder lives in PostgreSQL: a node that never fetched the account
    (its own, empty state directory) polls it with one SELECT naming the point another node recorded,
    and an expunge made elsewhere reaches the shared state through VANISHED."""
    from rawlog_support import dovecot_with_rawlog, sent_commands

    dc = dovecot_with_rawlog(request)
    dc.append_many("alice", [make_message(i, "qr", body_lines=2) for i in range(6)])
    cfg = {n: node_config(tmp_path, n, db, dc, ["alice"], after="mark-seen") for n in ("a", "b")}

    def fetch(node: str) -> str:
        r = subprocess.run(fetchdeliver_cmd + ["fetch", "-c", cfg[node]], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    assert "6 fetched, 6 delivered" in fetch("a")
    assert "0 fetched" in fetch("b")          # its own \Seen flags came back as FETCH lines: nothing to do
    sent_commands(dc)
    assert "0 fetched" in fetch("a")
    (session,) = sent_commands(dc)
    assert session[0] == "ENABLE QRESYNC" and re.fullmatch(r'SELECT "INBOX" \(QRESYNC \(\d+ \d+\)\)', session[1]) \
        and session[2:] == ["LOGOUT"], session
    c = dc.imap("alice")
    c.select_folder("INBOX")
    c.add_flags([2], [b"\\Deleted"])
    c.expunge()
    c.logout()
    state = PgState(db, str(tmp_path / "probe"))
    assert 2 in state.imap_seen("alice", "INBOX")
    sent_commands(dc)
    assert "0 fetched" in fetch("b")
    (session,) = sent_commands(dc)
    assert not any(cmd.startswith("UID SEARCH") for cmd in session), session
    assert state.imap_seen("alice", "INBOX") == {1, 3, 4, 5, 6}
    assert count_messages(db, "collector") == 6
