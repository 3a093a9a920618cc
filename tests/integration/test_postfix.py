"""Behind a real Postfix (issue 21), set up as a procmail user would.

Postfix 3.7 (Debian) runs from its own main.cf/master.cf in a temp dir (see postfix.py): smtpd on
an ephemeral 127.0.0.1 port, nothing leaves the machine (default_transport = error), its log in
the temp dir. Mail goes in over SMTP; its maillog lines (status=sent / deferred / bounced) are
the assertions, next to the files on disk. Deliveries run as an unprivileged test user, as
Postfix's local(8) runs mailbox_command and .forward commands as the recipient.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time

import pytest

import postfix as pfmod
from smtp_sinks import Sink

pytestmark = pytest.mark.skipif(pfmod.available() is not None, reason=pfmod.available() or "")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USER = "fdpostfix"
RCPT = f"{USER}@{pfmod.DOMAIN}"


def _interpreter_for(user: str) -> tuple[str, str]:
    """(python, PYTHONPATH) the test user can run: this interpreter when the user may execute it
    (CI), else the system python3 of the same version with our venv's packages on the path."""
    ok = subprocess.run(["runuser", "-u", user, "--", sys.executable, "-c", "import fetchdeliver"],
                        capture_output=True).returncode == 0
    if ok:
        return sys.executable, ""
    system = "/usr/bin/python3"
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    got = subprocess.run([system, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         capture_output=True, text=True).stdout.strip()
    if got != want:
        pytest.skip(f"the test user cannot run {sys.executable} and {system} is {got}, not {want}")
    return system, os.pathsep.join([REPO, sysconfig.get_paths()["purelib"]])


class Env:
    """Postfix + the test user's fetchdeliver setup + an SMTP relay sink."""

    def __init__(self) -> None:
        self.base = tempfile.mkdtemp(prefix="fd-postfix-")
        self.user = self.sink = self.pf = None
        try:
            self._setup()
        except BaseException:  # a skip or a failure half-way: undo what was made
            self.close()
            raise

    def _setup(self) -> None:
        os.chmod(self.base, 0o755)
        self.user = pfmod.TestUser(USER, os.path.join(self.base, "home"))
        self.home = self.user.home
        self.maildir = os.path.join(self.home, "Mail")
        self.config = os.path.join(self.home, ".config", "fetchdeliver", "config.toml")
        self.rules = os.path.join(self.home, ".config", "fetchdeliver", "rules.sieve")
        self.state = os.path.join(self.home, ".local", "state", "fetchdeliver")
        python, pythonpath = _interpreter_for(USER)
        self.bin = os.path.join(self.base, "bin", "fetchdeliver")
        os.makedirs(os.path.dirname(self.bin))
        with open(self.bin, "w") as f:
            f.write("#!/bin/sh\n" + (f"PYTHONPATH='{pythonpath}'; export PYTHONPATH\n" if pythonpath else "")
                    + f"exec '{python}' -m fetchdeliver \"$@\"\n")
        os.chmod(self.bin, 0o755)
        probe = subprocess.run(["runuser", "-u", USER, "--", self.bin, "--version"], capture_output=True,
                               text=True, cwd="/")
        if probe.returncode != 0:
            pytest.skip(f"the unprivileged test user cannot run fetchdeliver from {REPO} "
                        f"(are the source and the venv readable by others?): {probe.stderr.strip()[-300:]}")
        self.sink = Sink()
        self.pf = pfmod.PostfixInstance(self.base, main={
            # what docs/getting-started.md tells a user to put into main.cf
            "mailbox_command": f'{self.bin} deliver -c {self.config} -f "$SENDER" -a "$RECIPIENT"'})
        self.write_config()
        self.pf.start()  # stopped by close(), by `postfix stop` and then by the master's PID

    def close(self) -> None:
        try:
            if self.pf is not None:
                self.pf.stop()
        finally:
            if self.sink is not None:
                self.sink.stop()
            if self.user is not None:
                self.user.remove()
            shutil.rmtree(self.base, ignore_errors=True)

    # -- the user's files ------------------------------------------------------------------
    def write_config(self, rules: str | None = None, extra: str = "") -> None:
        os.makedirs(os.path.dirname(self.config), exist_ok=True)
        text = (f'[delivery]\nmaildir = "{self.maildir}"\nstate_dir = "{self.state}"\n'
                f'cache_dir = "{self.home}/.cache/fetchdeliver"\n')
        if rules is not None:
            with open(self.rules, "w") as f:
                f.write(rules)
            text += f'rules = "{self.rules}"\n'
        text += (f'\n[relay]\nhost = "127.0.0.1"\nport = {self.sink.port}\ntls = "none"\n'
                 f'\n[queue]\nhostname = "mx.{pfmod.DOMAIN}"\n' + extra)
        with open(self.config, "w") as f:
            f.write(text)
        self.user.chown_tree(self.home)

    def as_user(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", USER, "--", self.bin, *args], capture_output=True, text=True,
                              timeout=timeout, cwd=self.home)

    def files(self, folder: str = "") -> list[bytes]:
        box = os.path.join(self.maildir, f".{folder}" if folder else "")
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(box, sub)
            if os.path.isdir(d):
                for n in sorted(os.listdir(d)):
                    with open(os.path.join(d, n), "rb") as f:
                        out.append(f.read())
        return out

    def find(self, needle: bytes, folder: str = "") -> list[bytes]:
        return [raw for raw in self.files(folder) if needle in raw]

    # -- mail in, log out --------------------------------------------------------------------
    def send(self, sender: str, subject: str, *, to: str = RCPT, body: str = "hello\r\n") -> tuple[str, bytes]:
        """Submit a message over SMTP; returns (Postfix queue id, the message as sent)."""
        import smtplib

        tag = f"{subject.replace(' ', '-')}.{time.monotonic_ns()}"
        raw = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{tag}@remote.test>\r\n"
               f"Date: Wed, 02 Dec 2026 10:00:00 +0000\r\n\r\n{body}").encode()
        with smtplib.SMTP("127.0.0.1", self.pf.port, timeout=30) as s:
            s.ehlo("client.remote.test")
            s.mail(sender)
            code, _ = s.rcpt(to)
            assert code == 250
            code, resp = s.data(raw)
        assert code == 250, resp
        qid = re.search(rb"queued as (\w+)", resp).group(1).decode()
        return qid, raw

    def status(self, qid: str, status: str = r"\w+", timeout: float = 60) -> str:
        """The maildir line `QID: to=<...>, ..., status=STATUS (...)` (waits for it)."""
        return self.pf.wait_log(rf"{qid}: to=<{re.escape(RCPT)}>.* status={status} ", timeout=timeout)[-1]


