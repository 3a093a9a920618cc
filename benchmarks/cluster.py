#!/usr/bin/env python3
"""Cluster benchmark: 1, 2 and 3 `fetchdeliver lmtp` nodes on one PostgreSQL, next to Dovecot's LMTP
on a Maildir, in one run; and where the time goes.

Every node is one `fetchdeliver lmtp --processes 1` process (so its CPU time is all counted) with `[storage] url` (one mail user per
recipient); the clients (4 LMTP connections, spread round-robin over the nodes) send the same
seeded messages (benchmarks/mda_pipe.py's set) to each setup, one recipient per transaction, no
Sieve. Dovecot (dovecot-lmtpd, mail_fsync=optimized) gets the same messages over 4 connections.
Then each setup serves the delivered mailbox over IMAP (N of our IMAP server processes on the
database; Dovecot's imapd on its Maildir) to 4 connections doing random single-message FETCHes
and SEARCH SUBJECT for --imap-seconds: operations/s and the ratio, and the CPU milliseconds per
operation of our IMAP processes, of PostgreSQL and of Dovecot (its master and every process under
it, the exited imap processes included), with the ratio Dovecot's CPU / (ours + PostgreSQL's):
on the shared machine the rate swings with the load, the CPU per operation much less.
Per setup it prints messages/s, the ratio to Dovecot, PostgreSQL's write transactions per message, and the
CPU seconds per 1000 messages spent in our nodes and in PostgreSQL's processes: on this 2-core
machine the nodes share the cores, so that split (not the rate) is what docs/scaling.md
extrapolates from.

Run as root from the repository (postgresql, dovecot-core, dovecot-lmtpd installed):
    .venv/bin/python benchmarks/cluster.py [--count 1000] [--nodes 1 2 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import lmtp as lmtp_bench  # noqa: E402
import mda_pipe  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        except (OSError, IndexError):
            pass
    return total / TICK


def postgres_pids(postmaster: int) -> list[int]:
    pids = [postmaster]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                        pids.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def tree_pids(root: int) -> list[int]:
    """`root` and all its live descendants (a process's exited children are in its cutime/cstime)."""
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parents.items() if pp == p)
    return out


def start_node(root: Path, url: str, python: str, tag: str):
    cfg = root / f"{tag}.toml"
    cfg.write_text(f"""
[storage]
url = "{url}"
[[recipient]]
address = "bench"
[delivery]
state_dir = "{root}/{tag}-state"
cache_dir = "{root}/{tag}-cache"
""")
    log = open(root / f"{tag}-lmtp.log", "w+")
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(root / "xdg-cache")}
    proc = subprocess.Popen([python, "-m", "fetchdeliver.lmtp_command", "--listen", "127.0.0.1:0",
                             "--processes", "1", "-c", str(cfg)],
                            stderr=log, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        log.seek(0)
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read())
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            raise RuntimeError(f"fetchdeliver lmtp did not start:\n{log.read()}")
        time.sleep(0.05)


def run_spread(ports: list[int], rcpt: str, msgs, wires, connections: int = 4) -> float:
    """`connections` LMTP sessions, the i-th on node i mod N; wall time to send every message once."""
    import threading

    chunks = [msgs[i::connections] for i in range(connections)]
    errors: list[str] = []
    barrier = threading.Barrier(connections + 1)

    def client(i, chunk):
        import smtplib

        with smtplib.LMTP("127.0.0.1", ports[i % len(ports)]) as c:
            c.ehlo("bench.client")
            barrier.wait()
            for m in chunk:
                refused = c.sendmail(m.sender, [rcpt], wires[m.msgid])
                if refused:
                    errors.append(str(refused))

    threads = [threading.Thread(target=client, args=(i, ch)) for i, ch in enumerate(chunks)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} refused, e.g. {errors[:3]}")
    return time.perf_counter() - start


IMAP_SERVER = """
import sys
from fetchdeliver.imapserver.auth import PasswdFileAuthenticator
from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer
from fetchdeliver.storage.postgres import PostgresStore

url, passwd = sys.argv[1], sys.argv[2]

class PerUser(PasswdFileAuthenticator):
    def storage_for(self, account):
        return PostgresStore(url, user=account.user)

srv = ThreadedServer(ServerConfig(listen=["127.0.0.1:0"], authenticator=PerUser(passwd),
                                  login_failure_delay=0)).start()
print(srv.port(), flush=True)
sys.stdin.read()
srv.stop()
"""


def start_imap_node(url: str, passwd: str, python: str):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([python, "-c", IMAP_SERVER, url, passwd], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, start_new_session=True)
    port = int(proc.stdout.readline())
    return proc, port


