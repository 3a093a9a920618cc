#!/usr/bin/env python3
"""Sieve speed: a 200-rule script over many messages in one process, and `sieve test` start-up.

Two questions (issue #3):

1. Throughput: how many messages per second does the interpreter get through a
   200-rule script (the 20 rules of benchmarks/mda_pipe.py at the end, after 180
   generated rules that mostly do not match, so every message walks the whole
   script), in one process, the way LMTP and `fetch` use it?
2. Start-up: `fetchdeliver sieve test SCRIPT MESSAGE` against Pigeonhole's
   `sieve-test` on the same script and message, cold (no compiled script: our
   cache emptied, Pigeonhole's .svbin removed) and cached.

Every message's decision is also compared between the two implementations on a
sample (the folder the message would be filed into), so the figures are for
scripts that do the same thing.

    /work/main/.venv/bin/python benchmarks/sieve.py                  # 2000 messages, 30 start-up runs
    /work/main/.venv/bin/python benchmarks/sieve.py --count 200 --runs 10

Needs dovecot-sieve for the sieve-test rows (run as `nobody`: it refuses uid 0).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in benchmarks/
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mda_pipe import (ADDR, ALL, ANY, ENV, EXISTS, H, NOT, REPO, RULES, _sieve_str,  # noqa: E402
                      make_messages, sieve_test)

sys.path.insert(0, str(REPO))

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def generated_rules(n: int, seed: int) -> list[tuple[str, tuple]]:
    """n rules of the shapes real scripts have, on values that real mail rarely carries."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        w = f"{rng.choice(WORDS)}-{i}"
        shape = i % 8
        if shape == 0:
            cond = H("contains", ["Subject"], [f"[{w}]"])
        elif shape == 1:
            cond = ADDR("domain", [f"{w}.example"])
        elif shape == 2:
            cond = H("contains", ["List-Id"], [f"{w}.lists.example.org"])
        elif shape == 3:
            cond = ADDR("all", [f"{w}@example.net"])
        elif shape == 4:
            cond = H("matches", ["Subject"], [f"*{w}*"])
        elif shape == 5:
            cond = ALL(ADDR("domain", ["corp.example.com"]), H("contains", ["Subject"], [f"{w} status"]))
        elif shape == 6:
            cond = ANY(EXISTS([f"X-{w}"]), H("is", ["X-Mailer"], [w]))
        else:
            cond = ALL(ENV("domain", [f"{w}.example"]), NOT(H("contains", ["To"], ["bob"])))
        out.append((f"Gen{i % 40:02d}", cond))
    return out


def render(rules) -> str:
    lines = [f"# benchmark: {len(rules)} rules", 'require ["fileinto", "envelope"];', ""]
    for folder, cond in rules:
        lines.append(f"if {sieve_test(cond)} {{\n  fileinto {_sieve_str(folder)};\n  stop;\n}}")
    return "\n".join(lines) + "\n"


def throughput(script_path: Path, msgs, repeat: int) -> tuple[float, dict[int, str]]:
    """Messages per second through the compiled script, and each message's folder."""
    from fetchdeliver import sieve
    from fetchdeliver.message import Message

    script = sieve.compile_file(str(script_path), use_cache=False)
    best = 0.0
    folders: dict[int, str] = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        for m in msgs:
            message = Message(m.raw, sender=m.sender, recipients=[m.rcpt])
            result = sieve.run(script, message, sieve.SieveEnv(message))
            stores = [a for a in result.actions if a.type in ("keep", "fileinto")]
            folders[m.n] = stores[0].mailbox if stores else "-"
        rate = len(msgs) / (time.perf_counter() - t0)
        best = max(best, rate)
    return best, folders


def timed(argv, env, cwd=None, as_nobody=False) -> tuple[float, subprocess.CompletedProcess]:
    kw = {"user": 65534, "group": 65534, "extra_groups": []} if as_nobody and os.geteuid() == 0 else {}
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, **kw)
    return (time.perf_counter() - t0) * 1000.0, p


