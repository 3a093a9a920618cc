#!/usr/bin/env python3
"""[filter] benchmark: `fetchdeliver deliver` with `[filter] spamd` vs procmail piping through `spamc`.

Both ask the same spamd (started here on 127.0.0.1 from tests/integration/scanners.py, with the GTUBE
rule only, so the figure is the pipeline's cost, not SpamAssassin's rules) and both file spam into
Junk by the verdict: Sieve `spamtest` (no [sieve] settings) vs procmail `* ^X-Spam-Flag: YES`. One
fresh process per message, as an MTA runs an MDA; the tools take turns per message. The run fails
loudly when a message is lost or the two file it differently.

    /work/main/.venv/bin/python benchmarks/filter.py [--count 100] [--clamd]

Needs spamd (apt: spamd), spamc (apt: spamc), procmail; --clamd also runs clamd for both (procmail:
through `clamdscan`-less `socat`-free INSTREAM is not possible, so --clamd measures fetchdeliver only).
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

from scanners import GTUBE, Clamd, Spamd  # noqa: E402

# Reference: the same command and a one-rule Sieve script, without [filter] (everything to INBOX, not
# compared): the difference to the first row is what the [filter] step costs.
REFERENCE = "fetchdeliver (no filter)"


def messages(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        body = (b"Hello,\n\n" + b"Some ordinary text about the meeting on Tuesday.\n" * (5 + i % 40))
        if i % 4 == 0:
            body += GTUBE + b"\n"
        out.append(b"From: sender%d@example.org\nTo: me@example.org\nSubject: message %d\n"
                   b"Message-ID: <%d@bench.example>\n\n" % (i, i, i) + body)
    return out


def folder_of(root: Path, n: int) -> str:
    needle = b"Message-ID: <%d@bench.example>" % n
    found = []
    for sub in ("", ".Junk"):
        d = root / sub / "new" if sub else root / "new"
        if d.is_dir():
            for f in d.iterdir():
                if needle in f.read_bytes():
                    found.append(sub.lstrip(".") or "INBOX")
    return ",".join(found) or "LOST"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--clamd", action="store_true", help="add clamd to fetchdeliver's [filter] (a third row)")
    args = ap.parse_args()
    for exe in ("spamc", "procmail"):
        if shutil.which(exe) is None:
            print(f"filter.py: {exe} is not installed", file=sys.stderr)
            return 2
    fd_bin = str(Path(sys.executable).parent / "fetchdeliver")
    top = Path(tempfile.mkdtemp(prefix="fd-filter-bench-"))
    spamd = Spamd()
    clamd = Clamd() if args.clamd else None
    try:
        host, port = spamd.address.split(":")
        sieve = top / "rules.sieve"
        sieve.write_text('require ["spamtest", "fileinto", "relational", "comparator-i;ascii-numeric"];\n'
                         'if spamtest :value "ge" :comparator "i;ascii-numeric" "6" { fileinto "Junk"; }\n')
        plain_sieve = top / "plain.sieve"  # the reference's: same size of work, no spamtest
        plain_sieve.write_text('require ["fileinto"];\nif header :is "X-Spam-Flag" "YES" { fileinto "Junk"; }\n')
        rc = top / "procmailrc"
        rc.write_text(f"SHELL=/bin/sh\nMAILDIR=$MD\nDEFAULT=$MD/\nLOGFILE=\n\n"
                      f":0fw\n| spamc -d {host} -p {port}\n\n:0\n* ^X-Spam-Flag: YES\n$MD/.Junk/\n")
        tools = {"fetchdeliver": top / "fd", "procmail+spamc": top / "pm", REFERENCE: top / "ref"}
        configs = {"fetchdeliver": f'[filter]\nspamd = "{spamd.address}"\n', REFERENCE: ""}
        if clamd:
            tools["fetchdeliver+clamd"] = top / "fdc"
            configs["fetchdeliver+clamd"] = configs["fetchdeliver"] + f'clamd = "{clamd.socket}"\n'
        for name, root in tools.items():
            for sub in ("", ".Junk"):
                for leaf in ("new", "cur", "tmp"):
                    (root / sub / leaf).mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, XDG_CACHE_HOME=str(top / "cache"), XDG_STATE_HOME=str(top / "state"))

        def argv(name: str) -> list[str]:
            root = tools[name]
            if name == "procmail+spamc":
                return ["procmail", "-f", "sender@example.org", str(rc), f"MD={root}"]
            cfg = top / f"{''.join(ch if ch.isalnum() else '_' for ch in name)}.toml"
            if not cfg.exists():
                rules = f'rules = "{sieve if name != REFERENCE else plain_sieve}"\n'
                cfg.write_text(configs[name] + f'[delivery]\nmaildir = "{root}"\n{rules}')
            return [fd_bin, "deliver", "-c", str(cfg), "-f", "sender@example.org"]

        msgs = messages(args.count)
        times: dict[str, list[float]] = {t: [] for t in tools}
        names = list(tools)
        for warm in msgs[:3]:  # caches: bytecode, compiled Sieve, config, spamd's child
            for name in names:
                subprocess.run(argv(name), input=warm, check=True, capture_output=True, env=env)
        for name in names:
            shutil.rmtree(tools[name])
            for sub in ("", ".Junk"):
                for leaf in ("new", "cur", "tmp"):
                    (tools[name] / sub / leaf).mkdir(parents=True, exist_ok=True)
        for i, raw in enumerate(msgs):
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                t0 = time.perf_counter()
                r = subprocess.run(argv(name), input=raw, capture_output=True, env=env)
                times[name].append(time.perf_counter() - t0)
                if r.returncode != 0:
                    print(f"{name} exited {r.returncode} on message {i}: {r.stderr.decode()[-500:]}",
                          file=sys.stderr)
                    return 1
        bad = []
        for i in range(len(msgs)):
            where = {name: folder_of(tools[name], i) for name in names if name != REFERENCE}
            expected = "Junk" if i % 4 == 0 else "INBOX"
            if any(w != expected for w in where.values()):
                bad.append((i, where))
        print(f"{len(msgs)} messages (a quarter GTUBE spam), one process each, same spamd")
        base = statistics.median(times["procmail+spamc"])
        for name in names:
            med = statistics.median(times[name])
            print(f"  {name:26s} median {med * 1000:7.1f} ms  mean {statistics.mean(times[name]) * 1000:7.1f} ms"
                  f"  ratio to procmail+spamc {med / base:5.2f}")
        cost = statistics.median(times["fetchdeliver"]) - statistics.median(times[REFERENCE])
        print(f"  the [filter] step itself (spamd round trip + Sieve spamtest): about {cost * 1000:.1f} ms a message (the difference of two medians: noisy on a busy machine)")
        if bad:
            print(f"ROUTING DIFFERS on {len(bad)} messages, e.g. {bad[:3]}", file=sys.stderr)
            return 1
        print("routing: identical (spam in Junk, the rest in INBOX) for every tool")
        return 0
    finally:
        spamd.stop()
        if clamd:
            clamd.stop()
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
