"""`fetchdeliver daemon` end to end against a real Dovecot: IDLE, polling, reload, SIGTERM, watch rules,
listeners, the spool directory and `fetchdeliver status`. The daemon is a real subprocess, stopped by PID."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import time

import pytest
from conftest import make_message
from fetchsetup import FetchSetup, originals, toml_value, lf


# -- running the daemon as a subprocess -----------------------------------------------------------------

def wait_for(cond, timeout: float = 20.0, what: str = "condition", proc=None, interval: float = 0.05):
    """Poll `cond()` until it is truthy (and return it) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if proc is not None and proc.p.poll() is not None:
            raise AssertionError(f"the daemon exited ({proc.p.returncode}) while waiting for {what}:\n{proc.log()}")
        if time.monotonic() > deadline:
            extra = f"\n--- daemon log ---\n{proc.log()}" if proc is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


class DaemonProc:
    """`fetchdeliver daemon -c CONFIG` with stderr in a file (so the pipe never fills)."""

    def __init__(self, cmd: list[str], config: str, log_path: str, *extra: str, env: dict | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        e = dict(os.environ)
        e.pop("JOURNAL_STREAM", None)
        e.pop("INVOCATION_ID", None)
        e.update(env or {})
        self.p = subprocess.Popen([*cmd, "daemon", "-c", config, *extra], stdout=self._log, stderr=subprocess.STDOUT,
                                  env=e)

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, pattern: str, timeout: float = 20.0, count: int = 1) -> re.Match:
        rx = re.compile(pattern)

        def found():
            ms = list(rx.finditer(self.log()))
            return ms[count - 1] if len(ms) >= count else None
        return wait_for(found, timeout, f"log line /{pattern}/ x{count}", proc=self)

    def port(self, kind: str) -> int:
        m = self.wait_log(rf"{kind}: listening on [\d.]+:(\d+)")
        return int(m.group(1))

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        """Send `sig`; return (exit status, seconds it took)."""
        t0 = time.monotonic()
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(10)
            raise AssertionError(f"the daemon did not exit within {timeout}s of {sig!r}:\n{self.log()}") from None
        finally:
            self._log.close()
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        if not self._log.closed:
            self._log.close()


@pytest.fixture
def setup(tmp_path, dovecot, fetchdeliver_cmd):
    return FetchSetup(tmp_path, dovecot, fetchdeliver_cmd)


@pytest.fixture
def daemons():
    started: list[DaemonProc] = []
    yield started
    for d in started:
        d.kill()


def start(daemons, setup, *extra, env=None) -> DaemonProc:
    d = DaemonProc(setup.cmd, setup.config, str(setup.dir / f"daemon{len(daemons)}.log"), *extra, env=env)
    daemons.append(d)
    d.wait_log(r"ready: ")
    return d


def write_extra(setup, text: str) -> None:
    """Append raw TOML (tables beyond [delivery] and [[account]]) to the setup's config."""
    setup.write()
    with open(setup.config, "a") as f:
        f.write("\n" + text)


def imap_append(dovecot, user: str, raw: bytes) -> None:
    """IMAP APPEND (Dovecot then announces the message to IDLE sessions at once)."""
    c = dovecot.imap(user)
    try:
        c.append("INBOX", raw)
    finally:
        c.logout()


