#!/usr/bin/env python3
"""Quota benchmark: what the Maildir++ quota (`maildirsize`) costs a delivery, fetchdeliver vs dovecot-lda.

One fresh process per message, as an MTA runs an MDA, four ways in turn on every message (the
order rotates, so disk and CPU noise hit them alike): `fetchdeliver deliver` without and with a
`[quota]` table, and dovecot-lda without and with `quota = maildir` (same limit, `quota_grace = 0`),
each into its own Maildir. Prints the median and p90 wall time per delivery, the quota's added
cost for each tool, and fetchdeliver's time with quota as a ratio of dovecot-lda's with quota.
At the end each quota'd Maildir's `maildirsize` must add up to what is in the Maildir, and the
other program must read the same numbers from it (Dovecot reads ours, we read Dovecot's).

Run as root (dovecot-lda is started as nobody):
    .venv/bin/python benchmarks/quota.py [--count 300]
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
sys.path.insert(0, str(REPO))
DOVECOT_LDA = "/usr/lib/dovecot/dovecot-lda"
NOBODY = 65534
LIMIT = 1024 ** 3   # 1 GiB: never reached, so every delivery is checked and counted, none refused


def lda_conf(quota: bool) -> str:
    plugin = ("mail_plugins = quota\nplugin {\n  quota = maildir:User quota\n"
              f"  quota_rule = *:bytes={LIMIT}\n  quota_grace = 0\n}}\n") if quota else ""
    return ("protocols =\nssl = no\nlog_path = /dev/stderr\ninfo_log_path = /dev/null\n"
            "postmaster_address = postmaster@example.org\n" + plugin)


def message(i: int) -> bytes:
    body = "".join(f"line {j} of message {i}: the quick brown fox jumps over the lazy dog\n" for j in range(40))
    return (f"From: sender{i}@example.org\nTo: me@example.org\nSubject: quota benchmark {i}\n"
            f"Message-ID: <quota.{i}@example.org>\n\n{body}").encode()


def run(argv, raw: bytes, env, nobody: bool) -> float:
    kw = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if nobody else {}
    t0 = time.perf_counter()
    p = subprocess.run(argv, input=raw, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, **kw)
    dt = (time.perf_counter() - t0) * 1000
    if p.returncode != 0:
        raise SystemExit(f"{argv[0]} exited {p.returncode}: {p.stderr.decode(errors='replace')}")
    return dt


def maildir(root: Path, nobody: bool) -> None:
    for sub in ("", "new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        if nobody:
            os.chown(root / sub, NOBODY, NOBODY)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--venv", default=str(REPO / ".venv"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("quota.py: run as root (dovecot-lda runs as nobody)", file=sys.stderr)
        return 2
    fd_bin = os.path.join(args.venv, "bin", "fetchdeliver")
    top = Path(tempfile.mkdtemp(prefix="fd-quota-bench-"))
    os.chmod(top, 0o755)
    try:
        roots = {k: top / k for k in ("fd", "fd+quota", "lda", "lda+quota")}
        for k, r in roots.items():
            maildir(r, k.startswith("lda"))
        for k in ("lda", "lda+quota"):
            (top / f"{k}.conf").write_text(lda_conf(k == "lda+quota"))
        for k in ("fd", "fd+quota"):
            quota = f'\n[quota]\nstorage = {LIMIT}\n' if k == "fd+quota" else ""
            (top / f"{k}.toml").write_text(f'[delivery]\nmaildir = "{roots[k]}"\nstate_dir = "{top}/state-{k}"\n'
                                           f'cache_dir = "{top}/cache-{k}"\n{quota}')
        env = dict(os.environ, HOME=str(top))
        env.pop("PYTHONDONTWRITEBYTECODE", None)   # an MTA's environment: bytecode cached as usual
        argv = {"fd": [fd_bin, "deliver", "-c", str(top / "fd.toml")],
                "fd+quota": [fd_bin, "deliver", "-c", str(top / "fd+quota.toml")],
                "lda": [DOVECOT_LDA, "-c", str(top / "lda.conf"), "-o", f"mail_location=maildir:{roots['lda']}"],
                "lda+quota": [DOVECOT_LDA, "-c", str(top / "lda+quota.conf"),
                              "-o", f"mail_location=maildir:{roots['lda+quota']}"]}
        keys = list(argv)
        times: dict[str, list[float]] = {k: [] for k in keys}
        for k in keys:   # warm-up: page cache, bytecode
            run(argv[k], message(-1), env, k.startswith("lda"))
        for i in range(args.count):
            order = keys[i % 4:] + keys[:i % 4]
            for k in order:
                times[k].append(run(argv[k], message(i), env, k.startswith("lda")))

        def med(k):
            return statistics.median(times[k])

        def p90(k):
            return sorted(times[k])[int(len(times[k]) * 0.9)]

        print(f"{args.count} deliveries each, one process per message (ms per delivery):")
        for k in keys:
            print(f"  {k:<10} median {med(k):7.2f}   p90 {p90(k):7.2f}")
        print(f"quota's cost: fetchdeliver {med('fd+quota') - med('fd'):+.2f} ms, "
              f"dovecot-lda {med('lda+quota') - med('lda'):+.2f} ms per delivery")
        print(f"ratio fetchdeliver/dovecot-lda with quota: {med('fd+quota') / med('lda+quota'):.2f}x "
              f"(without: {med('fd') / med('lda'):.2f}x)")

        # In process, without fsync and process start: what the quota itself costs per delivery.
        from fetchdeliver.storage.maildir import MaildirStore
        from fetchdeliver.storage.quota import MaildirQuota as _MQ

        per = {}
        for label, quota in (("without", False), ("with", True)):
            store = MaildirStore(str(top / f"inproc-{label}"), fsync=False)
            if quota:
                store.quota = _MQ(store.root, lambda: (LIMIT, None))
            raws = [message(i) for i in range(2000)]
            t0 = time.perf_counter()
            for raw in raws:
                store.deliver(raw)
            per[label] = (time.perf_counter() - t0) / len(raws) * 1e6
        print(f"in process, no fsync, 2000 deliveries: {per['without']:.0f} us without quota, "
              f"{per['with']:.0f} us with (+{per['with'] - per['without']:.0f} us: one read of maildirsize "
              "for the check, one for the update, one appended line)")

        # Both files add up, and each program reads the other's the same way.
        from fetchdeliver.storage.quota import MaildirQuota, count_maildir, read_maildirsize

        for k in ("fd+quota", "lda+quota"):
            f = read_maildirsize(str(roots[k] / "maildirsize"))
            size, count, _ = count_maildir(str(roots[k]))
            ok = f is not None and (f.bytes, f.messages) == (size, count) and f.limits == (LIMIT, None)
            ours = MaildirQuota(str(roots[k]), lambda: (LIMIT, None)).status()
            print(f"{k}: maildirsize {'agrees with' if ok else 'DIFFERS from'} the Maildir "
                  f"({count} messages, {size} bytes; we read {ours.messages}, {ours.bytes})")
            if not ok or (ours.bytes, ours.messages) != (size, count):
                return 1
        return 0
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