def pigeonhole_folder(stdout: str) -> str:
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("* store message in folder:"):
            return line.split(":", 1)[1].strip()
    return "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=2000, help="messages for the throughput run")
    ap.add_argument("--runs", type=int, default=30, help="start-up runs per row")
    ap.add_argument("--rules", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--venv", default=str(REPO / ".venv"))
    args = ap.parse_args(argv)

    top = Path(tempfile.mkdtemp(prefix="sieve-bench-"))
    os.chmod(top, 0o755)
    try:
        rules = generated_rules(args.rules - len(RULES), args.seed) + list(RULES)
        script = top / "rules.sieve"
        script.write_text(render(rules))
        msgs = make_messages(args.count, args.seed)
        for m in msgs:
            m.path = top / f"m{m.n}.eml"
            m.path.write_bytes(m.raw)
        os.chmod(script, 0o644)

        rate, ours = throughput(script, msgs, repeat=3)
        print(f"Sieve benchmark: {len(rules)} rules, {len(msgs)} messages, one process; "
              f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
        print(f"\nthroughput (in-process, best of 3): {rate:,.0f} messages/s "
              f"({1000.0 / rate:.3f} ms per message)")

        fd = str(Path(args.venv) / "bin" / "fetchdeliver")
        cache = top / "cache"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(top), "LANG": "C.UTF-8",
               "XDG_CACHE_HOME": str(cache), "PYTHONPYCACHEPREFIX": str(top / "pycache")}
        sample = msgs[: max(1, min(args.runs, len(msgs)))]
        rows = []
        cold, warm = [], []
        for m in sample:
            shutil.rmtree(cache, ignore_errors=True)
            ms, p = timed([fd, "sieve", "test", "--from", m.sender, "--to", m.rcpt, str(script), str(m.path)], env)
            assert p.returncode == 0, p.stderr
            cold.append(ms)
            ms, p = timed([fd, "sieve", "test", "--from", m.sender, "--to", m.rcpt, str(script), str(m.path)], env)
            warm.append(ms)
        rows.append(("fetchdeliver sieve test (cold)", cold))
        rows.append(("fetchdeliver sieve test (cached)", warm))

        st = shutil.which("sieve-test")
        agree = None
        if st is None:
            print("\nsieve-test not found (Debian package dovecot-sieve): no Pigeonhole rows")
        else:
            work = top / "ph"
            work.mkdir()
            (work / "Maildir").mkdir()
            os.chown(work, 65534, 65534) if os.geteuid() == 0 else None
            ph_script = work / "rules.sieve"
            shutil.copyfile(script, ph_script)
            os.chmod(ph_script, 0o644)
            if os.geteuid() == 0:
                os.chown(ph_script, 65534, 65534)
            svbin = work / "rules.svbin"
            ph_env = {"PATH": env["PATH"], "HOME": str(work), "LANG": "C.UTF-8"}
            pcold, pwarm = [], []
            agree = 0
            for m in sample:
                base = [st, "-c", "/dev/null", "-o", f"mail_location=maildir:{work / 'Maildir'}",
                        "-f", m.sender, "-r", m.rcpt, "-a", m.rcpt, str(ph_script), str(m.path)]
                if svbin.exists():
                    svbin.unlink()
                ms, p = timed(base, ph_env, cwd=work, as_nobody=True)
                assert p.returncode == 0, p.stderr
                pcold.append(ms)
                ms, p = timed(base, ph_env, cwd=work, as_nobody=True)
                pwarm.append(ms)
                agree += pigeonhole_folder(p.stdout.decode("utf-8", "replace")) == ours[m.n]
            rows.append(("sieve-test (cold, no .svbin)", pcold))
            rows.append(("sieve-test (cached .svbin)", pwarm))

        print(f"\nstart-up, one message per run ({len(sample)} runs each; wall ms, spawn included)")
        print(f"{'':40} {'median':>8} {'p90':>8} {'min':>8}")
        for label, data in rows:
            data = sorted(data)
            p90 = data[min(len(data) - 1, int(0.9 * len(data)))]
            print(f"{label:40} {statistics.median(data):8.2f} {p90:8.2f} {data[0]:8.2f}")
        med = {label: statistics.median(data) for label, data in rows}
        if st is not None:
            print(f"\nratio cold:   fetchdeliver / sieve-test = "
                  f"{med['fetchdeliver sieve test (cold)'] / med['sieve-test (cold, no .svbin)']:.2f}x")
            print(f"ratio cached: fetchdeliver / sieve-test = "
                  f"{med['fetchdeliver sieve test (cached)'] / med['sieve-test (cached .svbin)']:.2f}x")
            print(f"decisions agree on {agree}/{len(sample)} sampled messages")
            return 0 if agree == len(sample) else 1
        return 0
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