@pytest.fixture(scope="module")
def env():
    e = Env()
    try:
        yield e
    finally:
        e.close()


@pytest.fixture(autouse=True)
def _fresh_mail(env):
    """Each test starts with an empty Maildir, no rules and an empty outbound queue."""
    shutil.rmtree(env.maildir, ignore_errors=True)
    shutil.rmtree(env.state, ignore_errors=True)
    env.write_config()
    env.sink.handler.messages.clear()
    yield


def test_mailbox_command_delivers_byte_exact_without_the_from_line(env):
    qid, raw = env.send("alice@remote.test", "plain")
    line = env.status(qid)
    assert "status=sent (delivered to command: " in line, line
    (got,) = env.files()
    # Postfix pipes "From alice@remote.test  Wed Dec ..." first; it is not stored (procmail and
    # dovecot-lda drop it too). Postfix's own headers follow, then the message as sent, with LF.
    assert not got.startswith(b"From "), got[:200]
    assert got.startswith(b"Return-Path: <alice@remote.test>\n"), got[:200]
    assert b"\nDelivered-To: " + RCPT.encode() + b"\n" in got
    assert got.endswith(raw.replace(b"\r\n", b"\n"))
    assert b"\n>From " not in got


def test_unwritable_maildir_defers_and_the_retry_delivers(env):
    env.write_config()
    os.makedirs(os.path.join(env.maildir, "tmp"))
    os.makedirs(os.path.join(env.maildir, "new"))
    os.makedirs(os.path.join(env.maildir, "cur"))
    env.user.chown_tree(env.maildir)
    os.chmod(os.path.join(env.maildir, "tmp"), 0o555)
    try:
        qid, raw = env.send("alice@remote.test", "deferred once")
        line = env.status(qid, "deferred")
        assert "Command died with status 75" in line or "temporary failure" in line, line
        assert env.files() == []
    finally:
        os.chmod(os.path.join(env.maildir, "tmp"), 0o700)
    env.pf.flush()
    line = env.status(qid, "sent", timeout=90)
    assert "delivered to command" in line
    (got,) = env.files()
    assert got.endswith(raw.replace(b"\r\n", b"\n"))


