#!/usr/bin/env python3
"""Submission benchmark: `fetchdeliver`'s submission server next to aiosmtpd's bare server, one run.

Both servers get the same 1000 messages (seeded, 1-20 KB, From: the logged-in user) over the same
clients: 4 concurrent smtplib connections, each logging in once with AUTH PLAIN and then sending
its share, one remote recipient per message.

- fetchdeliver: each message is checked (sender, From:), gets Received/Message-ID/Date as needed,
  is queued durably (file + directory fsynced, sqlite commit) and copied into alice's Sent folder
  (fsynced) before the 250; the queue runner relays it to an aiosmtpd sink on 127.0.0.1. Two
  figures: accepted (all 250s in) and relayed (all 1000 at the sink).
- the floor: aiosmtpd's SMTP server with AUTH PLAIN (any password) whose handler keeps the message
  in memory and answers 250 - the same protocol code with no storage, no checks, no relay.

Postfix's submission service is not measured: it needs SASL through Cyrus or a Dovecot auth socket
and its own queue/mail_owner set-up as root; see docs/submission.md.

    /work/main/.venv/bin/python benchmarks/submission.py [--count 1000] [--connections 4] [--no-fsync]
"""

from __future__ import annotations

import argparse
import logging
import random
import smtplib
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))


def make_messages(count: int, seed: int = 20) -> list[tuple[str, bytes]]:
    rnd = random.Random(seed)
    words = "mail queue relay submit sender message header body fsync folder client server".split()
    out = []
    for i in range(count):
        rcpt = f"user{rnd.randrange(50)}@remote{rnd.randrange(5)}.example"
        size = int(1000 * 20 ** rnd.random())  # log-uniform 1-20 KB
        lines = []
        n = 0
        while n < size:
            line = " ".join(rnd.choice(words) for _ in range(rnd.randrange(5, 14)))
            lines.append(line)
            n += len(line) + 2
        head = [f"From: Alice <alice@example.org>", f"To: <{rcpt}>", f"Subject: benchmark {i}"]
        if i % 2:  # half come without Date / Message-ID (the server adds them)
            head += [f"Message-ID: <bench{i}@example.org>", "Date: Tue, 01 Dec 2026 10:00:00 +0000"]
        out.append((rcpt, ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(lines) + "\r\n").encode()))
    return out


def run_clients(port: int, msgs, connections: int, sender: str = "alice@example.org") -> float:
    chunks = [msgs[i::connections] for i in range(connections)]
    errors: list[str] = []
    barrier = threading.Barrier(connections + 1)

    def client(chunk):
        try:
            s = smtplib.SMTP("127.0.0.1", port, timeout=120)
            s.ehlo("bench.test")
            s.login("alice", "secret")
        except Exception as e:  # noqa: BLE001
            errors.append(f"login: {e}")
            barrier.wait()
            return
        barrier.wait()
        try:
            for rcpt, raw in chunk:
                s.sendmail(sender, [rcpt], raw)
            s.quit()
        except Exception as e:  # noqa: BLE001
            errors.append(str(e))

    threads = [threading.Thread(target=client, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    if errors:
        raise RuntimeError("; ".join(errors[:3]))
    return took


def bench_fetchdeliver(msgs, connections: int, fsync: bool, tmp: str) -> tuple[float, float]:
    from submission_support import World

    w = World(tmp, submission='rate_limit = "0"\n', fsync=fsync)
    try:
        start = time.perf_counter()
        accepted = run_clients(w.port, msgs, connections)
        deadline = time.monotonic() + 600
        while len(w.sink.messages) < len(msgs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(w.sink.messages)} of {len(msgs)} reached the sink")
            time.sleep(0.01)
        relayed = time.perf_counter() - start
        if len(w.sent()) != len(msgs):
            raise RuntimeError(f"{len(w.sent())} Sent copies for {len(msgs)} messages")
        return accepted, relayed
    finally:
        w.stop()


def bench_aiosmtpd(msgs, connections: int) -> float:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult
    from smtp_sinks import free_port

    kept = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            kept.append(envelope.original_content)
            return "250 2.0.0 Ok"

    port = free_port()
    c = Controller(Handler(), hostname="127.0.0.1", port=port, auth_require_tls=False,
                   authenticator=lambda *a: AuthResult(success=True), ready_timeout=30)
    c.start()
    try:
        took = run_clients(port, msgs, connections)
        assert len(kept) == len(msgs)
        return took
    finally:
        c.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--no-fsync", action="store_true", help="[delivery] fsync = false (the queue still fsyncs)")
    p.add_argument("--dir", help="where the temporary directory goes (the filesystem decides what fsync costs)")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    msgs = make_messages(args.count)
    size = sum(len(r) for _a, r in msgs)
    print(f"{len(msgs)} messages, {size / 1e6:.1f} MB, {args.connections} connections, AUTH PLAIN")
    floor = bench_aiosmtpd(msgs, args.connections)
    with tempfile.TemporaryDirectory(prefix="fd-submission-bench-", dir=args.dir) as tmp:
        accepted, relayed = bench_fetchdeliver(msgs, args.connections, not args.no_fsync, tmp)
    n = len(msgs)
    rows = [("aiosmtpd bare server (floor)", floor), ("fetchdeliver: accepted (queued + Sent copy)", accepted),
            ("fetchdeliver: relayed to the sink", relayed)]
    print(f"{'':45} {'seconds':>8} {'msg/s':>8} {'x floor':>8}")
    for name, t in rows:
        print(f"{name:45} {t:8.2f} {n / t:8.0f} {t / floor:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
