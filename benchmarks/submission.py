#!/usr/bin/env python3
"""Submission benchmark: `fetchdeliver`'s submission server next to aiosmtpd's bare server, one run.

Both servers get the same 1000 messages (seeded, 1-20 KB, From: the logged-in user) over the same
clients: 4 concurrent smtplib connections, each logging in once with AUTH PLAIN and then sending
its share, one remote recipient per message.

- fetchdeliver (`fetchdeliver submission` in its own process): each message is checked (sender, From:), gets Received/Message-ID/Date as needed,
  is queued durably (file + directory fsynced, sqlite commit) and copied into alice's Sent folder
  (fsynced) before the 250; the queue runner relays it to an aiosmtpd sink on 127.0.0.1. Two
  figures: accepted (all 250s in) and relayed (all 1000 at the sink).
- Postfix 3.7 (Debian's package, never started as a system service): a private instance in a
  temporary directory (`postfix -c DIR start-fg`, every service unchrooted), only a submission smtpd
  on 127.0.0.1 with SASL through a Dovecot auth socket (a Dovecot master with no protocols, the same
  passwd-file user), `reject_sender_login_mismatch` as our sender check, relaying to the same sink.
  Same two figures. Postfix keeps no Sent copy (one file + fsync less per message than us).
- the floor: aiosmtpd's SMTP server with AUTH PLAIN (any password) whose handler keeps the message
  in memory and answers 250 - the same protocol code with no storage, no checks, no relay.

Run as root (Postfix's master refuses otherwise) from the repository; postfix and dovecot-core installed:

    /work/main/.venv/bin/python benchmarks/submission.py [--count 1000] [--connections 4] [--no-postfix]
"""

from __future__ import annotations

import argparse
import logging
import random
import smtplib
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))


def make_messages(count: int, seed: int = 20) -> list[tuple[str, bytes]]:
    rnd = random.Random(seed)
    words = "mail queue relay submit sender message header body fsync folder client server".split()
    out = []
    for i in range(count):
        rcpt = f"user{rnd.randrange(50)}@remote{rnd.randrange(5)}.example"
        size = int(1000 * 20 ** rnd.random())  # log-uniform 1-20 KB
        lines = []
        n = 0
        while n < size:
            line = " ".join(rnd.choice(words) for _ in range(rnd.randrange(5, 14)))
            lines.append(line)
            n += len(line) + 2
        head = ["From: Alice <alice@example.org>", f"To: <{rcpt}>", f"Subject: benchmark {i}"]
        if i % 2:  # half come without Date / Message-ID (the server adds them)
            head += [f"Message-ID: <bench{i}@example.org>", "Date: Tue, 01 Dec 2026 10:00:00 +0000"]
        out.append((rcpt, ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(lines) + "\r\n").encode()))
    return out