def test_sieve_reject_becomes_a_postfix_bounce(env):
    env.write_config('require "reject";\nif header :contains "subject" "unwanted" { reject "no thanks"; }\n')
    qid, _ = env.send("alice@remote.test", "unwanted offer")
    line = env.status(qid)
    assert "status=bounced" in line and "no thanks" in line, line
    assert env.files() == []
    qid2, _ = env.send("alice@remote.test", "wanted")
    assert "status=sent" in env.status(qid2)
    assert len(env.files()) == 1


def test_redirect_and_vacation_are_queued_by_the_mda_and_sent_once_by_queue_flush(env):
    env.write_config('require ["copy", "vacation"];\n'
                     'if header :contains "subject" "forward" { redirect :copy "friend@elsewhere.test"; stop; }\n'
                     f'vacation :days 1 :addresses ["{RCPT}"] :subject "Away" "I am away until Monday.";\n')
    q1, _ = env.send("bob@remote.test", "please forward this")
    q2, _ = env.send("bob@remote.test", "hello")
    q3, _ = env.send("bob@remote.test", "hello again")
    for q in (q1, q2, q3):
        assert "status=sent" in env.status(q)
    assert len(env.files()) == 3  # :copy and vacation keep the message
    # Queued durably before `deliver` exited 0; `queue list -c C` takes -c after the action.
    listed = env.as_user("queue", "list", "-c", env.config)
    assert listed.returncode == 0, listed.stderr
    assert "2 message(s) in the queue" in listed.stdout, listed.stdout
    assert "<bob@remote.test> -> <friend@elsewhere.test>" in listed.stdout
    assert "<> -> <bob@remote.test>" in listed.stdout
    assert env.sink.messages == []  # nothing is sent by the MDA itself
    flushed = env.as_user("queue", "flush", "-c", env.config)
    assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    assert "2 sent" in flushed.stdout
    got = {tuple(m.rcpt_tos): m for m in env.sink.messages}
    assert set(got) == {("friend@elsewhere.test",), ("bob@remote.test",)}, env.sink.messages
    redirect, reply = got[("friend@elsewhere.test",)], got[("bob@remote.test",)]
    assert redirect.mail_from == "bob@remote.test" and b"Subject: please forward this" in redirect.data
    assert reply.mail_from in ("", "<>") and b"Subject: Away" in reply.data and b"I am away until Monday." in reply.data
    again = env.as_user("queue", "list", "-c", env.config)
    assert "the queue is empty" in again.stdout


