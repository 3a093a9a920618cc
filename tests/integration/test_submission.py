"""The submission server (RFC 6409) with real clients (Python's smtplib, swaks, msmtp) and a real
relay (an aiosmtpd sink on 127.0.0.1): logins, the sender checks, the queue's retries and
bounces, the Sent copy, local delivery, STARTTLS and implicit TLS, the daemon and the command."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import types

import pytest
from submission_support import World, files, maildir_of, wait_for

from fetchdeliver.message import Message

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

BODY = (b"From: Alice <alice@example.org>\r\nTo: Carol <carol@remote.example>\r\nSubject: hello\r\n"
        b"Message-ID: <m1@example.org>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\n"
        b"Hi Carol,\r\n.leading dot stays\r\n\xc3\xa9t\xc3\xa9 8-bit line\r\n")


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def ca():
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


def _client(world, user="alice", password="secret", mech="PLAIN") -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", world.port, timeout=30)
    s.ehlo("client.test")
    s.user, s.password = user, password
    code, text = s.auth(mech, {"PLAIN": s.auth_plain, "LOGIN": s.auth_login}[mech], initial_response_ok=False)
    assert code == 235, text
    return s


def _tail_after_added(data: bytes, original: bytes) -> bytes:
    """The message as sent must be `original` with header lines added on top only."""
    assert data.endswith(original), data[:400]
    return data[: len(data) - len(original)]


# -- the happy paths, with each AUTH mechanism ------------------------------------------------------

@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_smtplib_each_mechanism_relays_byte_exact_and_files_a_sent_copy(world, mech):
    s = _client(world, mech=mech)
    for ext in ("size", "8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes", "auth"):
        assert s.has_extn(ext), ext
    assert set(s.esmtp_features["auth"].split()) >= {"PLAIN", "LOGIN"}
    assert not s.has_extn("starttls")  # no certificate configured
    s.sendmail("alice@example.org", ["carol@remote.example"], BODY)
    s.quit()
    got = wait_for(lambda: world.sink.messages, what="the relay to receive the message")
    assert len(got) == 1 and got[0].mail_from == "alice@example.org" and got[0].rcpt_tos == ["carol@remote.example"]
    added = _tail_after_added(got[0].data, BODY)
    assert added.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby mail.test with ESMTPA")
    assert b"(authenticated as alice)" in added
    assert b"Message-ID" not in added and b"Date:" not in added  # both were there already
    sent = world.sent()
    assert len(sent) == 1 and sent[0].endswith(":2,S")
    with open(sent[0], "rb") as f:
        copy = f.read()
    assert copy.endswith(BODY.replace(b"\r\n", b"\n"))
    # The queue forgets the message once the relay's 250 is in, a moment after the sink has it.
    assert wait_for(lambda: world.queue.items() == [], what="the queue to forget the relayed message")


def test_missing_date_and_message_id_are_added_on_top(world):
    raw = b"From: alice@example.org\r\nTo: carol@remote.example\r\nSubject: bare\r\n\r\nbody\r\n"
    s = _client(world)
    s.sendmail("alice@example.org", ["carol@remote.example"], raw)
    s.quit()
    data = wait_for(lambda: world.sink.messages, what="relay")[0].data
    added = _tail_after_added(data, raw)
    m = Message(added + b"\r\n")
    assert m.get("Message-ID", "").endswith("@mail.test>")
    assert m.get("Date")
    assert len(m.get_all("Message-ID")) == 1 and len(m.get_all("Date")) == 1


def test_local_recipient_is_delivered_directly_remote_one_through_the_queue(world):
    s = _client(world)
    s.sendmail("alice@example.org", ["bob@example.net", "carol@remote.example"], BODY)
    s.quit()
    # bob is local (passwd-file address=): in his INBOX at once, before the 250
    inbox = world.inbox("bob")
    assert len(inbox) == 1
    with open(inbox[0], "rb") as f:
        raw = f.read()
    assert raw.startswith(b"Return-Path: <alice@example.org>\nDelivered-To: bob@example.net\nReceived: ")
    assert raw.endswith(BODY.replace(b"\r\n", b"\n"))
    got = wait_for(lambda: world.sink.messages, what="relay")
    assert [m.rcpt_tos for m in got] == [["carol@remote.example"]]


def test_local_recipients_sieve_runs(world):
    home = os.path.join(world.root, "home", "bob")
    with open(os.path.join(home, ".dovecot.sieve"), "w") as f:
        f.write('require "fileinto";\nif header :contains "subject" "hello" { fileinto "Friends"; }\n')
    s = _client(world)
    s.sendmail("alice@example.org", ["bob@example.net"], BODY)
    s.quit()
    assert len(files(os.path.join(maildir_of(world.root, "bob"), ".Friends"))) == 1
    assert world.inbox("bob") == []


def test_local_recipient_rejecting_gives_the_sender_a_bounce(world):
    with open(os.path.join(world.root, "home", "bob", ".dovecot.sieve"), "w") as f:
        f.write('require "reject";\nreject "not from you";\n')
    s = _client(world)
    s.sendmail("alice@example.org", ["bob@example.net"], BODY)
    s.quit()
    assert world.inbox("bob") == []
    inbox = wait_for(lambda: world.inbox("alice"), what="the bounce in alice's INBOX")
    with open(inbox[0], "rb") as f:
        raw = f.read()
    assert b"Undelivered Mail Returned to Sender" in raw and b"not from you" in raw
    assert world.sink.messages == []


def test_sent_copy_goes_to_the_mailbox_marked_sent(world):
    root = maildir_of(world.root, "alice")
    for d in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(root, ".Gesendet", d), exist_ok=True)
    with open(os.path.join(root, "fetchdeliver-special-use"), "w") as f:
        f.write("Gesendet\t\\Sent\n")
    s = _client(world)
    s.sendmail("alice@example.org", ["carol@remote.example"], BODY)
    s.quit()
    assert len(files(os.path.join(root, ".Gesendet"), "cur")) == 1
    assert world.sent() == []


# -- refusals -----------------------------------------------------------------------------------------

def test_no_login_no_relaying(world):
    s = smtplib.SMTP("127.0.0.1", world.port, timeout=30)
    s.ehlo("client.test")
    code, text = s.mail("alice@example.org")
    assert (code, text[:5]) == (530, b"5.7.0")
    code, text = s.rcpt("carol@remote.example")
    assert (code, text[:5]) == (530, b"5.7.0")
    code, text = s.docmd("DATA")
    assert code in (503, 530)
    s.quit()
    assert world.queue.items() == [] and world.sink.messages == []


def test_wrong_password_is_refused(world):
    s = smtplib.SMTP("127.0.0.1", world.port, timeout=30)
    s.ehlo("client.test")
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        s.login("alice", "wrong")
    assert e.value.smtp_code == 535 and e.value.smtp_error.startswith(b"5.7.8")
    code, _ = s.mail("alice@example.org")
    assert code == 530
    # smtplib's login() tried PLAIN and then LOGIN: two failures so far
    code, text = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice\0third").decode())
    assert (code, text[:5]) == (421, b"4.7.0")  # the third failure ends the connection
    with pytest.raises(smtplib.SMTPServerDisconnected):
        s.ehlo()


def test_alice_sending_as_bob_is_refused(world):
    s = _client(world)
    code, text = s.mail("bob@example.net")
    assert (code, text[:5]) == (553, b"5.7.1")
    # her envelope, bob's From:
    s.rset()
    forged = BODY.replace(b"From: Alice <alice@example.org>", b"From: Bob <bob@example.net>")
    with pytest.raises(smtplib.SMTPDataError) as e:
        s.sendmail("alice@example.org", ["carol@remote.example"], forged)
    assert e.value.smtp_code == 553 and e.value.smtp_error.startswith(b"5.7.1")
    # her second address is hers
    s.sendmail("a.smith@example.org", ["carol@remote.example"],
               BODY.replace(b"alice@example.org", b"a.smith@example.org"))
    s.quit()
    got = wait_for(lambda: world.sink.messages, what="relay")
    assert [m.mail_from for m in got] == ["a.smith@example.org"]
    assert len(world.sent()) == 1


def test_aliases_and_domains_from_the_config(tmp_path):
    w = World(tmp_path, submission='aliases = { alice = ["postmaster@example.org", "@example.com"] }\n')
    try:
        s = _client(w)
        for sender in ("postmaster@example.org", "anything@example.com"):
            s.sendmail(sender, ["carol@remote.example"], BODY.replace(b"alice@example.org", sender.encode()))
        code, _ = s.mail("x@example.net")
        assert code == 553
        s.quit()
        wait_for(lambda: len(w.sink.messages) == 2, what="two messages at the relay")
    finally:
        w.stop()


def test_recipient_and_rate_limits(tmp_path):
    w = World(tmp_path, submission='max_recipients = 2\nrate_limit = "2/1h"\n')
    try:
        s = _client(w)
        s.mail("alice@example.org")
        assert s.rcpt("c1@remote.example")[0] == 250
        assert s.rcpt("c2@remote.example")[0] == 250
        code, text = s.rcpt("c3@remote.example")
        assert (code, text[:5]) == (452, b"4.5.3")
        s.rset()
        s.sendmail("alice@example.org", ["c1@remote.example"], BODY)
        s.sendmail("alice@example.org", ["c1@remote.example"], BODY)
        code, text = s.mail("alice@example.org")
        assert (code, text[:5]) == (451, b"4.7.1")
        s.quit()
        # the limit is per user: bob still may
        b = _client(w, "bob", "secret2")
        b.sendmail("bob@example.net", ["c1@remote.example"], BODY.replace(b"alice@example.org", b"bob@example.net"))
        b.quit()
    finally:
        w.stop()


def test_dropped_connection_during_data_queues_nothing(world):
    sock = socket.create_connection(("127.0.0.1", world.port), timeout=30)
    f = sock.makefile("rb")

    def cmd(line: bytes) -> bytes:
        sock.sendall(line + b"\r\n")
        reply = f.readline()
        while reply[3:4] == b"-":
            reply = f.readline()
        return reply

    f.readline()
    assert cmd(b"EHLO client.test").startswith(b"250")
    assert cmd(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret")).startswith(b"235")
    assert cmd(b"MAIL FROM:<alice@example.org>").startswith(b"250")
    assert cmd(b"RCPT TO:<carol@remote.example>").startswith(b"250")
    assert cmd(b"DATA").startswith(b"354")
    sock.sendall(BODY[:60])
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    # A complete message afterwards: once it has arrived, the dropped one would have too.
    s = _client(world)
    s.sendmail("alice@example.org", ["dave@remote.example"], BODY)
    s.quit()
    got = wait_for(lambda: world.sink.messages, what="relay")
    assert [m.rcpt_tos for m in got] == [["dave@remote.example"]]
    assert world.queue.items() == [] and len(world.sent()) == 1


def test_pipelined_commands_get_their_answers_in_order(world):
    sock = socket.create_connection(("127.0.0.1", world.port), timeout=30)
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(b"EHLO client.test\r\n")
    while f.readline()[3:4] == b"-":
        pass
    sock.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n")
    assert f.readline().startswith(b"235 2.7.0")
    sock.sendall(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<carol@remote.example>\r\n"
                 b"RCPT TO:<dave@remote.example>\r\nDATA\r\n")
    replies = [f.readline() for _ in range(4)]
    assert [r[:9] for r in replies] == [b"250 2.1.0", b"250 2.1.5", b"250 2.1.5", b"354 End d"]
    sock.sendall(BODY + b".\r\nQUIT\r\n")
    assert f.readline().startswith(b"250 2.0.0")
    assert f.readline().startswith(b"221")
    sock.close()
    wait_for(lambda: len(world.sink.messages) == 2, what="both recipients at the relay")


def test_auth_policy_on_a_non_loopback_plaintext_connection():
    from fetchdeliver.submission.server import SubmissionSession

    def fake(peer, secure=False, allow=False):
        return types.SimpleNamespace(secure=secure, session=types.SimpleNamespace(peer=peer),
                                     server=types.SimpleNamespace(config=types.SimpleNamespace(
                                         allow_plaintext_auth=allow)))
    may = SubmissionSession.may_authenticate
    assert may(fake(("127.0.0.1", 1))) and may(fake(("::1", 1, 0, 0)))
    assert not may(fake(("192.0.2.7", 1)))
    assert may(fake(("192.0.2.7", 1), secure=True))
    assert may(fake(("192.0.2.7", 1), allow=True))


# -- the relay's answers: retried, bounced ----------------------------------------------------------

def test_relay_4xx_then_250_is_retried_and_delivered_once(tmp_path):
    tries = []

    def policy(addr):
        tries.append(addr)
        return "451 4.3.0 try again later" if len(tries) == 1 else None
    w = World(tmp_path, rcpt_policy=policy)
    try:
        s = _client(w)
        s.sendmail("alice@example.org", ["carol@remote.example"], BODY)
        s.quit()
        wait_for(lambda: w.sink.messages, what="the retried message")
        wait_for(lambda: w.queue.items() == [], what="an empty queue")
        assert len(tries) == 2 and len(w.sink.messages) == 1
        assert w.inbox("alice") == []  # no bounce, no delay notice
    finally:
        w.stop()


def test_relay_5xx_bounces_into_the_senders_inbox(tmp_path):
    w = World(tmp_path, rcpt_policy=lambda a: "550 5.1.1 no such user here")
    try:
        s = _client(w)
        s.sendmail("alice@example.org", ["nobody@remote.example"], BODY)
        s.quit()
        inbox = wait_for(lambda: w.inbox("alice"), what="the bounce in alice's INBOX")
        with open(inbox[0], "rb") as f:
            bounce = Message(f.read())
        assert bounce.get("Subject") == "Undelivered Mail Returned to Sender"
        assert b"nobody@remote.example" in bounce.raw and b"5.1.1" in bounce.raw
        assert b"Delivered-To: alice@example.org" in bounce.raw
        assert w.sink.messages == []
        wait_for(lambda: w.queue.items() == [], what="an empty queue")
    finally:
        w.stop()


# -- TLS ------------------------------------------------------------------------------------------------

def _cert_files(ca, tmp_path):
    cert = ca.issue_cert("127.0.0.1", "localhost")
    c, k = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(c))
    cert.private_key_pem.write_to_path(str(k))
    return str(c), str(k)


def test_starttls_and_implicit_tls(tmp_path, ca):
    w = World(tmp_path, ssl_files=_cert_files(ca, tmp_path), tls_listen=True)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    try:
        s = smtplib.SMTP("127.0.0.1", w.port, timeout=30)
        s.ehlo("client.test")
        assert s.has_extn("starttls")
        s.starttls(context=ctx)
        s.ehlo("client.test")
        s.login("alice", "secret")
        s.sendmail("alice@example.org", ["carol@remote.example"], BODY)
        s.quit()
        t = smtplib.SMTP_SSL("127.0.0.1", w.tls_port, timeout=30, context=ctx)
        t.ehlo("client.test")
        assert not t.has_extn("starttls")
        t.login("alice", "secret")
        t.sendmail("alice@example.org", ["dave@remote.example"], BODY)
        t.quit()
        got = wait_for(lambda: len(w.sink.messages) == 2 and w.sink.messages, what="two messages")
        assert all(b"with ESMTPSA" in m.data for m in got)
    finally:
        w.stop()


# -- real clients -----------------------------------------------------------------------------------

@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks_each_mechanism(world, mech):
    exe = shutil.which("swaks")
    if exe is None:
        pytest.skip("swaks is not installed (apt-get install swaks)")
    out = subprocess.run([exe, "--server", f"127.0.0.1:{world.port}", "--auth", mech, "--auth-user", "alice",
                          "--auth-password", "secret", "--from", "alice@example.org", "--to", "carol@remote.example",
                          "--header", "From: alice@example.org", "--header", "Subject: swaks test",
                          "--body", "sent by swaks"], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stdout.decode()[-2000:]
    got = wait_for(lambda: world.sink.messages, what="relay")
    assert b"sent by swaks" in got[0].data and b"(authenticated as alice)" in got[0].data
    # and a forged sender fails with swaks's exit code for a refused MAIL FROM
    bad = subprocess.run([exe, "--server", f"127.0.0.1:{world.port}", "--auth", mech, "--auth-user", "alice",
                          "--auth-password", "secret", "--from", "bob@example.net", "--to", "carol@remote.example"],
                         capture_output=True, timeout=60)
    assert bad.returncode != 0 and b"553 5.7.1" in bad.stdout


def test_swaks_without_auth_gets_530(world):
    exe = shutil.which("swaks")
    if exe is None:
        pytest.skip("swaks is not installed (apt-get install swaks)")
    out = subprocess.run([exe, "--server", f"127.0.0.1:{world.port}", "--from", "alice@example.org",
                          "--to", "carol@remote.example"], capture_output=True, timeout=60)
    assert out.returncode != 0 and b"530 5.7.0" in out.stdout


@pytest.mark.parametrize("tls,mech", [(False, "plain"), (True, "login")])
def test_msmtp(tmp_path, ca, tls, mech):
    exe = shutil.which("msmtp")
    if exe is None:
        pytest.skip("msmtp is not installed (apt-get install msmtp)")
    w = World(tmp_path, ssl_files=_cert_files(ca, tmp_path) if tls else None)
    try:
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        rc = tmp_path / "msmtprc"
        rc.write_text(f"account default\nhost 127.0.0.1\nport {w.port}\nauth {mech}\nuser alice\npassword secret\n"
                      f"from alice@example.org\n"
                      + (f"tls on\ntls_starttls on\ntls_trust_file {ca_file}\n" if tls else "tls off\n"))
        rc.chmod(0o600)
        out = subprocess.run([exe, "-C", str(rc), "-t"], input=BODY, capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr.decode()
        got = wait_for(lambda: w.sink.messages, what="relay")
        assert got[0].rcpt_tos == ["carol@remote.example"]  # -t: recipients from To:
        assert got[0].data.endswith(BODY)
        assert (b"with ESMTPSA" in got[0].data) == tls
        assert len(w.sent()) == 1
    finally:
        w.stop()


# -- the command and the daemon -----------------------------------------------------------------

def _env():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return dict(os.environ, PYTHONPATH=root)


def _wait_listening(proc, word: str) -> int:
    lines = []

    def read():
        for line in proc.stderr:
            lines.append(line)
            if word in line and "listening on" in line:
                return
    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(60)
    for line in lines:
        if word in line and "listening on" in line:
            return int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    raise AssertionError("no 'listening on' line: " + "".join(lines))


@pytest.mark.parametrize("how", ["submission", "daemon"])
def test_command_and_daemon_serve_submission(tmp_path, how):
    w = World(tmp_path)
    w.server.stop()  # keep the sink, the users and the config; the process serves instead
    w.runner.stop(timeout=10)
    args = [sys.executable, "-m", "fetchdeliver", "-v", how, "-c", w.config_file]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        port = _wait_listening(proc, "submission")
        s = smtplib.SMTP("127.0.0.1", port, timeout=30)
        s.login("alice", "secret")
        s.sendmail("alice@example.org", ["carol@remote.example", "bob@example.net"], BODY)
        s.quit()
        wait_for(lambda: w.sink.messages, what="relay")
        assert len(w.inbox("bob")) == 1 and len(w.sent()) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        w.sink.stop()
    assert proc.returncode == 0


@pytest.mark.parametrize("authenticators", ["plain", "login"])
def test_neomutt_smtp_url(tmp_path, authenticators):
    """neomutt (batch mode: the same SMTP code as its compose screen) with smtp_url and a password."""
    exe = shutil.which("neomutt")
    if exe is None:
        pytest.skip("neomutt is not installed (apt-get install neomutt)")
    w = World(tmp_path)
    try:
        home = tmp_path / "mutthome"
        home.mkdir()
        rc = home / "muttrc"
        rc.write_text(f'set smtp_url = "smtp://alice@127.0.0.1:{w.port}/"\nset smtp_pass = "secret"\n'
                      f'set smtp_authenticators = "{authenticators}"\nset ssl_starttls = no\nset ssl_force_tls = no\n'
                      'set from = "Alice <alice@example.org>"\nset use_from = yes\nset record = ""\n'
                      'set header_cache = ""\nset message_cachedir = ""\nset folder = "/dev/null"\n')
        env = dict(os.environ, HOME=str(home), TERM="dumb", TMPDIR=str(tmp_path))
        out = subprocess.run([exe, "-n", "-F", str(rc), "-s", "from neomutt", "--", "carol@remote.example"],
                             input=b"written in neomutt\n", capture_output=True, env=env, timeout=60)
        assert out.returncode == 0, (out.stdout + out.stderr).decode()[-2000:]
        got = wait_for(lambda: w.sink.messages, what="relay")
        m = Message(got[0].data)
        assert got[0].mail_from == "alice@example.org" and m.get("Subject") == "from neomutt"
        assert b"written in neomutt" in got[0].data and len(w.sent()) == 1
    finally:
        w.stop()


def test_bdat_chunks_are_one_message(world):
    """CHUNKING (RFC 3030): no installed client sends BDAT, so this speaks it on a socket."""
    sock = socket.create_connection(("127.0.0.1", world.port), timeout=30)
    f = sock.makefile("rb")

    def reply() -> bytes:
        r = f.readline()
        while r[3:4] == b"-":
            r = f.readline()
        return r

    reply()
    sock.sendall(b"EHLO client.test\r\n")
    lines = [f.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(f.readline())
    assert any(b"CHUNKING" in ln for ln in lines)
    sock.sendall(b"BDAT 3 LAST\r\nabc")
    assert reply().startswith(b"530 5.7.0")  # no login: refused, and the 3 octets were read
    sock.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n")
    assert reply().startswith(b"235")
    a, b = BODY[:100], BODY[100:]   # the split falls inside a line; a line starting with "." is sent as is
    sock.sendall(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<carol@remote.example>\r\n"
                 + f"BDAT {len(a)}\r\n".encode() + a + f"BDAT {len(b)} LAST\r\n".encode() + b)
    replies = [reply() for _ in range(4)]
    assert replies[0].startswith(b"250") and replies[1].startswith(b"250")
    assert replies[2].startswith(b"250 2.0.0 100 octets received")
    assert replies[3].startswith(b"250 2.0.0 Ok: queued as")
    sock.sendall(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<carol@remote.example>\r\nBDAT 1\r\nxDATA\r\nRSET\r\n")
    replies = [reply() for _ in range(5)]
    assert replies[3].startswith(b"503 5.5.1") and replies[4].startswith(b"250")
    sock.sendall(b"QUIT\r\n")
    reply()
    sock.close()
    got = wait_for(lambda: world.sink.messages, what="relay")
    assert len(got) == 1 and _tail_after_added(got[0].data, BODY).startswith(b"Received: ")


def test_neomutt_compose_screen_in_tmux(tmp_path):
    """neomutt interactively: the compose screen, `y` sends through smtp_url (STARTTLS, AUTH LOGIN)."""
    for tool in ("neomutt", "tmux"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install {tool})")
    from test_imap_clients import Tmux  # the same tmux driver as the IMAP client tests

    ca_obj = pytest.importorskip("trustme").CA()
    w = World(tmp_path, ssl_files=_cert_files(ca_obj, tmp_path))
    tmux = None
    try:
        home = tmp_path / "mutthome"
        home.mkdir()
        ca_file = tmp_path / "ca.pem"
        ca_obj.cert_pem.write_to_path(str(ca_file))
        body = tmp_path / "body.txt"
        body.write_text("typed in the compose screen\n")
        rc = home / "muttrc"
        rc.write_text(f'set smtp_url = "smtp://alice@127.0.0.1:{w.port}/"\nset smtp_pass = "secret"\n'
                      'set smtp_authenticators = "login"\nset ssl_starttls = yes\nset ssl_force_tls = yes\n'
                      f'set certificate_file = "{ca_file}"\nset ssl_verify_host = no\n'
                      'set from = "Alice <alice@example.org>"\nset use_from = yes\nset record = ""\n'
                      'set editor = "true"\nset abort_unmodified = no\nset edit_headers = no\nset autoedit = no\nset help = no\n'
                      'set header_cache = ""\nset message_cachedir = ""\nset folder = "/dev/null"\n'
                      'set sleep_time = 0\nset wait_key = no\n')
        env = dict(os.environ, HOME=str(home), TERM="xterm", TMPDIR=str(tmp_path))
        tmux = Tmux(str(tmp_path / "tmux.sock"), env,
                    f"neomutt -n -F {rc} -s 'composed in tmux' -i {body} carol@remote.example")
        # neomutt confirms the To: and Subject: it was given (one line prompts), then shows the compose menu
        tmux.wait(lambda s: s.rstrip().endswith("To: carol@remote.example"), "the To: prompt")
        tmux.keys("Enter")
        tmux.wait(lambda s: s.rstrip().endswith("Subject: composed in tmux"), "the Subject: prompt")
        tmux.keys("Enter")
        tmux.wait(lambda s: "Compose" in s and "composed in tmux" in s, "the compose screen")
        tmux.keys("y")
        got = wait_for(lambda: w.sink.messages, what="the message at the relay")
        assert b"typed in the compose screen" in got[0].data and b"with ESMTPSA" in got[0].data
        assert got[0].mail_from == "alice@example.org" and len(w.sent()) == 1  # filed before it was queued
    finally:
        if tmux is not None:
            tmux.kill()
        w.stop()


def test_too_big_is_refused_with_data_and_with_bdat(tmp_path):
    w = World(tmp_path, submission="max_message_size = 2048\n")
    try:
        s = _client(w)
        assert s.esmtp_features["size"] == "2048"
        big = BODY + b"x" * 3000 + b"\r\n"
        with pytest.raises(smtplib.SMTPSenderRefused) as e:   # SIZE= in MAIL FROM
            s.sendmail("alice@example.org", ["carol@remote.example"], big)
        assert e.value.smtp_code == 552
        s.rset()
        s.mail("alice@example.org")
        s.rcpt("carol@remote.example")
        s.send(f"BDAT {len(big)} LAST\r\n".encode() + big)
        code, text = s.getreply()
        assert (code, text[:5]) == (552, b"5.3.4")
        s.sendmail("alice@example.org", ["carol@remote.example"], BODY)  # the session goes on
        s.quit()
        got = wait_for(lambda: w.sink.messages, what="relay")
        assert len(got) == 1 and got[0].data.endswith(BODY)
    finally:
        w.stop()


# -- SCRAM (fetchdeliver/sasl.py, as the IMAP server) --------------------------------------------------

def _scram_authobject(user: str, password: str, mech: str = "SCRAM-SHA-256"):
    """An smtplib auth object (smtplib.SMTP.auth) driving scramp's client (a SCRAM client nobody here wrote)."""
    import scramp

    client = scramp.ScramClient([mech], user, password)

    def step(challenge=None):
        if challenge is None:                   # the initial response (RFC 4954)
            return client.get_client_first()
        if not challenge.startswith(b"v="):     # server-first -> client-final
            client.set_server_first(challenge.decode())
            return client.get_client_final()
        client.set_server_final(challenge.decode())   # raises unless the server proved it knows the key
        return ""

    return step


