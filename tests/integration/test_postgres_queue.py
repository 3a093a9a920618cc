"""The outbound queue in PostgreSQL ([storage] url): rows and bodies in the database, each queued
message sent by one node, the retry schedule kept, and a `queue flush` node SIGKILLed in the middle
of a run leaves nothing unsent (a real PostgreSQL 15, an aiosmtpd relay)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install '.[postgres]')")

from fetchdeliver.config import Settings  # noqa: E402
from fetchdeliver.outbound import smtp  # noqa: E402
from fetchdeliver.outbound.pgqueue import PgOutboundQueue  # noqa: E402
from fetchdeliver.outbound.queue import OutboundQueue  # noqa: E402
from fetchdeliver.storage import pgschema  # noqa: E402
from postgres_support import pg_url, postgres_server  # noqa: E402,F401
from smtp_sinks import Sink, SinkHandler  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def db(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pgschema.migrate(conn)
    return pg_url


def queue_for(tmp_path, db, node: str, extra: str = "") -> OutboundQueue:
    import tomllib

    text = f'[delivery]\nstate_dir = "{tmp_path}/{node}-state"\n\n[storage]\nurl = "{db}"\n{extra}'
    return OutboundQueue.from_settings(Settings(tomllib.loads(text), str(tmp_path / f"{node}.toml")))


def raw(i: int, size: int = 0) -> bytes:
    return (b"From: a@src.test\nTo: b@dest.test\nMessage-ID: <q%d@src.test>\nSubject: %d\n\n" % (i, i)
            + b"x" * size + b"\n")


def test_rows_and_bodies_in_postgres_each_sent_by_one_of_three_nodes(tmp_path, db):
    nodes = [queue_for(tmp_path, db, f"n{k}") for k in range(3)]
    assert all(isinstance(q, PgOutboundQueue) for q in nodes)
    qids = [nodes[i % 3].enqueue("a@src.test", "b@dest.test", raw(i)) for i in range(30)]
    assert {it.id for it in nodes[0].items()} == set(qids)            # one queue, whoever queued
    assert nodes[1].message(qids[0]) == raw(0)                        # byte-exact from another node
    sent: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(3)

    def sender(settings, s, r, body):
        m = re.search(rb"Message-ID: <(q\d+)@", body)
        with lock:
            sent.append(m.group(1).decode())
        time.sleep(0.01)          # a relay's round trip: lets the nodes overlap
        return smtp.Result(smtp.SENT, "250 ok")

    def run(q):
        barrier.wait()
        q.run_once(sender_fn=sender)

    threads = [threading.Thread(target=run, args=(q,)) for q in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(sent) == sorted(f"q{i}" for i in range(30))         # each exactly once
    assert nodes[2].items() == []
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM fd_queue_body").fetchone()[0] == 0


def test_retry_schedule_and_bounce_kept(tmp_path, db):
    q = queue_for(tmp_path, db, "a")
    qid = q.enqueue("a@src.test", "b@dest.test", raw(1))
    t0 = time.time()
    counts = q.run_once(now=t0, sender_fn=lambda *a: smtp.Result(smtp.TEMP, "451 try later"))
    assert counts["deferred"] == 1
    item = queue_for(tmp_path, db, "b").get(qid)                     # another node sees the schedule
    assert item.attempts == 1 and item.last_error == "451 try later" and item.lease_until == 0
    assert item.next_attempt == pytest.approx(t0 + q.settings.retry_delay(1), abs=1)
    assert q.due(now=t0 + 1) == []                                    # not due before its time
    counts = q.run_once(now=item.next_attempt + 1, sender_fn=lambda *a: smtp.Result(smtp.PERM, "550 no"))
    assert counts["bounced"] == 1
    left = q.items()
    assert [(it.kind, it.recipient) for it in left] == [("dsn", "a@src.test")]   # the bounce, queued
    assert b"550 no" in q.message(left[0].id)


class SlowRelay(SinkHandler):
    """A relay that takes a moment per message (so a node can be killed in the middle of a run)."""

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.05)
        return await super().handle_DATA(server, session, envelope)


def test_a_node_killed_during_a_queue_run_loses_nothing(tmp_path, db):
    """SIGKILL `fetchdeliver queue flush` after some messages were relayed; another node's flush
    (after the killed node's send lease expired) sends the rest: every message arrives, at most the
    one in flight at the kill twice (relayed, 250, not yet deleted: unavoidable for any SMTP client)."""
    sink = Sink()
    sink.handler.__class__ = SlowRelay
    try:
        n = 40
        extra = f'queue_lease = 2\n\n[relay]\nhost = "127.0.0.1"\nport = {sink.port}\ntls = "none"\n'
        q = queue_for(tmp_path, db, "a", extra)
        for i in range(n):
            q.enqueue("a@src.test", "b@dest.test", raw(i, 2000))
        cfgs = []
        for node in ("a", "b"):
            cfg = tmp_path / f"{node}.toml"
            cfg.write_text(f'[delivery]\nstate_dir = "{tmp_path}/{node}-state"\n\n[storage]\nurl = "{db}"\n'
                           + extra)
            cfgs.append(str(cfg))
        a = subprocess.Popen([sys.executable, "-m", "fetchdeliver", "queue", "-c", cfgs[0], "flush"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while len(sink.messages) < 8 and a.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert a.poll() is None, "the flush ended before it could be killed"
            a.send_signal(signal.SIGKILL)
        finally:
            a.wait(30)
        at_kill = len(sink.messages)
        assert 0 < at_kill < n
        deadline = time.monotonic() + 60
        while queue_for(tmp_path, db, "b").items() and time.monotonic() < deadline:
            r = subprocess.run([sys.executable, "-m", "fetchdeliver", "queue", "-c", cfgs[1], "flush"],
                               capture_output=True, timeout=120)
            assert r.returncode in (0, 1), r.stderr
            time.sleep(0.5)        # the killed node's lease (2 s) has to expire first
        assert queue_for(tmp_path, db, "b").items() == []
        got = [re.search(rb"Message-ID: <(q\d+)@", m.data).group(1) for m in sink.messages]
        assert set(got) == {b"q%d" % i for i in range(n)}                 # nothing lost
        assert len(got) - len(set(got)) <= 1, (at_kill, len(got))         # at most the one in flight
    finally:
        sink.stop()


def test_status_shows_the_queue_in_postgres(tmp_path, db, fetchdeliver_cmd):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[delivery]\nstate_dir = "{tmp_path}/status-state"\n\n[storage]\nurl = "{db}"\n')
    node = queue_for(tmp_path, db, "other")          # another node queues; this one has an empty state dir
    for i in range(3):
        node.enqueue("a@src.test", "b@dest.test", raw(i))
    r = subprocess.run(fetchdeliver_cmd + ["status", "-c", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "outbound queue (PostgreSQL, all nodes): 3 messages, 3 due now, 0 being sent by a node" in r.stdout, \
        r.stdout
    down = tmp_path / "down.toml"                    # a database that cannot be asked is said so
    down.write_text(f'[delivery]\nstate_dir = "{tmp_path}/status-state"\n\n[storage]\n'
                    'url = "postgresql://nobody@127.0.0.1:1/none"\n')
    r = subprocess.run(fetchdeliver_cmd + ["status", "-c", str(down)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "outbound queue (PostgreSQL): unknown: " in r.stdout, r.stdout + r.stderr