def status(setup) -> str:
    r = subprocess.run(setup.cmd + ["status", "-c", setup.config], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


# -- push and schedule ---------------------------------------------------------------------------------

def test_idle_delivers_new_mail_within_seconds(setup, dovecot, daemons):
    setup.account("push", "imap", idle=True, poll="1h", notify=False)  # the IDLE path (NOTIFY: test_push.py)
    d = start(daemons, setup)
    d.wait_log(r"push: IDLE connected")
    t0 = time.monotonic()
    imap_append(dovecot, "alice", make_message(1, "idle"))
    wait_for(lambda: setup.count_delivered() == 1, 10, "delivery through IDLE", proc=d)
    latency = time.monotonic() - t0
    sys.stderr.write(f"IDLE delivery latency: {latency:.2f}s\n")
    # A second message, while the connection stays in IDLE (no poll is due for an hour).
    imap_append(dovecot, "alice", make_message(2, "idle"))
    wait_for(lambda: setup.count_delivered() == 2, 10, "second delivery through IDLE", proc=d)
    out = status(setup)
    assert re.search(r"push \(idle, poll every 1h\):", out), out
    assert "errors:    none" in out
    rc, took = d.stop()
    assert rc == 0, d.log()
    assert sorted(originals(setup.delivered())) == sorted(lf([make_message(1, "idle"), make_message(2, "idle")]))


def test_idle_is_reissued_and_keeps_delivering(setup, dovecot, daemons):
    setup.account("push", "imap", idle=True, poll="1h", notify=False)  # the IDLE path (NOTIFY: test_push.py)
    write_extra(setup, '[daemon]\nidle_renew = "1s"\n')
    d = DaemonProc(setup.cmd + ["-v", "-v"], setup.config, str(setup.dir / "renew.log"))
    daemons.append(d)
    d.wait_log(r"push: IDLE re-issued \(round 3\)")
    imap_append(dovecot, "alice", make_message(1, "renew"))
    wait_for(lambda: setup.count_delivered() == 1, 10, "delivery after IDLE was re-issued", proc=d)
    assert d.stop()[0] == 0


def test_idle_reconnects_after_the_server_drops_it(setup, dovecot, daemons):
    setup.account("push", "imap", idle=True, poll="1h", notify=False)  # the IDLE path (NOTIFY: test_push.py)
    d = start(daemons, setup)
    d.wait_log(r"push: IDLE connected")
    dovecot.doveadm("kick", "alice")
    d.wait_log(r"push: IDLE: .*reconnecting with back-off")
    d.wait_log(r"push: IDLE connected", count=2)
    imap_append(dovecot, "alice", make_message(1, "kick"))
    wait_for(lambda: setup.count_delivered() == 1, 10, "delivery on the new IDLE connection", proc=d)
    assert d.stop()[0] == 0


def test_polling_accounts_deliver_on_schedule_and_status_reports(setup, dovecot, daemons, tmp_path):
    setup.account("imap-acct", "imap", poll="1s", after="delete")
    setup.account("pop-acct", "pop3", user="bob", poll="1s", after="delete")
    setup.account("broken", "imap", poll="1s", password="wrong")
    d = start(daemons, setup, "--log-format", "json")
    # Mail that arrives after the daemon started is picked up by the next polls.
    dovecot.append("alice", make_message(1, "poll"))
    dovecot.append("bob", make_message(2, "poll"))
    wait_for(lambda: setup.count_delivered() == 2, 20, "both accounts polled", proc=d)
    dovecot.append("alice", make_message(3, "poll"))
    wait_for(lambda: setup.count_delivered() == 3, 20, "a later poll", proc=d)
    # The failing account is retried with back-off; its error is logged once, not at every poll.
    wait_for(lambda: "failures in a row" in status(setup), 20, "the failure in status", proc=d)
    out = status(setup)
    assert re.search(r"imap-acct \(poll every 1s\):\n    last poll: \d{4}-.*ago\)\n    result:    ok: ", out), out
    assert re.search(r"pop-acct \(poll every 1s\):", out)
    assert re.search(r"broken \(poll every 1s\):[\s\S]*?error:     .*LOGIN", out), out
    assert re.search(r"next poll: \d{4}-\S+ \S+ \(in ", out), out
    assert "outbound queue: 0 messages" in out
    assert re.search(r"daemon: running, pid \d+", out)
    rc, _ = d.stop()
    assert rc == 0
    lines = [json.loads(line) for line in d.log().splitlines() if line.strip()]  # every line is JSON
    login_errors = [rec for rec in lines if rec["level"] == "error" and rec.get("account") == "broken"]
    assert len(login_errors) == 1, login_errors
    assert "daemon: not running" in status(setup)


# -- reload ------------------------------------------------------------------------------------------------

RULES_A = 'require "fileinto";\nfileinto "Alpha";\n'
RULES_B = 'require "fileinto";\nfileinto "Beta";\n'


def test_config_and_script_edits_are_picked_up_and_broken_ones_refused(setup, dovecot, daemons, tmp_path):
    rules = tmp_path / "rules.sieve"
    rules.write_text(RULES_A)
    setup.rules = str(rules)
    setup.account("work", "imap", poll="1s", after="delete")
    d = start(daemons, setup)
    dovecot.append("alice", make_message(1, "reload"))
    wait_for(lambda: len(setup.delivered("Alpha")) == 1, 20, "delivery with the first script", proc=d)

    # A new script on disk (watchdog notices) is used for the next message.
    rules.write_text(RULES_B)
    d.wait_log(r"configuration and scripts reloaded", count=1)
    dovecot.append("alice", make_message(2, "reload"))
    wait_for(lambda: len(setup.delivered("Beta")) == 1, 20, "delivery with the edited script", proc=d)

    # A broken script is refused; the old one keeps filing into Beta.
    rules.write_text('require "fileinto";\nfileinto "Gamma"\n')   # missing ';'
    d.wait_log(r"new configuration is refused, the running one stays: .*rules\.sieve", count=1)
    dovecot.append("alice", make_message(3, "reload"))
    wait_for(lambda: len(setup.delivered("Beta")) == 2, 20, "delivery with the kept script", proc=d)

    # A broken config (an unknown key) is refused too, naming the key.
    setup.accounts[0]["pol"] = "1s"
    setup.write()
    d.wait_log(r"refused.*account\[0\] \(work\)\.pol: unknown key", count=1)
    del setup.accounts[0]["pol"]

    # SIGHUP reloads a good config: a second account and the fixed script.
    rules.write_text(RULES_A)
    setup.account("bob", "imap", user="bob", poll="1s", after="delete")
    d.p.send_signal(signal.SIGHUP)
    d.wait_log(r"configuration and scripts reloaded", count=2)
    dovecot.append("bob", make_message(4, "reload"))
    wait_for(lambda: len(setup.delivered("Alpha")) == 2, 20, "the new account, with the fixed script", proc=d)
    assert setup.count_delivered() == 4
    assert d.stop()[0] == 0


# -- shutdown --------------------------------------------------------------------------------------------

def test_sigterm_during_a_500_message_fetch_loses_nothing_and_duplicates_nothing(setup, dovecot, daemons):
    msgs = [make_message(i, "term", body_lines=20) for i in range(500)]
    dovecot.append_many("alice", msgs)
    setup.account("big", "imap", poll="1h", after="delete", batch_size=25)
    d = start(daemons, setup)
    wait_for(lambda: setup.count_delivered() >= 60, 60, "part of the fetch", proc=d, interval=0.01)
    rc, took = d.stop(signal.SIGTERM, timeout=10)
    assert rc == 0, d.log()
    assert took < 10
    first = setup.count_delivered()
    assert first < 500, "the fetch finished before SIGTERM: the test proves nothing"
    # The next run picks up exactly where the daemon stopped.
    r = setup.run()
    assert r.returncode == 0, r.stdout + r.stderr
    got = originals(setup.delivered())
    assert len(got) == 500
    assert sorted(got) == sorted(lf(msgs))
    assert dovecot.contents("alice") == {}


# -- watch rules -------------------------------------------------------------------------------------------

WATCH_SCRIPT = r"""#!/bin/sh
out="$1"
n=$(date +%s%N)-$$
{ echo "SENDER=$SENDER"; echo "SUBJECT=$SUBJECT"; echo "FOLDER=$FOLDER"; echo "ACCOUNT=$ACCOUNT"; echo "WATCH=$WATCH"; echo; cat; } > "$out/.$n"
mv "$out/.$n" "$out/$n"
"""


def _msg(sender: str, subject: str, i: int) -> bytes:
    return (f"From: {sender}\r\nTo: me@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <watch.{i}@example.org>\r\n\r\nbody {i}\r\n").encode()


def test_watch_rule_runs_its_command_once_per_matching_message(setup, dovecot, daemons, tmp_path):
    script = tmp_path / "notify.sh"
    script.write_text(WATCH_SCRIPT)
    script.chmod(0o755)
    hits, storm, last = tmp_path / "hits", tmp_path / "storm", tmp_path / "last"
    for p in (hits, storm, last):
        p.mkdir()
    setup.account("work", "imap", poll="1s")
    write_extra(setup, f"""
[[watch]]
name = "alice"
from = "alice@example.com"
command = {toml_value(f"{script} {hits}")}

[[watch]]
name = "storm"
subject = "^storm"
command = {toml_value(f"{script} {storm}")}
rate_limit = "3/1h"

[[watch]]
name = "last"
subject = "^the end$"
command = {toml_value(f"{script} {last}")}
""")
    mails = [_msg("Bob <bob@example.com>", "not watched", 0),
             _msg("Alice <alice@example.com>", "Lunch?", 1),
             _msg("Carol <carol@example.com>", "hello alice@example.com", 2),
             _msg("Alice <ALICE@example.com>", "=?utf-8?q?Caf=C3=A9?=", 3)]
    mails += [_msg("bot@example.net", f"storm {i}", 10 + i) for i in range(8)]
    mails.append(_msg("bot@example.net", "the end", 99))
    dovecot.append_many("alice", mails)
    d = start(daemons, setup)
    wait_for(lambda: setup.count_delivered() == len(mails), 30, "every delivery", proc=d)
    # The notifier handles messages in delivery order: once "last" ran, every earlier one was handled.
    wait_for(lambda: os.listdir(last), 20, "the last watch command", proc=d)
    runs = sorted(os.listdir(hits))
    assert len(runs) == 2, runs
    texts = [(hits / n).read_text() for n in runs]
    assert any("SENDER=alice@example.com\nSUBJECT=Lunch?\nFOLDER=INBOX\nACCOUNT=work\nWATCH=alice\n" in t
               for t in texts), texts
    assert any("SUBJECT=Café\n" in t and "body 3" in t for t in texts), texts   # decoded; message on stdin
    assert not any("not watched" in t or "body 2" in t for t in texts)
    assert len(os.listdir(storm)) == 3                                      # the rate limit held
    assert re.search(r"watch storm: rate limit 3/1h reached", d.log())
    assert d.stop()[0] == 0


def test_a_failing_watch_command_is_logged_and_delivery_goes_on(setup, dovecot, daemons):
    setup.account("work", "imap", poll="1s")
    write_extra(setup, '[[watch]]\nfrom = "*@example.org"\ncommand = "echo no such luck >&2; exit 3"\n')
    dovecot.append_many("alice", [make_message(i, "fail") for i in range(3)])
    d = start(daemons, setup)
    wait_for(lambda: setup.count_delivered() == 3, 30, "deliveries", proc=d)
    d.wait_log(r"watch watch\[0\]: command .* failed with exit status 3: no such luck", count=3)
    assert d.stop()[0] == 0


# -- listeners and the spool -------------------------------------------------------------------------------

def test_lmtp_imap_listeners_spool_and_status(setup, daemons, tmp_path):
    from fetchdeliver.imapserver.auth import set_password

    passwd = tmp_path / "imap.passwd"
    set_password(str(passwd), "me", "pw", "SHA256-CRYPT")
    spool = tmp_path / "spool"
    write_extra(setup, f"""
[lmtp]
listen = "127.0.0.1:0"

[imap]
listen = "127.0.0.1:0"
passwd_file = {toml_value(str(passwd))}

[spool]
dir = {toml_value(str(spool))}

[[watch]]
subject = "^via "
accounts = ["lmtp", "spool"]
command = {toml_value(f"echo $ACCOUNT >> {tmp_path / 'watched'}")}
""")
    d = start(daemons, setup)
    lmtp_port, imap_port = d.port("lmtp"), d.port("imap")
    with smtplib.LMTP("127.0.0.1", lmtp_port) as c:
        c.sendmail("bob@example.org", ["me@example.com"], b"From: bob@example.org\r\nSubject: via lmtp\r\n\r\nhi\r\n")
    # A file dropped into the spool (written aside, then renamed in) is delivered and removed.
    tmp = spool / ".incoming"
    tmp.write_bytes(b"From: carol@example.org\nSubject: via spool\n\nhello\n")
    os.rename(tmp, spool / "msg1")
    wait_for(lambda: setup.count_delivered() == 2, 20, "LMTP and spool deliveries", proc=d)
    wait_for(lambda: not os.path.exists(spool / "msg1"), 10, "the spool file removed", proc=d)
    watched = tmp_path / "watched"
    wait_for(lambda: watched.exists() and len(watched.read_text().split()) == 2, 10, "watch commands", proc=d)
    assert sorted(watched.read_text().split()) == ["lmtp", "spool"]
    import imapclient

    c = imapclient.IMAPClient("127.0.0.1", port=imap_port, ssl=False, timeout=30)
    c.login("me", "pw")
    c.select_folder("INBOX", readonly=True)
    subjects = sorted(d[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip()
                      for d in c.fetch(c.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).values())
    c.logout()
    assert subjects == [b"Subject: via lmtp", b"Subject: via spool"]
    out = status(setup)
    assert f"lmtp: 127.0.0.1:{lmtp_port}" in out and f"imap: 127.0.0.1:{imap_port}" in out
    assert f"spool: {spool}" in out
    # The same bytes dropped in again later are new mail: delivered, not taken for a leftover.
    tmp.write_bytes(b"From: carol@example.org\nSubject: via spool\n\nhello\n")
    os.rename(tmp, spool / "msg1")
    wait_for(lambda: setup.count_delivered() == 3, 20, "the second identical spool file", proc=d)
    wait_for(lambda: not os.path.exists(spool / "msg1"), 10, "the second spool file removed", proc=d)
    rc, took = d.stop(signal.SIGINT)
    assert rc == 0


def test_broken_config_at_start_exits_with_the_error(setup, daemons):
    setup.account("work", "imap")
    write_extra(setup, '[daemon]\npoll = "soon"\n')
    r = subprocess.run(setup.cmd + ["daemon", "-c", setup.config], capture_output=True, text=True, timeout=30)
    assert r.returncode == 78
    assert "daemon.poll" in r.stderr and "not a duration" in r.stderr


def test_sieve_notify_mailto_goes_through_the_outbound_queue(setup, dovecot, daemons, tmp_path, unreachable_port):
    rules = tmp_path / "rules.sieve"
    rules.write_text('require ["enotify"];\nif address :is "from" "alice@example.com" {\n'
                     '  notify :message "mail from alice" "mailto:me@phone.example";\n}\n')
    setup.rules = str(rules)
    setup.account("work", "imap", poll="1s")
    # A relay nobody answers on: the notification waits in the queue, where status counts it.
    write_extra(setup, f'[relay]\nhost = "127.0.0.1"\nport = {unreachable_port}\ntls = "none"\n')
    dovecot.append_many("alice", [_msg("alice@example.com", "hi", 1), _msg("bob@example.com", "hi", 2)])
    d = start(daemons, setup)
    wait_for(lambda: setup.count_delivered() == 2, 20, "deliveries", proc=d)
    wait_for(lambda: "outbound queue: 1 message\n" in status(setup), 20, "one queued notification", proc=d)
    assert d.stop()[0] == 0


def test_a_slow_watch_command_never_delays_delivery_or_shutdown(setup, dovecot, daemons, tmp_path):
    setup.account("work", "imap", poll="1s")
    started = tmp_path / "started"
    write_extra(setup, f'[[watch]]\nfrom = "*@example.org"\ncommand = "touch {started}; exec sleep 20"\n')
    dovecot.append_many("alice", [make_message(i, "slow") for i in range(5)])
    d = start(daemons, setup)
    wait_for(lambda: setup.count_delivered() == 5, 15, "deliveries while the command sleeps", proc=d)
    wait_for(started.exists, 10, "the command started", proc=d)
    rc, took = d.stop()
    assert rc == 0 and took < 10