def _doveadm_scram_line(password: str) -> str:
    exe = shutil.which("doveadm")
    if exe is None:
        pytest.skip("doveadm is not installed (apt-get install dovecot-core)")
    return subprocess.run([exe, "pw", "-s", "SCRAM-SHA-256", "-p", password], check=True,
                          capture_output=True, text=True, timeout=60).stdout.strip()


def test_smtplib_scram_sha256_with_a_passwd_line_from_doveadm(world):
    line = _doveadm_scram_line("pencil")
    assert line.startswith("{SCRAM-SHA-256}4096,")
    with open(world.passwd) as f:
        lines = f.readlines()
    with open(world.passwd, "w") as f:    # alice's password now only as SCRAM keys, the rest of her line kept
        f.writelines(f"alice:{line}:{ln.split(':', 2)[2]}" if ln.startswith("alice:") else ln for ln in lines)
    s = smtplib.SMTP("127.0.0.1", world.port, timeout=30)
    s.ehlo("client.test")
    assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-1"]
    code, text = s.auth("SCRAM-SHA-256", _scram_authobject("alice", "pencil"))
    assert code == 235, text
    s.sendmail("alice@example.org", ["carol@remote.example"], BODY)
    s.quit()
    got = wait_for(lambda: world.sink.messages, what="the relay to receive the message")
    assert got[0].data.endswith(BODY) and b"(authenticated as alice)" in got[0].data
    # a wrong password: 535, and the server's signature is never sent
    s = smtplib.SMTP("127.0.0.1", world.port, timeout=30)
    s.ehlo("client.test")
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        s.auth("SCRAM-SHA-256", _scram_authobject("alice", "wrong"))
    assert e.value.smtp_code == 535
    # "*" cancels: 501, and the connection goes on
    code, text = s.docmd("AUTH", "SCRAM-SHA-256")
    assert (code, text) == (334, b"")
    assert s.docmd("*")[0] == 501
    assert s.noop()[0] == 250
    s.quit()


