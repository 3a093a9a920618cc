#!/usr/bin/env python3
"""IMAP under concurrent clients: Dovecot's imaptest stress mode against our server and Dovecot (issue #11).

imaptest (built from ../shared/conformance with build-imaptest.sh; see FIELD-NOTES) runs
--clients clients for --secs seconds against each server in turn, each on a fresh
Maildir, appending messages from one generated mbox (every message with its own
Message-ID, or imaptest reports BODYSTRUCTURE changes against any server). It prints
the average latency per command kind; this script prints both and the ratio
(target: ours at most 2x Dovecot's), the command counts, and imaptest's own
"Error:" lines (its mailbox-state checks), which must be 0.

    /work/main/.venv/bin/python benchmarks/imap_stress.py [--imaptest PATH] [--clients 10] [--secs 15]
        [--runs 3]

--runs N runs imaptest N times against each server, taking turns (ours, Dovecot, ours, ...), on
the same two Maildirs, and prints the median of each command's average latency (the machine is
shared and noisy: one run says little).

Run as root (Dovecot's mail processes run as nobody).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "benchmarks"))


def find_imaptest(given: str | None) -> str:
    """The imaptest binary: --imaptest, else the cache the tests use ($FETCHDELIVER_IMAPTEST_DIR, else
    ~/.cache/fetchdeliver/imaptest; see tests/integration/test_imaptest.py), built there when missing."""
    if given:
        return given
    from test_imaptest import conformance_dir, imaptest_prefix

    prefix = imaptest_prefix()
    binary = os.path.join(prefix, "bin", "imaptest")
    if os.access(binary, os.X_OK):
        return binary
    conf = conformance_dir()
    if conf is None:
        raise SystemExit("imaptest source not found: no ../shared/conformance beside the repository "
                         "(set FETCHDELIVER_CONFORMANCE)")
    out = subprocess.run(["bash", os.path.join(conf, "build-imaptest.sh"), prefix], capture_output=True, text=True)
    if out.returncode != 0 or not os.access(binary, os.X_OK):
        raise SystemExit(f"cannot build imaptest: {out.stderr.strip() or out.stdout.strip()}")
    return binary


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
    ap.add_argument("--runs", type=int, default=3, help="runs per server, taking turns; medians shown")
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
        spy = None
        if os.environ.get("BENCH_PYSPY"):   # a profile of our server: BENCH_PYSPY=out.txt (py-spy in the venv)
            spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--pid",
                                    str(ours.pid), "--subprocesses", "-o", os.environ["BENCH_PYSPY"], "-f", "raw",
                                    "-r", "250"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results: dict[str, list] = {"fetchdeliver": [], "Dovecot": []}
        for run in range(args.runs):
            for name, p in (("fetchdeliver", port), ("Dovecot", dc.port("imap"))):
                print(f"  run {run + 1}/{args.runs}: imaptest against {name} ({args.clients} clients, "
                      f"{args.secs} s) ...", flush=True)
                results[name].append(run_imaptest(exe, p, mbox, args.clients, args.secs))
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
    finally:
        if ours is not None:
            os.killpg(ours.pid, signal.SIGTERM)
            ours.wait(30)
        if dc is not None:
            dc.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    def medians(runs: list) -> tuple[dict, dict, list]:
        ms = {cmd: statistics.median(r[0].get(cmd, 0) for r in runs) for cmd in runs[0][0]}
        n = {cmd: statistics.median(r[1].get(cmd, 0) for r in runs) for cmd in runs[0][1]}
        return ms, n, [ln for r in runs for ln in r[2]]

    (ours_ms, ours_n, ours_err), (dc_ms, dc_n, dc_err) = medians(results["fetchdeliver"]), medians(results["Dovecot"])
    print(f"\nimaptest stress: {args.clients} clients, {args.secs} s each, median of {args.runs} runs of the "
          f"average ms per command\n")
    print(f"{'command':8s} {'fetchdeliver':>13s} {'Dovecot':>9s} {'ours/Dovecot':>13s} {'each run':>20s} "
          f"{'count ours':>11s} {'count Dovecot':>14s}")
    worst = 0.0
    for cmd in ours_ms:
        a, b = ours_ms[cmd], dc_ms.get(cmd, 0)
        ratio = a / b if b else float("inf") if a else 1.0
        worst = max(worst, ratio)
        each = " ".join(f"{o[0].get(cmd, 0)}/{d[0].get(cmd, 0)}"
                        for o, d in zip(results["fetchdeliver"], results["Dovecot"]))
        print(f"{cmd:8s} {a:10.1f} ms {b:6.1f} ms {ratio:12.2f}x {each:>20s} {ours_n.get(cmd, 0):11.0f} "
              f"{dc_n.get(cmd, 0):14.0f}")
    print(f"\nimaptest Error: lines: fetchdeliver {len(ours_err)}, Dovecot {len(dc_err)}")
    for ln in ours_err[:10]:
        print("  ours:", ln)
    print(f"worst ratio {worst:.2f}x (target <= 2x)")
    return 0 if not ours_err else 1


if __name__ == "__main__":
    sys.exit(main())
