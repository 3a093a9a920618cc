"""Polling an unchanged folder: N messages already fetched, then each tool polls again and finds nothing
new. fetchdeliver with QRESYNC (CONDSTORE where the server lacks it: its SELECT is the folder's only
command) against fetchmail, getmail6 and mbsync, which find out what is new with a command whose answer
or work grows with the folder (fetchmail: `SEARCH UNSEEN`; getmail6: every UID; mbsync: every message's
flags). Same Dovecot, same run; prints the median of a few polls and our ratio to each, both for
`fetchdeliver fetch` (a process per poll, as cron runs it) and for the daemon's poll (in a running process).

    python benchmarks/poll.py [--messages 100000] [--polls 5] [--tools fetchdeliver,fetchmail,getmail6,mbsync]
                              [--getmail /path/to/getmail]

Each tool starts from "everything already fetched", reached the cheapest way it allows (none of it timed):
fetchdeliver with `initial = "new-only"` (its state records every UID and the sync point, as after
fetching them all), fetchmail from every message \\Seen (its record with `keep` and without `fetchall`;
the messages are \\Seen from the start, an old read mailbox),
getmail6 from its oldmail file listing every UID, mbsync from a first full sync.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fetch as bench  # noqa: E402  (benchmarks/fetch.py: runners, Dovecot)

OURS = "fetchdeliver fetch"            # a process per poll (cron, a shell loop)
OURS_DAEMON = "fetchdeliver daemon"    # the same poll inside a running process


def small_messages(n: int) -> list[bytes]:
    """Small distinct messages: a no-news poll never reads them, only their number matters."""
    return [(f"From: Sender {i} <s{i}@example.org>\r\nTo: alice@example.com\r\nSubject: poll {i}\r\n"
             f"Message-ID: <poll.{i}@example.org>\r\nDate: Mon, 24 Nov 2025 10:00:00 +0000\r\n\r\n"
             f"body {i}\r\n").encode() for i in range(n)]


def fetchdeliver_config(dc, work: str) -> str:
    cfg = os.path.join(work, "config.toml")
    with open(cfg, "w") as f:
        f.write(f'[delivery]\nmaildir = "{work}/Mail"\nstate_dir = "{work}/state"\n\n'
                f'[[account]]\nname = "bench"\nprotocol = "imap"\nhost = "127.0.0.1"\nport = {dc.port("imaps")}\n'
                f'tls = "implicit"\nca_file = "{dc.ca_file}"\nuser = "alice"\npassword = "secret"\n'
                'initial = "new-only"\n')
    return cfg


def run_fetchdeliver(dc, work):
    cfg = os.path.join(work, "config.toml")
    if not os.path.exists(cfg):
        fetchdeliver_config(dc, work)
    exe = os.path.join(os.path.dirname(sys.executable), "fetchdeliver")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "fetchdeliver"]
    env = dict(os.environ, PYTHONPATH=bench.ROOT, XDG_CACHE_HOME=os.path.join(work, "cache"))
    return bench.timed(cmd + ["fetch", "-c", cfg], env=env), bench.count_maildir(os.path.join(work, "Mail"))


class InProcessPoll:
    """fetchdeliver's poll as the daemon makes it every `poll`: the process is running (imports done,
    state database open, rules compiled), so a poll is connect, TLS, login, ENABLE, the SELECT, LOGOUT.
    The first call is `fetchdeliver fetch` in its own process (not timed)."""

    def __init__(self) -> None:
        self.state = None
        self.contexts: dict = {}

    def __call__(self, dc, work):
        import io

        from fetchdeliver.sources.accounts import from_settings
        from fetchdeliver.config import Settings, load
        from fetchdeliver.sources.runner import AccountRun
        from fetchdeliver.state import open_state

        if self.state is None:
            took, got = run_fetchdeliver(dc, work)
            cfg = os.path.join(work, "config.toml")
            self.settings = Settings(load(cfg), cfg)
            self.account = from_settings(self.settings)[0]
            self.state = open_state(self.settings)
            return took, got
        out = io.StringIO()
        t = time.perf_counter()
        ok = AccountRun(self.account, self.settings, self.state, out=out, err=out, contexts=self.contexts).run()
        took = time.perf_counter() - t
        if not ok:
            raise RuntimeError(f"in-process poll failed: {out.getvalue()}")
        return took, bench.count_maildir(os.path.join(work, "Mail"))

    def close(self) -> None:
        if self.state is not None:
            self.state.close()
            self.state = None


def run_fetchmail_new_only(dc, work):
    """fetchmail with `keep` and without `fetchall`: it fetches unseen messages and marks them \\Seen, so
    what it already fetched is the \\Seen flag on the server; each poll is a `SEARCH UNSEEN`."""
    argv, env, md = bench.fetchmail_procmail(
        work, f"poll localhost protocol IMAP port {dc.port('imaps')}\n"
              f"  user alice password secret ssl sslcertck sslcertfile {dc.ca_file}\n", "keep")
    return bench.timed(argv, env=env), bench.count_maildir(md)


def run_getmail_new_only(dc, work, exe):
    """getmail6 remembering what it fetched (read_all = false: its oldmail file), like a poller."""
    md = os.path.join(work, "Mail")
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    rc = os.path.join(work, "getmailrc")
    ca = os.path.join(work, "ca.pem")        # readable by nobody, wherever the fixture keeps its CA
    shutil.copyfile(dc.ca_file, ca)
    with open(rc, "w") as f:
        f.write(f"[retriever]\ntype = SimpleIMAPSSLRetriever\nserver = 127.0.0.1\nport = {dc.port('imaps')}\n"
                f"username = alice\npassword = secret\nca_certs = {ca}\nmailboxes = (\"INBOX\",)\n\n"
                f"[destination]\ntype = Maildir\npath = {md}/\n\n"
                "[options]\nread_all = false\ndelete = false\nverbose = 0\n")
    argv = [exe, "--rcfile", rc, "--getmaildir", work]
    if os.geteuid() == 0:  # getmail refuses to deliver as root: run it as nobody
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chmod(work, 0o755)
        for dirpath, _d, files in os.walk(work):
            os.chown(dirpath, nobody.pw_uid, nobody.pw_gid)
            for name in files:
                os.chown(os.path.join(dirpath, name), nobody.pw_uid, nobody.pw_gid)
        argv = ["runuser", "-u", "nobody", "--"] + argv
    return bench.timed(argv), bench.count_maildir(md)


def write_getmail_oldmail(dc, work) -> None:
    """getmail6's record after a first run: its oldmail file with every UID (`UIDVALIDITY/UID\\0TIME`
    lines). A real first run forks a child per delivery (~50 ms each here) and its SIGCHLD wait loses
    children under load ("waiting child pid N timed out")."""
    c = dc.imap("alice")
    info = c.select_folder("INBOX", readonly=True)
    uids = c.search("ALL")
    c.logout()
    uv, now = int(info[b"UIDVALIDITY"]), int(time.time())
    with open(os.path.join(work, f"oldmail-127.0.0.1-{dc.port('imaps')}-alice-INBOX"), "w") as f:
        f.writelines(f"{uv}/{uid}\0{now}\n" for uid in uids)


def polls(fn, dc, work, n: int, expected: int) -> list[float]:
    _took, got = fn(dc, work)           # reaches "everything fetched" (not timed)
    if got != expected:
        print(f"warning: first run delivered {got} messages, expected {expected}")
    out = []
    for _ in range(n):
        t, got2 = fn(dc, work)
        if got2 != expected:
            print(f"warning: a poll delivered again ({got2} messages in the Maildir)")
        out.append(t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100000)
    ap.add_argument("--polls", type=int, default=5)
    ap.add_argument("--tools", default="fetchdeliver,fetchmail,getmail6,mbsync",
                    help="comma-separated: fetchdeliver, fetchmail, getmail6, mbsync")
    ap.add_argument("--getmail", default=shutil.which("getmail") or "/tmp/getmail-venv/bin/getmail")
    args = ap.parse_args()
    # Bytecode caches as installed programs have them (a PYTHONDONTWRITEBYTECODE in the caller's environment
    # would make every Python run recompile), kept out of the repository.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    pycache = tempfile.mkdtemp(prefix="fd-bench-pycache-")
    os.environ["PYTHONPYCACHEPREFIX"] = pycache
    tools = {t.strip() for t in args.tools.split(",") if t.strip()}
    in_process = InProcessPoll()
    runs: dict = {OURS: run_fetchdeliver, OURS_DAEMON: in_process}
    if "fetchmail" in tools:
        if shutil.which("fetchmail") and os.path.exists("/usr/bin/procmail"):
            runs["fetchmail"] = run_fetchmail_new_only
        else:
            print("skipped fetchmail: not installed (apt-get install fetchmail procmail)")
    if "getmail6" in tools:
        if os.path.exists(args.getmail):
            runs["getmail6"] = lambda dc, w: run_getmail_new_only(dc, w, args.getmail)
        else:
            print("skipped getmail6: not found (apt-get install getmail6; --getmail PATH)")
    if "mbsync" in tools:
        if shutil.which("mbsync"):
            runs["mbsync"] = lambda dc, w: bench.run_mbsync(dc, w, "imap", False)
        else:
            print("skipped mbsync: not installed (apt-get install isync)")
    medians: dict[str, float] = {}
    try:
        with bench.Dovecot.running({"alice": "secret"}) as dc:
            # Every message \Seen from the start (an old, read mailbox): fetchmail's record of what it fetched
            # is in place without a flag change that Dovecot's index would still be digesting during its polls.
            for raw in small_messages(args.messages):
                dc.append("alice", raw, flags="S")
            c = dc.imap("alice")  # Dovecot indexes the folder once, outside the timings
            c.select_folder("INBOX", readonly=True)
            c.search("ALL")
            c.logout()
            for name, fn in runs.items():
                work = tempfile.mkdtemp(prefix="fd-bench-poll-")
                expected = args.messages if name == "mbsync" else 0
                if name == "getmail6":
                    write_getmail_oldmail(dc, work)
                try:
                    times = polls(fn, dc, work, args.polls, expected)
                finally:
                    in_process.close()
                    shutil.rmtree(work, ignore_errors=True)
                medians[name] = statistics.median(times)
                print(f"{name:20s} poll of an unchanged {args.messages}-message folder: median "
                      f"{medians[name]:.3f} s ({', '.join(f'{t:.3f}' for t in times)})", flush=True)
    finally:
        shutil.rmtree(pycache, ignore_errors=True)
    for mine in (OURS, OURS_DAEMON):
        for name, t in medians.items():
            if name not in (OURS, OURS_DAEMON):
                print(f"{mine} vs {name}: {medians[mine] / t:.3g}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
