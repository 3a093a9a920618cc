"""Polling an unchanged folder: N messages already fetched, then each tool polls again and finds nothing
new. fetchdeliver with CONDSTORE (its SELECT is the folder's only command) against mbsync and getmail6,
which remember what they fetched but list the whole folder at every poll. Same Dovecot, same run; prints
the median of a few polls and our ratio to each.

    python benchmarks/poll.py [--messages 10000] [--polls 5] [--getmail /path/to/venv/bin/getmail]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fetch as bench  # noqa: E402  (benchmarks/fetch.py: messages, runners, Dovecot)


def run_getmail_new_only(dc, work, exe):
    """getmail6 remembering what it fetched (read_all = false: its oldmail file), like a poller."""
    md = os.path.join(work, "Mail")
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    user_line = ""
    if os.geteuid() == 0:  # getmail refuses to deliver as root: deliver as nobody
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chmod(work, 0o755)
        for dirpath, _d, _f in os.walk(md):
            os.chown(dirpath, nobody.pw_uid, nobody.pw_gid)
        user_line = "user = nobody\n"
    rc = os.path.join(work, "getmailrc")
    with open(rc, "w") as f:
        f.write(f"[retriever]\ntype = SimpleIMAPSSLRetriever\nserver = 127.0.0.1\nport = {dc.port('imaps')}\n"
                f"username = alice\npassword = secret\nca_certs = {dc.ca_file}\nmailboxes = (\"INBOX\",)\n\n"
                f"[destination]\ntype = Maildir\npath = {md}/\n{user_line}\n"
                "[options]\nread_all = false\ndelete = false\nverbose = 0\n")
    return bench.timed([exe, "--rcfile", rc, "--getmaildir", work]), bench.count_maildir(md)


def polls(fn, dc, work, n: int, expected: int) -> list[float]:
    took, got = fn(dc, work)           # the first run fetches everything (not timed for the ratio)
    if got != expected:
        print(f"warning: first run delivered {got} of {expected}")
    out = []
    for _ in range(n):
        t, got2 = fn(dc, work)
        if got2 != expected:
            print(f"warning: a poll delivered again ({got2} messages in the Maildir)")
        out.append(t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--polls", type=int, default=5)
    ap.add_argument("--getmail", default=shutil.which("getmail") or "/tmp/getmail-venv/bin/getmail")
    args = ap.parse_args()
    msgs = bench.messages(args.messages, random.Random(7))
    runs = {"fetchdeliver (CONDSTORE)": lambda dc, w: bench.run_fetchdeliver(dc, w, "imap", False)}
    if shutil.which("mbsync"):
        runs["mbsync"] = lambda dc, w: bench.run_mbsync(dc, w, "imap", False)
    else:
        print("skipped mbsync: not installed (apt-get install isync)")
    if os.path.exists(args.getmail):
        runs["getmail6"] = lambda dc, w: run_getmail_new_only(dc, w, args.getmail)
    else:
        print("skipped getmail6: not found (pip install getmail6; --getmail PATH)")
    medians: dict[str, float] = {}
    with bench.Dovecot.running({"alice": "secret"}) as dc:
        dc.append_many("alice", msgs)
        c = dc.imap("alice")  # Dovecot indexes the folder once, outside the timings
        c.select_folder("INBOX", readonly=True)
        c.search("ALL")
        c.logout()
        for name, fn in runs.items():
            work = tempfile.mkdtemp(prefix="fd-bench-poll-")
            try:
                times = polls(fn, dc, work, args.polls, args.messages)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            medians[name] = statistics.median(times)
            print(f"{name:28s} poll of an unchanged {args.messages}-message folder: median "
                  f"{medians[name]:.3f} s ({', '.join(f'{t:.3f}' for t in times)})", flush=True)
    ours = medians["fetchdeliver (CONDSTORE)"]
    for name, t in medians.items():
        if name != "fetchdeliver (CONDSTORE)":
            print(f"fetchdeliver vs {name}: {ours / t:.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