def test_forward_file_pipe_takes_the_envelope_sender_from_the_from_line(env):
    env.write_config('require ["fileinto", "envelope"];\n'
                     'if envelope :is "from" "carol@remote.test" { fileinto "FromCarol"; }\n')
    forward = os.path.join(env.home, ".forward")
    with open(forward, "w") as f:
        f.write(f'"|{env.bin} deliver -c {env.config}"\n')  # no -f: the From_ line gives the sender
    os.chown(forward, env.user.uid, env.user.gid)
    try:
        qid, raw = env.send("carol@remote.test", "via forward")
        line = env.status(qid)
        assert "status=sent (delivered to command: " in line and "deliver -c" in line, line
    finally:
        os.unlink(forward)
    (got,) = env.files("FromCarol")
    assert not got.startswith(b"From ")
    assert got.endswith(raw.replace(b"\r\n", b"\n"))


def _start_lmtp(env, *args: str) -> tuple[subprocess.Popen, str, str]:
    err = os.path.join(env.base, f"lmtp-{time.monotonic_ns()}.log")
    with open(err, "wb") as f:
        # as the mail user, started directly (not through runuser) so SIGTERM reaches it
        p = subprocess.Popen([env.bin, "lmtp", "-c", env.config, "--processes", "1", *args],
                             stdout=subprocess.DEVNULL, stderr=f, cwd=env.home, user=env.user.uid,
                             group=env.user.gid, extra_groups=[],
                             env={"HOME": env.home, "PATH": "/usr/bin:/bin", "USER": USER})
    deadline = time.monotonic() + 30
    while True:
        text = open(err, encoding="utf-8", errors="replace").read()
        m = re.search(r"listening on (\S+)", text)
        if m:
            return p, m.group(1), err
        assert p.poll() is None and time.monotonic() < deadline, text
        time.sleep(0.05)


def _stop(p: subprocess.Popen) -> int:
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait(5)


def test_lmtp_over_a_unix_socket_in_the_chroot_and_over_tcp(env):
    # docs/delivery.md: a directory inside Postfix's chroot (the queue directory) that the mail
    # user owns and group postfix may enter; the socket in it, mode 0666 (the directory guards it).
    sockdir = os.path.join(env.pf.queue, "fetchdeliver")
    os.makedirs(sockdir, exist_ok=True)
    os.chown(sockdir, env.user.uid, pfmod.pwd.getpwnam("postfix").pw_gid)
    os.chmod(sockdir, 0o750)
    sock = os.path.join(sockdir, "lmtp")
    p, where, log = _start_lmtp(env, "--socket", sock, "--socket-mode", "0666")
    try:
        assert where == sock
        assert oct(os.stat(sock).st_mode & 0o777) == "0o666"
        env.pf.set(mailbox_transport="lmtp:unix:fetchdeliver/lmtp")  # relative to the chroot
        qid, raw = env.send("dave@remote.test", "over lmtp unix")
        line = env.status(qid)
        assert "status=sent" in line and "delivered to maildir:INBOX" in line, line
        assert "relay=" in line and "fetchdeliver/lmtp" in line, line
    finally:
        assert _stop(p) == 0
    assert not os.path.exists(sock), "the socket is removed on exit"
    text = open(log, encoding="utf-8").read()
    # One line per delivered recipient, without -v, and no protocol trace.
    assert re.search(rf"to=<{re.escape(RCPT)}>, from=<dave@remote.test>, .*status=delivered, folder=maildir:INBOX",
                     text), text
    assert "LHLO" not in text and "DATA" not in text, text
    (got,) = env.files()
    assert got.endswith(raw.replace(b"\r\n", b"\n"))

    shutil.rmtree(env.maildir)
    p, where, log = _start_lmtp(env, "--listen", "127.0.0.1:0")
    try:
        env.pf.set(mailbox_transport=f"lmtp:inet:{where}")
        qid, raw = env.send("dave@remote.test", "over lmtp tcp")
        line = env.status(qid)
        assert "status=sent" in line and "delivered to maildir:INBOX" in line, line
    finally:
        env.pf.set(mailbox_transport="")
        assert _stop(p) == 0
    (got,) = env.files()
    assert got.endswith(raw.replace(b"\r\n", b"\n"))
