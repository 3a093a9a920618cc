"""Fetch speed: the same messages in a real Dovecot, fetched into a fresh local Maildir by
fetchdeliver (with and without a 20-rule Sieve script), mbsync, fetchmail (+ procmail as MDA) and
getmail6, over implicit TLS, in one run. Prints wall seconds and our ratio to each.

    python benchmarks/fetch.py [--messages 2000] [--getmail /path/to/venv/bin/getmail]

Tools that are not installed are skipped with a note (apt: fetchmail isync procmail; getmail6 from
pip, best in its own venv). Run as root or as a user that can start Dovecot.
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
sys.path.insert(0, ROOT)

from dovecot import Dovecot  # noqa: E402

RULES_20 = "\n".join(
    ['require ["fileinto", "imap4flags", "envelope"];']
    + [f'if header :contains "subject" "project-{i}" {{ fileinto "Projects/p{i}"; stop; }}' for i in range(10)]
    + [f'if address :domain "from" "list{i}.example.net" {{ fileinto "Lists/l{i}"; stop; }}' for i in range(8)]
    + ['if header :contains "x-spam-flag" "YES" { fileinto "Junk"; stop; }',
       'if header :matches "subject" "*[urgent]*" { addflag "\\\\Flagged"; }']) + "\n"


def messages(n: int, rng: random.Random) -> list[bytes]:
    out = []
    for i in range(n):
        lines = [f"From: Sender {i} <s{i}@example.org>", "To: alice@example.com",
                 f"Subject: benchmark message {i}", f"Message-ID: <bench.{i}@example.org>",
                 "Date: Mon, 24 Nov 2025 10:00:00 +0000", ""]
        body = [f"line {k} of message {i} " + "x" * rng.randint(10, 70) for k in range(rng.randint(20, 200))]
        out.append(("\r\n".join(lines + body) + "\r\n").encode())
    return out


def count_maildir(path: str) -> int:
    n = 0
    for dirpath, _d, files in os.walk(path):
        if os.path.basename(dirpath) in ("new", "cur"):
            n += len(files)
    return n


def timed(argv: list[str], env=None, cwd=None) -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    took = time.perf_counter() - t
    if r.returncode not in (0, 1) or (r.returncode == 1 and argv[0] != "fetchmail"):  # fetchmail: 1 = no mail
        raise RuntimeError(f"{argv[0]} failed ({r.returncode}): {r.stderr[-2000:]}")
    return took


def run_fetchdeliver(dc, work, proto, rules: bool) -> float:
    md = os.path.join(work, "Mail")
    cfg = os.path.join(work, "config.toml")
    rules_line = ""
    if rules:
        with open(os.path.join(work, "rules.sieve"), "w") as f:
            f.write(RULES_20)
        rules_line = f'rules = "{work}/rules.sieve"\n'
    port = dc.port("imaps" if proto == "imap" else "pop3s")
    with open(cfg, "w") as f:
        f.write(f'[delivery]\nmaildir = "{md}"\nstate_dir = "{work}/state"\n{rules_line}\n'
                f'[[account]]\nname = "bench"\nprotocol = "{proto}"\nhost = "127.0.0.1"\nport = {port}\n'
                f'tls = "implicit"\nca_file = "{dc.ca_file}"\nuser = "alice"\npassword = "secret"\n')
    exe = os.path.join(os.path.dirname(sys.executable), "fetchdeliver")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "fetchdeliver"]
    env = dict(os.environ, PYTHONPATH=ROOT, XDG_CACHE_HOME=os.path.join(work, "cache"))
    took = timed(cmd + ["fetch", "-c", cfg], env=env)
    return took, count_maildir(md)


def run_fetchdeliver_postgres(dc, work, proto, rules: bool, pg) -> float:
    """[storage] url: mail, fetch state and duplicate memory in PostgreSQL (a fresh database)."""
    url = pg.new_database()
    import psycopg

    from fetchdeliver.storage import pgschema

    with psycopg.connect(url, autocommit=True) as conn:
        pgschema.migrate(conn)
    cfg = os.path.join(work, "config.toml")
    port = dc.port("imaps" if proto == "imap" else "pop3s")
    with open(cfg, "w") as f:
        f.write(f'[delivery]\nstate_dir = "{work}/state"\n\n[storage]\nurl = "{url}"\nuser = "alice"\n\n'
                f'[[account]]\nname = "bench"\nprotocol = "{proto}"\nhost = "127.0.0.1"\nport = {port}\n'
                f'tls = "implicit"\nca_file = "{dc.ca_file}"\nuser = "alice"\npassword = "secret"\n')
    exe = os.path.join(os.path.dirname(sys.executable), "fetchdeliver")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "fetchdeliver"]
    env = dict(os.environ, PYTHONPATH=ROOT, XDG_CACHE_HOME=os.path.join(work, "cache"))
    took = timed(cmd + ["fetch", "-c", cfg], env=env)
    with psycopg.connect(url) as conn:
        n = conn.execute("SELECT count(*) FROM fd_message").fetchone()[0]
    return took, n


def run_mbsync(dc, work, proto, rules):
    md = os.path.join(work, "Mail") + "/"
    rc = os.path.join(work, "mbsyncrc")
    with open(rc, "w") as f:
        f.write(f"IMAPAccount bench\nHost 127.0.0.1\nPort {dc.port('imaps')}\nUser alice\nPass secret\n"
                f"SSLType IMAPS\nCertificateFile {dc.ca_file}\n\n"
                "IMAPStore remote\nAccount bench\n\n"
                f"MaildirStore local\nPath {md}\nInbox {md}INBOX\n\n"
                "Channel bench\nFar :remote:\nNear :local:\nPatterns INBOX\nSync Pull\nCreate Near\n"
                f"SyncState {work}/mbsync-state/\n")
    os.makedirs(f"{work}/mbsync-state", exist_ok=True)
    os.makedirs(md, exist_ok=True)
    return timed(["mbsync", "-q", "-c", rc, "bench"]), count_maildir(md)


def fetchmail_procmail(work: str, poll: str, keep: str) -> tuple[list[str], dict, str]:
    """fetchmail delivering through procmail into a Maildir under `work`: (argv, env, maildir).

    `poll` is the fetchmailrc's server and user lines, `keep` its keep options ("keep", "keep fetchall").
    """
    md = os.path.join(work, "Mail")
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    procmailrc = os.path.join(work, "procmailrc")
    with open(procmailrc, "w") as f:
        f.write(f"DEFAULT={md}/\n")
    rc = os.path.join(work, "fetchmailrc")
    with open(rc, "w") as f:
        f.write(f"{poll}  {keep} mda \"/usr/bin/procmail -m {procmailrc}\"\n")
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=work, FETCHMAILHOME=work)
    # As root fetchmail locks /run/fetchmail.pid whatever FETCHMAILHOME says: its own pid file here.
    argv = ["fetchmail", "-f", rc, "--nodetach", "--silent", "--pidfile", os.path.join(work, "fetchmail.pid")]
    return argv, env, md


def run_fetchmail(dc, work, proto, rules):
    port = dc.port("imaps" if proto == "imap" else "pop3s")
    argv, env, md = fetchmail_procmail(
        work, f"poll localhost protocol {proto.upper()} port {port}\n"
              f"  user alice password secret ssl sslcertck sslcertfile {dc.ca_file}\n", "keep fetchall")
    return timed(argv, env=env), count_maildir(md)


def run_getmail(dc, work, proto, rules, exe):
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
    kind = "SimpleIMAPSSLRetriever" if proto == "imap" else "SimplePOP3SSLRetriever"
    port = dc.port("imaps" if proto == "imap" else "pop3s")
    rc = os.path.join(work, "getmailrc")
    with open(rc, "w") as f:
        f.write(f"[retriever]\ntype = {kind}\nserver = 127.0.0.1\nport = {port}\nusername = alice\n"
                f"password = secret\nca_certs = {dc.ca_file}\n"
                + ("mailboxes = (\"INBOX\",)\n" if proto == "imap" else "")
                + f"\n[destination]\ntype = Maildir\npath = {md}/\n" + user_line + "\n"
                "[options]\nread_all = true\ndelete = false\nverbose = 0\n")
    return timed([exe, "--rcfile", rc, "--getmaildir", work]), count_maildir(md)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--getmail", default=shutil.which("getmail") or "/tmp/getmail-venv/bin/getmail")
    ap.add_argument("--postgres", action="store_true",
                    help="also fetch into PostgreSQL ([storage] url: mail and state there; starts PostgreSQL 15)")
    args = ap.parse_args()
    pg = None
    if args.postgres:
        from postgres_support import PostgresServer

        pg = PostgresServer().start()
    rng = random.Random(42)
    msgs = messages(args.messages, rng)
    results: dict[str, float] = {}
    with Dovecot.running({"alice": "secret"}) as dc:
        dc.append_many("alice", msgs)
        dc.contents("alice")  # let Dovecot index the folder once, outside the timings
        runs = [("fetchdeliver imap", run_fetchdeliver, "imap", False),
                ("fetchdeliver imap + 20 rules", run_fetchdeliver, "imap", True),
                ("fetchdeliver pop3", run_fetchdeliver, "pop3", False),
                ("fetchdeliver pop3 + 20 rules", run_fetchdeliver, "pop3", True)]
        if pg is not None:
            p = lambda dc, w, pr, r: run_fetchdeliver_postgres(dc, w, pr, r, pg)  # noqa: E731
            runs += [("fetchdeliver imap -> postgres", p, "imap", False),
                     ("fetchdeliver pop3 -> postgres", p, "pop3", False)]
        if shutil.which("mbsync"):
            runs.append(("mbsync imap", run_mbsync, "imap", False))
        else:
            print("skipped mbsync: not installed (apt-get install isync)")
        if shutil.which("fetchmail") and shutil.which("procmail"):
            runs += [("fetchmail+procmail imap", run_fetchmail, "imap", False),
                     ("fetchmail+procmail pop3", run_fetchmail, "pop3", False)]
        else:
            print("skipped fetchmail: fetchmail or procmail not installed")
        if os.path.exists(args.getmail):
            g = lambda dc, w, p, r: run_getmail(dc, w, p, r, args.getmail)  # noqa: E731
            runs += [("getmail6 imap", g, "imap", False), ("getmail6 pop3", g, "pop3", False)]
        else:
            print("skipped getmail6: not found (pip install getmail6; --getmail PATH)")
        for name, fn, proto, rules in runs:
            work = tempfile.mkdtemp(prefix="fd-bench-")
            try:
                took, n = fn(dc, work, proto, rules)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            if n != args.messages:
                print(f"warning: {name} delivered {n} of {args.messages} messages")
            results[name] = took
            print(f"{name:32s} {took:7.2f} s", flush=True)
    if pg is not None:
        pg.cleanup()
    print()
    for ours in ("fetchdeliver imap + 20 rules", "fetchdeliver pop3 + 20 rules"):
        proto = ours.split()[1]
        for name, took in results.items():
            if not name.startswith("fetchdeliver") and proto in name:
                print(f"{ours} vs {name}: {results[ours] / took:.2f}x the time")
        if proto == "imap" and "mbsync imap" in results:
            print(f"{ours} vs mbsync: goal <= 2.0x, measured {results[ours] / results['mbsync imap']:.2f}x")
    for proto in ("imap", "pop3"):
        ours = f"fetchdeliver {proto} -> postgres"
        if ours in results:
            print(f"{ours} vs fetchdeliver {proto} (Maildir + sqlite): "
                  f"{results[ours] / results[f'fetchdeliver {proto}']:.2f}x the time")
            for name, took in results.items():
                if not name.startswith("fetchdeliver") and proto in name:
                    print(f"{ours} vs {name}: {results[ours] / took:.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
