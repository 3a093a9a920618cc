#!/usr/bin/env python3
"""What a cached `fetchdeliver deliver` spends on imports (`python -X importtime`).

Delivers one benchmark message through the benchmark's 20-rule Sieve script
twice (so the Sieve cache and the bytecode exist), then runs the same delivery
under `-X importtime` a few times and prints the modules sorted by their median
cumulative import time (top 25 by default), plus the modules from the
"do not import on the MDA path" list and which module first pulled each in.

    /work/main/.venv/bin/python benchmarks/importtime.py [--top 25] [--runs 5] [--plain]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in benchmarks/
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mda_pipe import FOLDERS, REPO, make_maildir, make_messages, make_plain_venv, render_sieve  # noqa: E402

# Modules the MDA path must not import at module level (notes/common.md).
HEAVY = ("dataclasses", "typing", "logging", "re", "email", "tomllib", "socket", "random", "lark", "pickle",
         "json", "datetime", "argparse", "subprocess")
LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


def parse(stderr: str) -> list[tuple[str, int, int, int]]:
    """(module, self us, cumulative us, depth) in the order Python printed them."""
    out = []
    for line in stderr.splitlines():
        m = LINE.match(line)
        if m:
            out.append((m.group(4), int(m.group(1)), int(m.group(2)), (len(m.group(3)) - 1) // 2))
    return out


def importers(rows: list[tuple[str, int, int, int]]) -> dict[str, str]:
    """Module -> the module whose import first pulled it in (importtime prints children first)."""
    parent = {}
    for i, (name, _, _, depth) in enumerate(rows):
        for later, _, _, d in rows[i + 1:]:
            if d < depth:
                parent[name] = later
                break
        else:
            parent[name] = "-: imported at top level or lazily inside a function"
    return parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=25, help="how many modules to list (default 25)")
    ap.add_argument("--runs", type=int, default=5, help="importtime runs; medians are shown (default 5)")
    ap.add_argument("--venv", default=str(REPO / ".venv"), help="virtualenv holding fetchdeliver")
    ap.add_argument("--plain", action="store_true",
                    help="run from a plain venv (fetchdeliver on a .pth path, no editable finder)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)

    top = Path(tempfile.mkdtemp(prefix="fd-importtime-"))
    try:
        python = str(Path(args.venv) / "bin" / "python")
        script = str(Path(args.venv) / "bin" / "fetchdeliver")
        if args.plain:
            made = make_plain_venv(python, top / "plainvenv")
            if made is None:
                print("importtime.py: could not build the plain venv", file=sys.stderr)
                return 2
            python, script = made
        for d in ("cache", "config", "home", "pycache"):
            (top / d).mkdir()
        rules = top / "rules.sieve"
        rules.write_text(render_sieve())
        # A message that goes to a folder, not INBOX, so fileinto is on the path.
        msgs = make_messages(40, 1)
        msg = top / "msg.eml"
        msg.write_bytes(next(m for m in msgs if m.kind == "work").raw)
        root = top / "Maildir"
        make_maildir(root)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(top / "home"), "LANG": "C.UTF-8",
               "XDG_CACHE_HOME": str(top / "cache"), "XDG_CONFIG_HOME": str(top / "config"),
               "PYTHONPYCACHEPREFIX": str(top / "pycache")}
        if subprocess.run([python, "-c", "import fetchdeliver"], env=env, capture_output=True).returncode:
            env["PYTHONPATH"] = str(REPO)
        cmd = [script, "deliver", "--maildir", str(root), "--rules", str(rules),
               "-f", "alice@corp.example.com", "-a", "me@example.org"]
        for _ in range(2):  # fill the Sieve cache and the bytecode cache
            with open(msg, "rb") as f:
                r = subprocess.run(cmd, stdin=f, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"importtime.py: `fetchdeliver deliver` exited {r.returncode}:\n{r.stderr}", file=sys.stderr)
                return 1
        runs = []
        for _ in range(max(1, args.runs)):
            with open(msg, "rb") as f:
                r = subprocess.run([python, "-X", "importtime", *cmd], stdin=f, env=env,
                                   capture_output=True, text=True)
            if r.returncode != 0:
                print(f"importtime.py: run failed ({r.returncode}):\n{r.stderr[-2000:]}", file=sys.stderr)
                return 1
            runs.append(parse(r.stderr))
        delivered = sum(len(os.listdir(root / f".{f}" / "new")) for f in FOLDERS) + len(os.listdir(root / "new"))

        selfs: dict[str, list[int]] = {}
        cums: dict[str, list[int]] = {}
        for rows in runs:
            for name, s, c, _ in rows:
                selfs.setdefault(name, []).append(s)
                cums.setdefault(name, []).append(c)
        parent = importers(runs[-1])
        totals = [sum(s for _, s, _, _ in rows) for rows in runs]
        fd_own = [sum(s for n, s, _, _ in rows if n.startswith("fetchdeliver")) for rows in runs]
        print(f"python -X importtime {' '.join(cmd[:1])} deliver ... (cached Sieve script; "
              f"median of {len(runs)} runs; {delivered} deliveries made)")
        print(f"interpreter: {python}")
        print(f"modules imported: {len(runs[-1])}; sum of self times: {statistics.median(totals) / 1000:.1f} ms, "
              f"of which fetchdeliver's own modules: {statistics.median(fd_own) / 1000:.1f} ms\n")
        order = sorted(cums, key=lambda n: statistics.median(cums[n]), reverse=True)
        print(f"{'cumulative ms':>14}{'self ms':>9}  module  (first imported by)")
        for name in order[:args.top]:
            print(f"{statistics.median(cums[name]) / 1000:>14.2f}{statistics.median(selfs[name]) / 1000:>9.2f}  "
                  f"{name}  ({parent.get(name, '?')})")
        heavy = [n for n in order if n.split(".")[0] in HEAVY]
        if heavy:
            print("\nfrom the do-not-import-on-the-MDA-path list (cumulative ms, first imported by):")
            for name in heavy:
                print(f"  {name:<28}{statistics.median(cums[name]) / 1000:>7.2f}  {parent.get(name, '?')}")
        return 0
    finally:
        if args.keep:
            print(f"\nkept: {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
