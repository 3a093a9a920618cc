#!/usr/bin/env python3
"""Pigeonhole's Sieve testsuite: fetchdeliver's harness against Pigeonhole's own `testsuite` binary.

The same files (every .svtest file Pigeonhole 0.5.19's Makefile.am runs for `make test` and
`make test-plugins`, read from ../shared/conformance) are run:

- by `fetchdeliver sieve testsuite --makefile ... --plugins` (one process for every file), and
  by `fetchdeliver sieve testsuite FILE` once per file (the way `make test` starts Pigeonhole);
- by Pigeonhole's `testsuite` once per file, as `make test` does (-F for the failure cases,
  -P sieve_extprograms for the extprograms ones), run as `nobody` (it refuses root).

The Pigeonhole binary comes from $PIGEONHOLE_TESTSUITE (Debian does not package it; a binary you
built yourself from Pigeonhole's sources). Without it, `sieve-test` is timed instead on the same
files' scripts (.sieve files beside the .svtest files: compile and run on one message each),
against `fetchdeliver sieve test` on the same scripts.

    .venv/bin/python benchmarks/sieve_testsuite.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fetchdeliver.sieve.testsuite import makefile_cases  # noqa: E402


def conformance() -> Path | None:
    for c in (os.environ.get("FETCHDELIVER_CONFORMANCE"), REPO.parent / "shared" / "conformance"):
        if c and (Path(c) / "pigeonhole-0.5.19" / "Makefile.am").is_file():
            return Path(c) / "pigeonhole-0.5.19"
    return None


def fetchdeliver_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "fetchdeliver"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fetchdeliver"]


def nobody() -> dict:
    return {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}


def run(argv, *, cwd=None, env=None, as_nobody=False) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                       **(nobody() if as_nobody else {}))
    return time.perf_counter() - t0, p


def pigeonhole_binary(work: Path) -> tuple[str | None, str]:
    given = os.environ.get("PIGEONHOLE_TESTSUITE")
    if given and os.access(given, os.X_OK):
        return given, f"$PIGEONHOLE_TESTSUITE ({given})"
    return None, "no $PIGEONHOLE_TESTSUITE"


def pigeonhole_suite(binary: str, cases, work: Path) -> tuple[float, int]:
    os.chmod(work, 0o777)
    passed = 0
    t0 = time.perf_counter()
    for path, fail, plugins in cases:
        argv = [binary, *(["-F"] if fail else []), *(["-P", "sieve_extprograms"] if plugins else []), path]
        _, p = run(argv, cwd=work, as_nobody=True)
        passed += p.returncode == 0
    return time.perf_counter() - t0, passed


def ours_per_file(cases, env) -> tuple[float, int]:
    passed = 0
    t0 = time.perf_counter()
    for path, fail, plugins in cases:
        argv = [*fetchdeliver_cmd(), "sieve", "testsuite", *(["-F"] if fail else []),
                *(["--plugins"] if plugins else []), path]
        _, p = run(argv, env=env)
        passed += p.returncode == 0
    return time.perf_counter() - t0, passed


def sieve_test_fallback(root: Path, work: Path, env: dict, limit: int) -> None:
    st = shutil.which("sieve-test")
    if st is None:
        print("sieve-test not found either (Debian package dovecot-sieve): no Pigeonhole row")
        return
    scripts = sorted(p for p in (root / "tests").rglob("*.sieve"))[:limit]
    msg = work / "msg.eml"
    msg.write_bytes(b"From: sender@example.com\nTo: recipient@example.org\nSubject: Frop!\n\nFriep!\n")
    os.chmod(work, 0o777)
    os.chmod(msg, 0o644)
    t_ph = t_us = 0.0
    for s in scripts:
        local = work / s.name
        shutil.copy(s, local)
        os.chmod(local, 0o644)
        dt, _ = run([st, "-c", "/dev/null", "-o", f"mail_location=maildir:{work}/mail", "-x", "+editheader",
                     "-f", "sender@example.com", "-r", "recipient@example.org", "-a", "recipient@example.org",
                     str(local), str(msg)], cwd=work, as_nobody=True)
        t_ph += dt
        dt, _ = run([*fetchdeliver_cmd(), "sieve", "test", str(local), str(msg)], env=env)
        t_us += dt
    print(f"{len(scripts)} scripts of the testsuite, one process each (compile + run on one message):")
    print(f"  sieve-test              {t_ph:7.2f} s")
    print(f"  fetchdeliver sieve test {t_us:7.2f} s")
    print(f"ratio: fetchdeliver / sieve-test = {t_us / t_ph:.2f}x")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1, help="runs of each row (the median is printed)")
    ap.add_argument("--limit", type=int, default=60, help="scripts for the sieve-test fallback")
    args = ap.parse_args(argv)
    root = conformance()
    if root is None:
        print("Pigeonhole's testsuite not found in ../shared/conformance (or $FETCHDELIVER_CONFORMANCE)")
        return 1
    cases = makefile_cases(str(root / "Makefile.am"), plugins=True)
    with tempfile.TemporaryDirectory(prefix="fd-svtest-bench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # Pigeonhole runs as nobody: it must reach its binary and work dir
        env = dict(os.environ, XDG_CACHE_HOME=str(work / "cache"))
        rows: dict[str, list[float]] = {}
        counts: dict[str, int] = {}
        for _ in range(args.runs):
            dt, p = run([*fetchdeliver_cmd(), "sieve", "testsuite", "--makefile", str(root / "Makefile.am"),
                         "--plugins"], env=env)
            rows.setdefault("fetchdeliver, one process", []).append(dt)
            counts["fetchdeliver, one process"] = sum(1 for ln in p.stdout.splitlines() if ln.startswith("PASS "))
            summary = p.stdout.strip().splitlines()[-1]
            dt, n = ours_per_file(cases, env)
            rows.setdefault("fetchdeliver, a process per file", []).append(dt)
            counts["fetchdeliver, a process per file"] = n
        binary, how = pigeonhole_binary(work)
        if binary is not None:
            phwork = work / "ph"
            phwork.mkdir()
            for _ in range(args.runs):
                dt, n = pigeonhole_suite(binary, cases, phwork)
                rows.setdefault("Pigeonhole testsuite, a process per file", []).append(dt)
                counts["Pigeonhole testsuite, a process per file"] = n
        print(f"{len(cases)} files of Pigeonhole 0.5.19's Makefile.am (make test + test-plugins)")
        print(f"fetchdeliver: {summary}")
        print(f"{'':44s} {'seconds':>8s} {'files passed':>13s}")
        for name, times in rows.items():
            print(f"{name:44s} {statistics.median(times):8.2f} {counts[name]:>8d}/{len(cases)}")
        if binary is not None:
            ph = statistics.median(rows["Pigeonhole testsuite, a process per file"])
            one = statistics.median(rows["fetchdeliver, one process"])
            per = statistics.median(rows["fetchdeliver, a process per file"])
            print(f"ratio: fetchdeliver (a process per file) / Pigeonhole = {per / ph:.2f}x")
            print(f"ratio: fetchdeliver (one process) / Pigeonhole (a process per file) = {one / ph:.2f}x")
        else:
            print(f"Pigeonhole's testsuite binary: {how}; timing sieve-test instead")
            sieve_test_fallback(root, work, env, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