def run_clients(port: int, msgs, connections: int, sender: str = "alice@example.org") -> float:
    chunks = [msgs[i::connections] for i in range(connections)]
    errors: list[str] = []
    barrier = threading.Barrier(connections + 1)

    def client(chunk):
        try:
            s = smtplib.SMTP("127.0.0.1", port, timeout=120)
            s.ehlo("bench.test")
            s.login("alice", "secret")
        except Exception as e:  # noqa: BLE001
            errors.append(f"login: {e}")
            barrier.wait()
            return
        barrier.wait()
        try:
            for rcpt, raw in chunk:
                s.sendmail(sender, [rcpt], raw)
            s.quit()
        except Exception as e:  # noqa: BLE001
            errors.append(str(e))

    threads = [threading.Thread(target=client, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    if errors:
        raise RuntimeError("; ".join(errors[:3]))
    return took


def bench_fetchdeliver(msgs, connections: int, fsync: bool, tmp: str) -> tuple[float, float]:
    """`fetchdeliver submission` in its own process (as deployed; Postfix has its own processes too)."""
    import os
    import signal
    import subprocess

    from submission_support import World

    w = World(tmp, submission='rate_limit = "0"\n', fsync=fsync)
    w.server.stop()          # keep the users, the sink and the config: the command serves
    w.runner.stop(timeout=10)
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_CACHE_HOME=f"{tmp}/xdg-cache")
    proc = subprocess.Popen([sys.executable, "-m", "fetchdeliver", "submission", "-c", w.config_file],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        if "listening on" not in line:
            raise RuntimeError(f"fetchdeliver submission did not start: {line}{proc.stderr.read()[-1500:]}")
        port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        spy = None
        if os.environ.get("BENCH_PYSPY"):  # a profile of the server process: BENCH_PYSPY=out.txt
            spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--pid",
                                    str(proc.pid), "-o", os.environ["BENCH_PYSPY"], "-f", "raw", "-t", "-n"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)  # py-spy attaching (a profiling run only)
        start = time.perf_counter()
        accepted = run_clients(port, msgs, connections)
        deadline = time.monotonic() + 600
        while len(w.sink.messages) < len(msgs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(w.sink.messages)} of {len(msgs)} reached the sink")
            time.sleep(0.01)
        relayed = time.perf_counter() - start
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        if len(w.sent()) != len(msgs):
            raise RuntimeError(f"{len(w.sent())} Sent copies for {len(msgs)} messages")
        return accepted, relayed
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        w.sink.stop()


class PostfixSubmission:
    """A private Postfix instance (submission smtpd only) with Dovecot SASL, relaying to `sink_port`."""

    def __init__(self, root: str, sink_port: int) -> None:
        import os
        import re
        import shutil
        import subprocess

        from smtp_sinks import free_port

        for exe in ("/usr/sbin/postfix", "/usr/sbin/dovecot"):
            if not os.path.exists(exe):
                raise RuntimeError(f"{exe} is not installed")
        if os.getuid() != 0:
            raise RuntimeError("Postfix's master runs as root only")
        self.root = root
        self.port = free_port()
        os.chmod(root, 0o755)   # the postfix user goes through it to its data and queue directories
        os.makedirs(f"{root}/etc")
        os.makedirs(f"{root}/dc")
        os.makedirs(f"{root}/data")
        os.makedirs(f"{root}/spool")
        shutil.chown(f"{root}/data", "postfix", "postfix")
        with open(f"{root}/passwd", "w") as f:
            f.write("alice:{PLAIN}secret::::::\n")
        with open(f"{root}/dc/dovecot.conf", "w") as f:
            f.write(f"base_dir = {root}/dc/run\nprotocols =\nlog_path = {root}/dc/dovecot.log\nssl = no\n"
                    "auth_mechanisms = plain login\ndisable_plaintext_auth = no\n"
                    f"passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {root}/passwd\n}}\n"
                    "userdb {\n  driver = static\n  args = uid=65534 gid=65534 home=/tmp\n}\n"
                    f"service auth {{\n  unix_listener {root}/auth {{\n    mode = 0666\n  }}\n}}\n")
        self.dovecot = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", f"{root}/dc/dovecot.conf"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(f"{root}/etc/main.cf", "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
relayhost = [127.0.0.1]:{sink_port}
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = /dev/stdout
alias_maps =
alias_database =
local_recipient_maps =
smtputf8_enable = yes
message_size_limit = 36700160
""")
        submission = (f"127.0.0.1:{self.port} inet n - n - - smtpd\n  -o syslog_name=postfix/submission\n"
                      "  -o smtpd_sasl_auth_enable=yes\n  -o smtpd_sasl_type=dovecot\n"
                      f"  -o smtpd_sasl_path={root}/auth\n  -o smtpd_sasl_security_options=noanonymous\n"
                      "  -o smtpd_sender_login_maps=inline:{alice@example.org=alice}\n"
                      "  -o smtpd_sender_restrictions=reject_sender_login_mismatch\n"
                      "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n"
                      "  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject")
        out = []
        with open("/etc/postfix/master.cf.proto") as f:
            for line in f:
                if line.startswith("smtp      inet"):
                    out.append(submission + "\n")
                    continue
                fields = line.split()
                if re.match(r"^[a-z0-9]", line) and len(fields) >= 8:
                    fields[4] = "n"   # no chroot: nothing to copy into the queue directory
                    line = "\t".join(fields) + "\n"
                out.append(line)
        with open(f"{root}/etc/master.cf", "w") as f:
            f.writelines(out)
        self.log = open(f"{root}/maillog", "wb")
        self.master = subprocess.Popen(["/usr/sbin/postfix", "-c", f"{root}/etc", "start-fg"],
                                       stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        from submission_support import wait_for
        import socket

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return os.path.exists(f"{root}/auth")
            except OSError:
                return False
        try:
            wait_for(up, 60, "Postfix and Dovecot to listen")
        except AssertionError:
            self.stop()
            with open(f"{root}/maillog", "rb") as f:
                raise RuntimeError("Postfix did not start: " + f.read().decode(errors="replace")[-1500:]) from None

    def stop(self) -> None:
        import os
        import signal

        try:
            with open(f"{self.root}/spool/pid/master.pid") as f:
                os.kill(int(f.read().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        for p in (self.master, self.dovecot):
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(20)
            except Exception:  # noqa: BLE001
                p.kill()
        self.log.close()


def bench_postfix(msgs, connections: int, tmp: str) -> tuple[float, float]:
    from smtp_sinks import Sink

    sink = Sink()
    pf = PostfixSubmission(tmp, sink.port)
    try:
        start = time.perf_counter()
        accepted = run_clients(pf.port, msgs, connections)
        deadline = time.monotonic() + 600
        while len(sink.messages) < len(msgs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Postfix: only {len(sink.messages)} of {len(msgs)} reached the sink")
            time.sleep(0.01)
        return accepted, time.perf_counter() - start
    finally:
        pf.stop()
        sink.stop()


def bench_aiosmtpd(msgs, connections: int) -> float:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult
    from smtp_sinks import free_port

    kept = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            kept.append(envelope.original_content)
            return "250 2.0.0 Ok"

    port = free_port()
    c = Controller(Handler(), hostname="127.0.0.1", port=port, auth_require_tls=False,
                   authenticator=lambda *a: AuthResult(success=True), ready_timeout=30)
    c.start()
    try:
        took = run_clients(port, msgs, connections)
        assert len(kept) == len(msgs)
        return took
    finally:
        c.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--no-fsync", action="store_true", help="[delivery] fsync = false (the queue still fsyncs)")
    p.add_argument("--no-postfix", action="store_true", help="leave Postfix out")
    p.add_argument("--dir", help="where the temporary directory goes (the filesystem decides what fsync costs)")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    msgs = make_messages(args.count)
    size = sum(len(r) for _a, r in msgs)
    print(f"{len(msgs)} messages, {size / 1e6:.1f} MB, {args.connections} connections, AUTH PLAIN")
    floor = bench_aiosmtpd(msgs, args.connections)
    pf = None
    if not args.no_postfix:
        with tempfile.TemporaryDirectory(prefix="pf-submission-bench-", dir=args.dir) as tmp:
            try:
                pf = bench_postfix(msgs, args.connections, tmp)
            except RuntimeError as e:
                print(f"Postfix not measured: {e}")
    with tempfile.TemporaryDirectory(prefix="fd-submission-bench-", dir=args.dir) as tmp:
        accepted, relayed = bench_fetchdeliver(msgs, args.connections, not args.no_fsync, tmp)
    n = len(msgs)
    rows = [("aiosmtpd bare server (floor)", floor, None)]
    if pf:
        rows += [("Postfix: accepted (queued)", pf[0], None), ("Postfix: relayed to the sink", pf[1], None)]
    rows += [("fetchdeliver: accepted (queued + Sent copy)", accepted, pf[0] if pf else None),
             ("fetchdeliver: relayed to the sink", relayed, pf[1] if pf else None)]
    print(f"{'':45} {'seconds':>8} {'msg/s':>8} {'x floor':>8} {'x Postfix':>9}")
    for name, t, peer in rows:
        print(f"{name:45} {t:8.2f} {n / t:8.0f} {t / floor:8.2f} {(t / peer) if peer else float('nan'):9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
