#!/usr/bin/env python3
"""IMAP under concurrent clients: Dovecot's imaptest stress mode against our server and Dovecot (issue #11).

imaptest (built from ../shared/conformance with build-imaptest.sh; see FIELD-NOTES) runs
--clients clients for --secs seconds against each server in turn, each on a fresh
Maildir, appending messages from one generated mbox (every message with its own
Message-ID, or imaptest reports BODYSTRUCTURE changes against any server). It prints
the average latency per command kind; this script prints both and the ratio
(target: ours at most 2x Dovecot's), the command counts, and imaptest's own
"Error:" lines (its mailbox-state checks), which must be 0.

    /work/main/.venv/bin/python benchmarks/imap_stress.py [--imaptest /tmp/imaptest/bin/imaptest]
        [--clients 10] [--secs 15]

Run as root (Dovecot's mail processes run as nobody).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "benchmarks"))


def find_imaptest(given: str | None) -> str:
    if given:
        return given
    script = REPO.parent / "shared" / "conformance" / "build-imaptest.sh"
    if not script.exists():
        script = Path("/work/shared/conformance/build-imaptest.sh")
    out = subprocess.run(["bash", str(script), "/tmp/imaptest"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"cannot build imaptest: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1]


def write_mbox(path: str, n: int) -> None:
    from imap_server import make_messages

    with open(path, "wb") as f:
        for raw, _flags in make_messages(n, 11):
            f.write(b"From bench@example.org Mon Sep  1 00:00:00 2025\n" + raw.replace(b"\nFrom ", b"\n>From ")
                    + b"\n")


def run_imaptest(exe: str, port: int, mbox: str, clients: int, secs: int) -> tuple[dict, dict, list[str]]:
    """({command: ms per command}, {command: count}, error lines)."""
    r = subprocess.run([exe, "host=127.0.0.1", f"port={port}", "user=alice", "pass=secret", f"mbox={mbox}",
                        f"clients={clients}", f"secs={secs}"], capture_output=True, text=True,
                       timeout=secs + 300)
    lines = r.stdout.splitlines()
    errors = [ln for ln in (r.stdout + r.stderr).splitlines() if "Error:" in ln]
    names = lines[0].split()
    avg_line = next((ln for ln in lines if ln.endswith("ms/cmd avg")), None)
    if avg_line is None:
        raise RuntimeError(f"imaptest printed no averages:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    avgs = [int(x) for x in avg_line.split()[:len(names)]]
    totals_at = lines.index("Totals:")
    counts = [int(x) for x in lines[totals_at + 4].split()[:len(names)]]
    return dict(zip(names, avgs)), dict(zip(names, counts)), errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--imaptest", help="imaptest binary (default: build into /tmp/imaptest)")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--secs", type=int, default=15)
    ap.add_argument("--messages", type=int, default=300, help="messages in the mbox imaptest appends from")
    args = ap.parse_args()

    from dovecot import Dovecot, DovecotUnavailable
    from imap_server import start_ours

    exe = find_imaptest(args.imaptest)
    work = tempfile.mkdtemp(prefix="fd-imapstress-")
    os.chmod(work, 0o755)
    mbox = os.path.join(work, "source.mbox")
    write_mbox(mbox, args.messages)
    dc = ours = None
    try:
        try:
            dc = Dovecot({"alice": "secret"},
                         extra_config="namespace inbox {\n  inbox = yes\n  separator = /\n  prefix =\n}\n")
        except DovecotUnavailable as e:
            print(f"Dovecot is needed: {e}", file=sys.stderr)
            return 2
        dc.start()
        ours, port = start_ours(work, os.path.join(work, "fd-Maildir"))
        results = {}
        for name, p in (("fetchdeliver", port), ("Dovecot", dc.port("imap"))):
            print(f"  imaptest against {name} ({args.clients} clients, {args.secs} s) ...", flush=True)
            results[name] = run_imaptest(exe, p, mbox, args.clients, args.secs)
    finally:
        if ours is not None:
            os.killpg(ours.pid, signal.SIGTERM)
            ours.wait(30)
        if dc is not None:
            dc.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    (ours_ms, ours_n, ours_err), (dc_ms, dc_n, dc_err) = results["fetchdeliver"], results["Dovecot"]
    print(f"\nimaptest stress: {args.clients} clients, {args.secs} s each, average ms per command\n")
    print(f"{'command':8s} {'fetchdeliver':>13s} {'Dovecot':>9s} {'ours/Dovecot':>13s} {'count ours':>11s} "
          f"{'count Dovecot':>14s}")
    worst = 0.0
    for cmd in ours_ms:
        a, b = ours_ms[cmd], dc_ms.get(cmd, 0)
        ratio = a / b if b else float("inf") if a else 1.0
        worst = max(worst, ratio)
        print(f"{cmd:8s} {a:10d} ms {b:6d} ms {ratio:12.2f}x {ours_n.get(cmd, 0):11d} {dc_n.get(cmd, 0):14d}")
    print(f"\nimaptest Error: lines: fetchdeliver {len(ours_err)}, Dovecot {len(dc_err)}")
    for ln in ours_err[:10]:
        print("  ours:", ln)
    print(f"worst ratio {worst:.2f}x (target <= 2x)")
    return 0 if not ours_err else 1


if __name__ == "__main__":
    sys.exit(main())
