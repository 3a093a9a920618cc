"""Leases in PostgreSQL: one holder at a time, renewed while held, taken over after the holder
died (SIGKILL), and N nodes racing for 10 accounts each get disjoint ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install '.[postgres]')")

from fetchdeliver.storage import pgschema  # noqa: E402
from fetchdeliver.storage.leases import Leases  # noqa: E402
from postgres_support import pg_url, postgres_server  # noqa: E402,F401


@pytest.fixture
def db(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pgschema.migrate(conn)
    return pg_url


def wait_for(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_one_holder_renewal_and_release(db):
    a, b = Leases(db, "node-a"), Leases(db, "node-b")
    with a.hold("fetch:alice", ttl=3) as la:
        assert la
        assert not b.acquire("fetch:alice", 1.5)
        time.sleep(4.0)   # longer than the TTL: only the renewal keeps it ours (deliberate, not a race)
        assert a.holder("fetch:alice") == "node-a" and not la.lost.is_set()
        assert not b.acquire("fetch:alice", 1.5)
    assert b.acquire("fetch:alice", 1.5)           # released at the end of the block
    assert b.holder("fetch:alice") == "node-b"


HOLDER = """
import sys, time
from fetchdeliver.storage.leases import Leases
l = Leases(sys.argv[1], "doomed")
h = l.hold("queue:run", ttl=1.0).__enter__()
print("held" if h else "not", flush=True)
time.sleep(600)
"""


def test_a_killed_node_loses_its_lease_to_another(db):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, db], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"held"
        other = Leases(db, "survivor")
        assert not other.acquire("queue:run", 1.0)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
        assert wait_for(lambda: other.acquire("queue:run", 1.0))
        assert other.holder("queue:run") == "survivor"
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(30)


def test_three_nodes_racing_for_ten_accounts_hold_disjoint_sets(db):
    nodes = [Leases(db, f"node-{i}") for i in range(3)]
    taken: dict[str, list[str]] = {n.node: [] for n in nodes}
    barrier = threading.Barrier(3)

    def run(leases):
        barrier.wait()
        for k in range(10):
            if leases.acquire(f"fetch:account{k}", 30):
                taken[leases.node].append(f"fetch:account{k}")

    threads = [threading.Thread(target=run, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = [a for v in taken.values() for a in v]
    assert sorted(everything) == sorted(f"fetch:account{k}" for k in range(10))   # each exactly once


def test_two_nodes_fetching_one_account_deliver_each_message_once(tmp_path, db, dovecot, fetchdeliver_cmd):
    """Two `fetchdeliver fetch` nodes (own state directories, one database) on one POP3 account at
    once: the lease lets one fetch it; every message lands in PostgreSQL exactly once. (POP3 with
    `after = "delete"`: with "keep" the nodes would need the fetch state in PostgreSQL, not there yet.)"""
    from conftest import make_message
    from fetchdeliver.storage.postgres import PostgresStore

    msgs = [make_message(i, "twonodes", body_lines=200) for i in range(30)]
    dovecot.append_many("alice", msgs)
    procs = []
    for node in ("a", "b"):
        cfg = tmp_path / f"{node}.toml"
        cfg.write_text(f'[delivery]\nstate_dir = "{tmp_path}/{node}-state"\n\n[storage]\nurl = "{db}"\n'
                       f'user = "alice"\n\n[[account]]\nname = "pop"\nprotocol = "pop3"\nhost = "127.0.0.1"\n'
                       f'port = {dovecot.port("pop3")}\ntls = "none"\nuser = "alice"\n'
                       f'password = "{dovecot.users["alice"]}"\nafter = "delete"\n')
        procs.append(subprocess.Popen(fetchdeliver_cmd + ["fetch", "-c", str(cfg)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    box = PostgresStore(db, user="alice").open("INBOX")
    got = [box.read(m) for m in box.sync()]
    assert len(got) == len(msgs)
    ids = sorted(line for g in got for line in g.split(b"\n") if line.lower().startswith(b"message-id:"))
    assert len(set(ids)) == len(msgs)
    assert dovecot.contents("alice") == {}
