"""JMAP fetch speed: the same messages in a real Cyrus IMAP 3.6 (tests/integration/cyrus.py), fetched
into a fresh local Maildir by fetchdeliver over JMAP, by fetchdeliver over IMAP, and by the IMAP peers
(mbsync; fetchmail + procmail as MDA) from the same server, in one run, over plain TCP on 127.0.0.1.
Prints wall seconds and the JMAP fetch's ratio to each.

    python benchmarks/fetch_jmap.py [--messages 1000]

No peer fetches over JMAP (fetchmail, getmail6, mbsync speak POP3/IMAP): the comparison is what a
user gets switching from them to a JMAP account on the same server. Tools that are not installed
are skipped with a note. Run as root (Cyrus runs as the cyrus user) or as a user that owns the files.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, ROOT)

from cyrus import Cyrus  # noqa: E402
from fetch import count_maildir, fetchmail_procmail, messages, timed  # noqa: E402

USER, PASSWORD = "alice", "secret"


def fetchdeliver_cmd() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "fetchdeliver")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "fetchdeliver"]


def run_fetchdeliver(cy: Cyrus, work: str, proto: str) -> tuple[float, int]:
    md = os.path.join(work, "Mail")
    cfg = os.path.join(work, "config.toml")
    port = cy.port("http" if proto == "jmap" else "imap")
    with open(cfg, "w") as f:
        f.write(f'[delivery]\nmaildir = "{md}"\nstate_dir = "{work}/state"\n\n'
                f'[[account]]\nname = "bench"\nprotocol = "{proto}"\nhost = "127.0.0.1"\nport = {port}\n'
                f'tls = "none"\nuser = "{USER}"\npassword = "{PASSWORD}"\n')
    env = dict(os.environ, PYTHONPATH=ROOT, XDG_CACHE_HOME=os.path.join(work, "cache"))
    return timed(fetchdeliver_cmd() + ["fetch", "-c", cfg], env=env), count_maildir(md)


def run_mbsync(cy: Cyrus, work: str, proto: str) -> tuple[float, int]:
    md = os.path.join(work, "Mail") + "/"
    rc = os.path.join(work, "mbsyncrc")
    with open(rc, "w") as f:
        f.write(f"IMAPAccount bench\nHost 127.0.0.1\nPort {cy.port('imap')}\nUser {USER}\nPass {PASSWORD}\n"
                "SSLType None\nAuthMechs LOGIN PLAIN\n\nIMAPStore remote\nAccount bench\n\n"
                f"MaildirStore local\nPath {md}\nInbox {md}INBOX\n\n"
                "Channel bench\nFar :remote:\nNear :local:\nPatterns INBOX\nSync Pull\nCreate Near\n"
                f"SyncState {work}/mbsync-state/\n")
    os.makedirs(f"{work}/mbsync-state", exist_ok=True)
    os.makedirs(md, exist_ok=True)
    return timed(["mbsync", "-q", "-c", rc, "bench"]), count_maildir(md)


def run_fetchmail(cy: Cyrus, work: str, proto: str) -> tuple[float, int]:
    argv, env, md = fetchmail_procmail(
        work, f"poll 127.0.0.1 protocol IMAP port {cy.port('imap')}\n"
              f"  user {USER} password {PASSWORD} sslproto ''\n", "keep fetchall")
    return timed(argv, env=env), count_maildir(md)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    args = ap.parse_args()
    msgs = messages(args.messages, random.Random(42))
    results: dict[str, float] = {}
    with Cyrus.running({USER: PASSWORD}) as cy:
        t = time.perf_counter()
        cy.append_many(USER, msgs)
        print(f"({args.messages} messages put into Cyrus in {time.perf_counter() - t:.1f} s)")
        runs = [("fetchdeliver jmap", run_fetchdeliver, "jmap"), ("fetchdeliver imap", run_fetchdeliver, "imap")]
        if shutil.which("mbsync"):
            runs.append(("mbsync imap", run_mbsync, "imap"))
        else:
            print("skipped mbsync: not installed (apt-get install isync)")
        if shutil.which("fetchmail") and shutil.which("procmail"):
            runs.append(("fetchmail+procmail imap", run_fetchmail, "imap"))
        else:
            print("skipped fetchmail: fetchmail or procmail not installed")
        for name, fn, proto in runs:
            work = tempfile.mkdtemp(prefix="fd-bench-")
            try:
                took, n = fn(cy, work, proto)
            except (RuntimeError, subprocess.SubprocessError) as e:
                print(f"{name:28s} failed: {e}")
                continue
            finally:
                shutil.rmtree(work, ignore_errors=True)
            if n != args.messages:
                print(f"warning: {name} delivered {n} of {args.messages} messages")
            results[name] = took
            print(f"{name:28s} {took:7.2f} s", flush=True)
    print()
    ours = results.get("fetchdeliver jmap")
    if ours is not None:
        for name, took in results.items():
            if name != "fetchdeliver jmap":
                print(f"fetchdeliver jmap vs {name}: {ours / took:.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