def test_per_address_connection_cap_answers_421(tmp_path):
    w = World(tmp_path, submission="max_connections_per_ip = 1\n")
    try:
        first = smtplib.SMTP("127.0.0.1", w.port, timeout=30)
        s = socket.create_connection(("127.0.0.1", w.port), timeout=30)
        line = s.makefile("rb").readline()
        s.close()
        assert line.startswith(b"421 4.3.2 Too many connections from your address (max_connections_per_ip=1)")
        first.quit()

        def greeted():    # the place is given back when the first connection has closed
            c = socket.create_connection(("127.0.0.1", w.port), timeout=30)
            try:
                return c.makefile("rb").readline().startswith(b"220 ")
            finally:
                c.close()

        wait_for(greeted, what="the first connection's place to be given back")
    finally:
        w.stop()


class _TokenBackend:
    """A backend plugin with a token validator (imapserver/plugin.py): token "tok-USER" is USER's."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def validate_token(self, user: str, token: str):
        owner = token[4:] if token.startswith("tok-") else None
        found = self.inner.scram_credentials(owner) if owner else None
        return found[1] if found else None


@pytest.mark.parametrize("mech", ["OAUTHBEARER", "XOAUTH2"])
def test_smtplib_token_mechanisms_with_a_token_validating_backend(world, mech):
    world.server.server.config.authenticator = _TokenBackend(world.server.server.config.authenticator)

    def blob(user, token):
        if mech == "OAUTHBEARER":
            return f"n,a={user},\x01auth=Bearer {token}\x01\x01"
        return f"user={user}\x01auth=Bearer {token}\x01\x01"

    s = smtplib.SMTP("127.0.0.1", world.port, timeout=30)
    s.ehlo("client.test")
    assert s.esmtp_features["auth"].split()[-2:] == ["OAUTHBEARER", "XOAUTH2"]
    # a token that is not alice's: the RFC 7628 error challenge (JSON), answered with \x01, then 535
    code, text = s.docmd("AUTH", f"{mech} " + base64.b64encode(blob("alice", "tok-bob").encode()).decode())
    assert code == 334 and b"invalid_token" in base64.b64decode(text)
    assert s.docmd(base64.b64encode(b"\x01").decode())[0] == 535
    code, text = s.auth(mech, lambda challenge=None: blob("alice", "tok-alice"))
    assert code == 235, text
    s.sendmail("alice@example.org", ["carol@remote.example"], BODY)
    s.quit()
    got = wait_for(lambda: world.sink.messages, what="the relay to receive the message")
    assert b"(authenticated as alice)" in got[0].data
