#!/usr/bin/env python3
"""POP3 server benchmark: fetchdeliver's server next to Dovecot's pop3d on one Maildir (issue #13).

One seeded Maildir of --count messages (default 10,000; sizes 1-16 KB, LF line ends as an MDA
stores them) is first served once by Dovecot (so dovecot-uidlist numbers the messages), then
copied: Dovecot serves one copy, `fetchdeliver pop3` (a separate process) the other, both on
127.0.0.1 with the same {PLAIN} passwords. File names carry ,S= and ,W= sizes as dovecot-lda's
and ours do; --bare-names leaves them out (procmail's, maildrop's), so sizes come from the files. The same raw client times, against each in turn:

    login + UIDL                   of the whole mailbox (the snapshot is taken at login)
    RETR x --retr                  messages 1..N one after the other (default 2000), as fetchmail does
    LIST                           the whole mailbox
    first login + STAT             after both servers were restarted (--restarts times)

Each row is the median of --repeat runs after one untimed warm-up session per server; the
answers (UIDL lines, bytes retrieved) must be equal or the run says so. Target (issue #13):
each at most 1.5x Dovecot's time. Run as root (Dovecot's mail processes run as nobody):

    /work/main/.venv/bin/python benchmarks/pop3_server.py [--count 10000] [--retr 2000] [--repeat 5] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey yankee report meeting invoice build release").split()


def make_maildir(root: Path, count: int, seed: int, sizes_in_names: bool = True) -> None:
    rnd = random.Random(seed)
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    t0 = 1_700_000_000
    for i in range(count):
        size = int(1024 * 16 ** rnd.random())
        lines = [f"From: sender{i % 97}@example.org", "To: alice@example.com",
                 f"Subject: {' '.join(rnd.choices(WORDS, k=5))}", f"Message-ID: <bench.{i}@example.org>",
                 "Date: Mon, 24 Nov 2025 10:00:00 +0000", ""]
        body = []
        n = 0
        while n < size:
            line = " ".join(rnd.choices(WORDS, k=rnd.randint(3, 12)))
            if rnd.random() < 0.01:
                line = "." + line            # a line that needs dot-stuffing now and then
            body.append(line)
            n += len(line) + 1
        raw = ("\n".join(lines + body) + "\n").encode()
        name = f"{t0 + i}.M{i}P1.bench"
        if sizes_in_names:   # as dovecot-lda and fetchdeliver name their files
            name += f",S={len(raw)},W={len(raw) + len(body) + len(lines)}"   # one CR per line
        (root / "new" / name).write_bytes(raw)
        os.utime(root / "new" / name, (t0 + i, t0 + i))


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb", buffering=1 << 16)
        self.f.readline()

    def cmd(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        line = self.f.readline()
        if not line.startswith(b"+OK"):
            raise RuntimeError(f"{text!r}: {line!r}")
        return line

    def multi(self, text: str) -> bytes:
        self.cmd(text)
        chunks = []
        readline = self.f.readline
        while True:
            line = readline()
            if line == b".\r\n":
                return b"".join(chunks)
            if not line:
                raise EOFError(text)
            chunks.append(line)

    def login(self) -> None:
        self.cmd("USER alice")
        self.cmd("PASS secret")

    def quit(self) -> None:
        self.cmd("QUIT")
        self.f.close()
        self.sock.close()


def session_uidl(port: int) -> tuple[float, bytes]:
    t = time.perf_counter()
    c = Client(port)
    c.login()
    out = c.multi("UIDL")
    took = time.perf_counter() - t
    c.quit()
    return took, out


def session_retr(port: int, n: int) -> tuple[float, int]:
    c = Client(port)
    c.login()
    total = 0
    t = time.perf_counter()
    for i in range(1, n + 1):
        total += len(c.multi(f"RETR {i}"))
    took = time.perf_counter() - t
    c.quit()
    return took, total


def session_stat(port: int) -> tuple[float, bytes]:
    t = time.perf_counter()
    c = Client(port)
    c.login()
    out = c.cmd("STAT")
    took = time.perf_counter() - t
    c.quit()
    return took, out


def session_list(port: int) -> tuple[float, bytes]:
    c = Client(port)
    c.login()
    t = time.perf_counter()
    out = c.multi("LIST")
    took = time.perf_counter() - t
    c.quit()
    return took, out


def wait_port(proc, log: Path, timeout: float = 60) -> int:
    import re

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"pop3: listening on 127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if m:
            return int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"fetchdeliver pop3 did not start:\n{log.read_text(errors='replace')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--retr", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--restarts", type=int, default=3,
                    help="times both servers are restarted to time the first login + STAT (default 3)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--bare-names", action="store_true",
                    help="file names without ,S=/,W= (as procmail or maildrop write them): every size "
                         "must be read from the file")
    args = ap.parse_args()
    from pop3_support import Pop3Dovecot

    work = Path(tempfile.mkdtemp(prefix="fd-pop3-bench-"))
    dc = Pop3Dovecot({"alice": "secret"})
    proc = None
    try:
        print(f"making {args.count} messages ...", flush=True)
        src = work / "src"
        make_maildir(src, args.count, args.seed, sizes_in_names=not args.bare_names)
        dc.start()
        shutil.rmtree(dc.user_maildir("alice"))
        dc.load_maildir("alice", str(src))
        session_uidl(dc.port("pop3"))            # Dovecot numbers the messages (dovecot-uidlist)
        ours = Path(dc.copy_maildir_to("alice", str(work / "ours")))
        (work / "passwd").write_text("alice:{PLAIN}secret\n")
        cfg = work / "config.toml"
        cfg.write_text(f'[delivery]\nmaildir = "{ours}"\nstate_dir = "{work / "state"}"\n'
                       f'cache_dir = "{work / "cache"}"\n\n[pop3]\nlisten = "127.0.0.1:0"\n'
                       f'passwd_file = "{work / "passwd"}"\nlogin_failure_delay = "0s"\n')
        log = work / "fetchdeliver-pop3.log"

        def start_ours():
            with open(log, "wb") as lf:
                p = subprocess.Popen([sys.executable, "-m", "fetchdeliver", "pop3", "-c", str(cfg)],
                                     stdout=lf, stderr=subprocess.STDOUT, cwd=str(REPO))
            return p, wait_port(p, log)

        def stop_ours(p):
            p.send_signal(signal.SIGTERM)
            p.wait(30)

        proc, port = start_ours()
        ports = {"dovecot": dc.port("pop3"), "fetchdeliver": port}
        for port in ports.values():     # warm-up: Dovecot's index, our fetchdeliver-index.sqlite, page cache
            session_uidl(port)
            session_retr(port, min(args.retr, args.count))
        rows = {}
        answers = {}
        for name, fn in (("login + UIDL", lambda p: session_uidl(p)),
                         (f"RETR x {args.retr}", lambda p: session_retr(p, min(args.retr, args.count))),
                         ("LIST", lambda p: session_list(p))):
            times = {k: [] for k in ports}
            for _ in range(args.repeat):
                for server, port in ports.items():   # taking turns: noise hits both alike
                    took, out = fn(port)
                    times[server].append(took)
                    answers.setdefault(name, {})[server] = out
            rows[name] = {k: statistics.median(v) for k, v in times.items()}
        # The first session after a restart: Dovecot answers from its index files, we from
        # dovecot-uidlist and fetchdeliver-index.sqlite (and, without ,W= in the names, the files).
        firsts = {k: [] for k in ports}
        for _ in range(args.restarts):
            dc.stop()
            stop_ours(proc)
            dc.start()
            proc, port = start_ours()
            ports = {"dovecot": dc.port("pop3"), "fetchdeliver": port}
            for server, p in ports.items():
                took, out = session_stat(p)
                firsts[server].append(took)
                answers.setdefault("first login + STAT after a restart", {})[server] = out.split()[:3]
        if args.restarts:
            rows["first login + STAT after a restart"] = {k: statistics.median(v) for k, v in firsts.items()}
        names = "without sizes in the file names" if args.bare_names else "with ,S=/,W= in the file names"
        print(f"\nMaildir of {args.count} messages {names}, median of {args.repeat} runs\n")
        print(f"{'':36} {'Dovecot pop3d':>14} {'fetchdeliver':>14} {'ratio':>7}")
        ok = True
        for name, r in rows.items():
            ratio = r["fetchdeliver"] / r["dovecot"]
            same = answers[name]["dovecot"] == answers[name]["fetchdeliver"]
            ok &= same
            print(f"{name:36} {r['dovecot'] * 1000:11.1f} ms {r['fetchdeliver'] * 1000:11.1f} ms {ratio:6.2f}x"
                  f"{'' if same else '   ANSWERS DIFFER'}")
        print("\ntarget: at most 1.5x Dovecot's time" + ("" if ok else "; the answers differed (see above)"))
        return 0 if ok else 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        dc.cleanup()
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
