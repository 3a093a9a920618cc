#!/usr/bin/env python3
"""LMTP benchmark: `fetchdeliver lmtp` vs Dovecot's LMTP server (dovecot-lmtpd + Pigeonhole), one run.

Both servers get the same messages (benchmarks/mda_pipe.py's seeded set), the
same 20-rule Sieve script (into 10 folders or INBOX) and the same clients:
smtplib.LMTP over 1 connection, then over 4 concurrent connections (threads),
one recipient per transaction. Both fsync every message before its 250
(Dovecot's default mail_fsync=optimized; fetchdeliver's [delivery] fsync = true).
At the end the folder of every message is compared between the two servers.

Run as root from the repository (dovecot-core, dovecot-lmtpd, dovecot-sieve installed):
    /work/main/.venv/bin/python benchmarks/lmtp.py [--count 2000] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import mda_pipe  # noqa: E402  (the message set and the rules)


def to_wire(raw: bytes) -> bytes:
    wire = re.sub(rb"(?<!\r)\n", b"\r\n", raw)
    return wire if wire.endswith(b"\r\n") else wire + b"\r\n"


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def run_clients(port: int, rcpt: str, msgs, wires: dict, connections: int) -> float:
    """Send every message once over `connections` concurrent sessions; return the wall time."""
    chunks = [msgs[i::connections] for i in range(connections)]
    errors: list[str] = []
    barrier = threading.Barrier(connections + 1)

    def client(chunk):
        with smtplib.LMTP("127.0.0.1", port) as c:
            c.ehlo("bench.client")
            barrier.wait()
            for m in chunk:
                refused = c.sendmail(m.sender, [rcpt], wires[m.msgid])
                if refused:
                    errors.append(f"{m.msgid}: {refused}")

    threads = [threading.Thread(target=client, args=(ch,)) for ch in chunks]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} messages refused, e.g. {errors[:3]}")
    return elapsed


def start_dovecot(root: Path, script: Path):
    from dovecot import Dovecot, free_ports

    port = free_ports(1)[0]
    extra = f"""
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
info_log_path = /dev/null
lda_mailbox_autocreate = yes
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  sieve = file:{script}
}}
"""
    dc = Dovecot({"one": "x", "four": "x"}, protocols=("imap", "pop3", "lmtp"), extra_config=extra)
    dc.start()
    wait_port(port)
    return dc, port


def start_fetchdeliver(root: Path, script: Path, python: str, processes: int = 1, tag: str = "fd"):
    cfg = root / f"{tag}.toml"
    cfg.write_text(f"""
[lmtp]
processes = {processes}
[[recipient]]
address = "one"
maildir = "{root}/{tag}-one"
rules = "{script}"
[[recipient]]
address = "four"
maildir = "{root}/{tag}-four"
rules = "{script}"
[delivery]
state_dir = "{root}/{tag}-state"
cache_dir = "{root}/{tag}-cache"
""")
    log = open(root / f"{tag}-lmtp.log", "w+")
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(root / "xdg-cache")}
    proc = subprocess.Popen([python, "-m", "fetchdeliver.lmtp_command", "--listen", "127.0.0.1:0", "-c", str(cfg)],
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--dir", help="where the temporary directory goes")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                    help="[lmtp] processes for the second fetchdeliver run (default: the CPUs)")
    args = ap.parse_args()
    if not os.path.exists("/usr/lib/dovecot/lmtp"):
        print("dovecot-lmtpd is not installed (/usr/lib/dovecot/lmtp)", file=sys.stderr)
        return 2

    root = Path(tempfile.mkdtemp(prefix="fd-bench-lmtp-", dir=args.dir))
    os.chmod(root, 0o755)
    msgs = mda_pipe.make_messages(args.count, args.seed)
    wires = {m.msgid: to_wire(m.raw) for m in msgs}  # Msg has __slots__
    sdir = root / "sieve"
    sdir.mkdir()
    script = sdir / "rules.sieve"
    script.write_text(mda_pipe.render_sieve())
    if os.geteuid() == 0:  # Dovecot delivers as nobody and writes rules.svbin beside the script
        os.chown(sdir, 65534, 65534)
        os.chown(script, 65534, 65534)
    dc = None
    procs = []
    variants = [("fd", 1), ("fdn", args.processes)]
    results: dict[tuple[str, int], float] = {}
    try:
        dc, dport = start_dovecot(root, script)
        ports = {}
        for tag, nproc in variants:
            proc, ports[tag] = start_fetchdeliver(root, script, args.python, nproc, tag)
            procs.append(proc)
        for conns, rcpt in ((1, "one"), (4, "four")):
            results[("dovecot", conns)] = run_clients(dport, rcpt, msgs, wires, conns)
            for tag, _n in variants:
                results[(tag, conns)] = run_clients(ports[tag], rcpt, msgs, wires, conns)
        # every message delivered once, to the same folder by all
        mismatches = 0
        for rcpt in ("one", "four"):
            theirs = mda_pipe.read_folders(Path(dc.maildir(rcpt)))
            for tag, _n in variants:
                ours = mda_pipe.read_folders(root / f"{tag}-{rcpt}")
                for m in msgs:
                    if theirs.get(m.msgid) != ours.get(m.msgid) or len(ours.get(m.msgid, [])) != 1:
                        mismatches += 1
                        if mismatches <= 5:
                            print(f"  {tag} {rcpt} {m.msgid}: dovecot {theirs.get(m.msgid)} "
                                  f"fetchdeliver {ours.get(m.msgid)}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(60)
        if dc is not None:
            dc.cleanup()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")

    n = args.count
    print(f"\n{n} messages ({sum(len(m.raw) for m in msgs) // 1024} KiB), 20 Sieve rules, fsync on, "
          f"one recipient per transaction\n")
    nproc = args.processes
    print(f"{'connections':>11}  {'dovecot-lmtpd':>15}  {'fetchdeliver, 1 process':>24}  "
          f"{f'fetchdeliver, {nproc} processes':>26}")
    for conns in (1, 4):
        d = results[("dovecot", conns)]
        cells = [f"{n / results[(tag, conns)]:>7.0f} msgs/s ({d / results[(tag, conns)]:.2f}x)" for tag, _ in variants]
        print(f"{conns:>11}  {n / d:>8.0f} msgs/s  {cells[0]:>24}  {cells[1]:>26}")
    print("(ratio: our rate / Dovecot's rate on the same number of connections)")
    print(f"\nrouting: {'identical' if mismatches == 0 else f'{mismatches} differences'}")
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