def imap_ops(ports: list[int], user: str, password: str, count: int, seconds: float,
             connections: int = 4) -> tuple[float, int]:
    """Random single-message `UID FETCH n (ENVELOPE BODY.PEEK[HEADER])` and `SEARCH SUBJECT word`
    over `connections` sessions spread over the nodes for `seconds`; (operations per second,
    operations)."""
    import random
    import threading

    import imapclient

    done = [0] * connections
    errors: list[str] = []
    barrier = threading.Barrier(connections + 1)
    stop = threading.Event()
    words = ["report", "invoice", "meeting", "zzz-none", "build", "order"]

    def client(i):
        rnd = random.Random(i)
        try:
            c = imapclient.IMAPClient("127.0.0.1", port=ports[i % len(ports)], ssl=False, timeout=60)
            c.login(user, password)
            c.select_folder("INBOX", readonly=True)
            uids = c.search(["ALL"])
            barrier.wait()
            while not stop.is_set():
                if rnd.random() < 0.8:
                    c.fetch([rnd.choice(uids)], ["ENVELOPE", "BODY.PEEK[HEADER]"])
                else:
                    c.search(["SUBJECT", rnd.choice(words)])
                done[i] += 1
            c.logout()
        except Exception as e:   # a benchmark reports, it does not hide
            errors.append(repr(e))
            try:
                barrier.abort()
            except Exception:
                pass

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(120)
    if errors:
        raise RuntimeError(f"IMAP client errors: {errors[:3]}")
    return sum(done) / (time.perf_counter() - start), sum(done)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--imap-seconds", type=float, default=5.0)
    args = ap.parse_args()
    import psycopg

    from fetchdeliver.storage import pgschema
    from postgres_support import PostgresServer

    root = Path(tempfile.mkdtemp(prefix="fd-bench-cluster-"))
    os.chmod(root, 0o755)
    msgs = mda_pipe.make_messages(args.count, args.seed)
    wires = {m.msgid: lmtp_bench.to_wire(m.raw) for m in msgs}
    script = root / "empty.sieve"
    script.write_text("keep;\n")
    if os.geteuid() == 0:
        os.chown(script, 65534, 65534)
        os.chown(root, 65534, 65534)
    pg = PostgresServer().start()
    dc = None
    rows = []
    try:
        dc, dport = lmtp_bench.start_dovecot(root, script)
        d_time = run_spread([dport], "one", msgs, wires)
        d0 = cpu_seconds(tree_pids(dc.proc.pid))
        d_imap, d_n = imap_ops([dc.port("imap")], "one", "x", len(msgs), args.imap_seconds)
        time.sleep(0.5)   # the imap processes exit and are reaped: their CPU is in the master's cutime
        d_cpu = (cpu_seconds(tree_pids(dc.proc.pid)) - d0) * 1000 / max(d_n, 1)
        from fetchdeliver.imapserver.auth import set_password

        passwd = str(root / "passwd")
        set_password(passwd, "bench", "x", "SHA256-CRYPT")
        for n in args.nodes:
            url = pg.new_database()
            with psycopg.connect(url, autocommit=True) as conn:
                pgschema.migrate(conn)
            procs, ports = [], []
            try:
                for k in range(n):
                    p, port = start_node(root, url, args.python, f"n{n}-{k}")
                    procs.append(p)
                    ports.append(port)
                with psycopg.connect(url, autocommit=True) as conn:
                    c0 = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").fetchone()[0]
                ours0, pg0 = cpu_seconds(p.pid for p in procs), cpu_seconds(postgres_pids(pg.pid))
                t = run_spread(ports, "bench", msgs, wires)
                ours1, pg1 = cpu_seconds(p.pid for p in procs), cpu_seconds(postgres_pids(pg.pid))
                with psycopg.connect(url, autocommit=True) as conn:
                    c1 = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").fetchone()[0]
                    stored = conn.execute("SELECT count(*) FROM fd_message").fetchone()[0]
                for p in procs:
                    p.terminate()
                    p.wait(60)
                procs = []
                for k in range(n):
                    p, port = start_imap_node(url, passwd, args.python)
                    procs.append(p)
                    ports.append(port)
                ports = ports[n:]
                i0, j0 = cpu_seconds(p.pid for p in procs), cpu_seconds(postgres_pids(pg.pid))
                ops, n_ops = imap_ops(ports, "bench", "x", len(msgs), args.imap_seconds)
                i1, j1 = cpu_seconds(p.pid for p in procs), cpu_seconds(postgres_pids(pg.pid))
                rows.append((n, t, (c1 - c0) / len(msgs), (ours1 - ours0) * 1000 / len(msgs),
                             (pg1 - pg0) * 1000 / len(msgs), stored, ops,
                             (i1 - i0) * 1000 / max(n_ops, 1), (j1 - j0) * 1000 / max(n_ops, 1)))
            finally:
                for p in procs:
                    p.terminate()
                    p.wait(60)
    finally:
        if dc is not None:
            dc.cleanup()
        pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)

    n_msgs = len(msgs)
    print(f"\n{n_msgs} messages ({sum(len(m.raw) for m in msgs) // 1024} KiB), 4 LMTP connections, "
          f"one recipient per transaction, no Sieve; 2 cores shared by everything\n")
    print(f"Dovecot on a Maildir: LMTP {n_msgs / d_time:7.0f} msgs/s; IMAP {d_imap:7.0f} ops/s "
          f"(80% UID FETCH n (ENVELOPE BODY.PEEK[HEADER]), 20% SEARCH SUBJECT, 4 connections), "
          f"Dovecot CPU {d_cpu:.2f} ms/op")
    print(f"{'nodes':>5}  {'LMTP msgs/s':>11}  {'vs dovecot':>10}  {'xacts/msg':>9}  "
          f"{'our CPU ms/msg':>14}  {'PostgreSQL CPU ms/msg':>21}  {'stored':>6}  {'IMAP ops/s':>10}  {'vs dovecot':>10}"
          f"  {'IMAP CPU ms/op: ours':>20}  {'PostgreSQL':>10}  {'vs dovecot':>10}")
    ok = True
    for n, t, commits, ours, pgcpu, stored, ops, i_cpu, j_cpu in rows:
        print(f"{n:>5}  {n_msgs / t:11.0f}  {d_time / t:9.2f}x  {commits:9.2f}  {ours:14.2f}  {pgcpu:21.2f}  "
              f"{stored:>6}  {ops:10.0f}  {ops / d_imap:9.2f}x  {i_cpu:20.2f}  {j_cpu:10.2f}  "
              f"{d_cpu / max(i_cpu + j_cpu, 1e-9):9.2f}x")
        ok &= stored == n_msgs
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
