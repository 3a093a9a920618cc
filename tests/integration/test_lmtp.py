"""The LMTP server with real clients (smtplib.LMTP, swaks, raw sockets) on 127.0.0.1 ephemeral ports."""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading

import pytest
from lmtp_support import RawClient, Server, dot_stuff, maildir_messages, split_trace, to_wire, write_config

CORPUS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "corpus", "odd")
MSG = b"From: Bob <bob@example.org>\r\nTo: alice@example.com\r\nSubject: hello\r\n\r\nHi Alice.\r\n"


@pytest.fixture
def servers():
    started = []
    yield started
    for s in started:
        s.stop()


def start(servers, tmp_path, text, **kw) -> Server:
    s = Server(write_config(tmp_path, text), **kw)
    servers.append(s)
    return s


def lmtp_data(client: smtplib.LMTP, payload: bytes, n: int) -> list[tuple[int, bytes]]:
    """DATA with one reply per accepted recipient (smtplib.sendmail reads only one)."""
    code, msg = client.docmd("DATA")
    assert code == 354, (code, msg)
    client.send(dot_stuff(to_wire(payload)))
    return [client.getreply() for _ in range(n)]


def sieve_ready() -> None:
    from fetchdeliver import sieve

    if not (hasattr(sieve, "compile_file") and hasattr(sieve, "run")):
        pytest.skip("the Sieve interpreter (fetchdeliver.sieve.compile_file/run) is not there yet")


# -- protocol basics -------------------------------------------------------------------------------

def test_lhlo_lists_extensions_and_delivery_is_durable_and_exact(servers, tmp_path):
    md = tmp_path / "alice"
    s = start(servers, tmp_path, f'[[recipient]]\naddress = "alice@example.com"\nmaildir = "{md}"\n')
    with smtplib.LMTP(s.host, s.port) as c:
        code, text = c.ehlo("client.example")  # smtplib.LMTP sends LHLO
        assert code == 250
        for ext in ("pipelining", "8bitmime", "enhancedstatuscodes", "size"):
            assert c.has_extn(ext), text
        assert c.mail("bob@example.org") == (250, b"2.1.0 Ok")
        assert c.rcpt("alice@example.com")[0] == 250
        (code, msg), = lmtp_data(c, MSG, 1)
    assert code == 250 and msg.startswith(b"2.0.0 <alice@example.com>"), msg
    stored, = maildir_messages(md)
    trace, rest = split_trace(stored)
    assert rest == MSG.replace(b"\r\n", b"\n")
    assert trace.startswith(b"Return-Path: <bob@example.org>\nDelivered-To: alice@example.com\nReceived: ")
    assert b"for <alice@example.com>;" in trace


def test_smtplib_sendmail_single_recipient(servers, tmp_path):
    md = tmp_path / "all"
    s = start(servers, tmp_path, f'[delivery]\nmaildir = "{md}"\nstate_dir = "{tmp_path}/st"\n')
    with smtplib.LMTP(s.host, s.port) as c:
        assert c.sendmail("", ["anyone@anywhere.test"], MSG) == {}
    stored, = maildir_messages(md)
    assert stored.startswith(b"Return-Path: <>\n")  # the null sender
    assert stored.endswith(b"\n\nHi Alice.\n")


@pytest.mark.parametrize("keep_crlf", [False, True])
def test_corpus_bytes_survive(servers, tmp_path, keep_crlf):
    """Every odd message arrives as sent, minus dot-stuffing; CRLF -> LF unless keep_crlf."""
    md = tmp_path / "m"
    s = start(servers, tmp_path, f'[lmtp]\nkeep_crlf = {str(keep_crlf).lower()}\n'
                                 f'[delivery]\nmaildir = "{md}"\nstate_dir = "{tmp_path}/st"\n')
    names = sorted(n for n in os.listdir(CORPUS) if n.endswith(".eml"))
    payloads = []
    c = RawClient(s.host, s.port)
    assert c.reply()[0] == 220
    assert c.cmd("LHLO t")[0] == 250
    for name in names:
        with open(os.path.join(CORPUS, name), "rb") as f:
            wire = to_wire(f.read())
        payloads.append(wire)
        assert c.cmd("MAIL FROM:<a@example.org> BODY=8BITMIME")[0] == 250
        assert c.cmd("RCPT TO:<x@example.com>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(dot_stuff(wire))
        code, text = c.reply()
        assert code == 250, (name, text)
    # and a 2 MiB line: longer than any buffer on the way
    big = b"Subject: big\r\n\r\n" + b"y" * (2 * 1024 * 1024) + b"\r\n"
    payloads.append(big)
    assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
    assert c.cmd("RCPT TO:<x@example.com>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(dot_stuff(big))
    assert c.reply()[0] == 250
    assert c.cmd("QUIT")[0] == 221
    c.close()
    stored = sorted(split_trace(m)[1] for m in maildir_messages(md))
    expected = sorted(p if keep_crlf else p.replace(b"\r\n", b"\n") for p in payloads)
    assert stored == expected


@pytest.mark.parametrize("payload", [
    b"", b"x\r\n", b"ends with a dot.\r\n", b"Hello.\r\nWorld.\r\n.\r\n", b".\r\n", b"..\r\n",
    b"a\r\n.\r\n.b\r\n..c\r\n", b".leading\r\nmid.dle\r\n.\r\n.\r\n", b"x" * 70000 + b".\r\n",
    b"bare lf.\n.\nnot the end\r\n",
])
def test_dot_transparency(servers, tmp_path, payload):
    md = tmp_path / "m"
    s = start(servers, tmp_path, f'[lmtp]\nkeep_crlf = true\n'
                                 f'[delivery]\nmaildir = "{md}"\nstate_dir = "{tmp_path}/st"\n')
    c = RawClient(s.host, s.port)
    assert c.reply()[0] == 220
    c.send(b"LHLO t\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n")
    assert [c.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    c.send(dot_stuff(payload) if payload else b".\r\n")
    assert c.reply()[0] == 250
    assert c.cmd("NOOP")[0] == 250  # still in step with the client
    c.close()
    stored, = maildir_messages(md)
    assert split_trace(stored)[1] == payload


def test_line_ends_match_dovecot_lmtp(servers, tmp_path):
    """Differential: the same wire bytes to dovecot-lmtpd and to us give the same stored body."""
    if not os.path.exists("/usr/lib/dovecot/lmtp"):
        pytest.skip("dovecot-lmtpd is not installed (/usr/lib/dovecot/lmtp missing)")
    from dovecot import Dovecot, DovecotUnavailable, free_ports

    port = free_ports(1)[0]
    extra = f"service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n"
    try:
        dc = Dovecot({"alice": "x"}, protocols=("imap", "pop3", "lmtp"), extra_config=extra)
    except DovecotUnavailable as e:
        pytest.skip(str(e))
    payload = (b"Subject: ends\r\nX-A: 1\r\n\r\ncrlf line\r\nbare lf\nbare cr\rend\r\n.dot line\r\n"
               b"..two dots\r\n8bit \xe4\xf6\xfc\r\nnul \x00 byte\r\n\r\n")
    md = tmp_path / "ours"
    s = start(servers, tmp_path, f'[delivery]\nmaildir = "{md}"\nstate_dir = "{tmp_path}/st"\n')
    try:
        dc.start()
        import time

        deadline = time.monotonic() + 20
        while True:  # readiness poll of the extra listener
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, dc.read_log()
                time.sleep(0.05)
        results = []
        for host, p, rcpt in (("127.0.0.1", port, "alice"), (s.host, s.port, "alice")):
            with smtplib.LMTP(host, p) as c:
                c.ehlo("t")
                c.mail("s@example.org")
                assert c.rcpt(rcpt)[0] == 250
                results.append(lmtp_data(c, payload, 1)[0][0])
        assert results == [250, 250]
        theirs, = maildir_messages(dc.maildir("alice"))
    finally:
        dc.cleanup()
    ours, = maildir_messages(md)
    assert split_trace(ours)[1] == split_trace(theirs)[1]


# -- per-recipient results --------------------------------------------------------------------------

def test_three_recipients_three_answers(servers, tmp_path):
    good, blocked = tmp_path / "good", tmp_path / "blocked"
    blocked.write_text("a plain file where the Maildir should be\n")  # root ignores modes, not this
    s = start(servers, tmp_path, f"""
        [[recipient]]
        address = "good@example.com"
        maildir = "{good}"
        [[recipient]]
        address = "blocked@example.com"
        maildir = "{blocked}"
        """)
    with smtplib.LMTP(s.host, s.port) as c:
        c.ehlo("t")
        assert c.mail("bob@example.org")[0] == 250
        assert c.rcpt("good@example.com")[0] == 250
        code, msg = c.rcpt("nobody@example.com")
        assert (code, msg[:5]) == (550, b"5.1.1"), msg
        assert c.rcpt("blocked@example.com")[0] == 250
        replies = lmtp_data(c, MSG, 2)  # one per accepted recipient, in RCPT order
    (c1, m1), (c2, m2) = replies
    assert c1 == 250 and m1.startswith(b"2.0.0 <good@example.com>"), m1
    assert c2 == 451 and m2.startswith(b"4.") and b"blocked@example.com" in m2, m2
    assert b"blocked" in m2  # the reason names the folder
    assert len(maildir_messages(good)) == 1
    assert blocked.read_text().startswith("a plain file")


def test_sieve_reject_is_550_per_recipient(servers, tmp_path):
    sieve_ready()
    rules = tmp_path / "reject.sieve"
    rules.write_text('require "reject";\nif header :contains "subject" "hello" { reject "not today"; }\n')
    a, b = tmp_path / "a", tmp_path / "b"
    s = start(servers, tmp_path, f"""
        [[recipient]]
        address = "a@example.com"
        maildir = "{a}"
        rules = "{rules}"
        [[recipient]]
        address = "b@example.com"
        maildir = "{b}"
        """)
    with smtplib.LMTP(s.host, s.port) as c:
        c.ehlo("t")
        c.mail("bob@example.org")
        c.rcpt("a@example.com")
        c.rcpt("b@example.com")
        (c1, m1), (c2, m2) = lmtp_data(c, MSG, 2)
    assert c1 == 550 and m1.startswith(b"5.7.1") and b"not today" in m1, m1
    assert c2 == 250, m2
    assert maildir_messages(a) == [] and len(maildir_messages(b)) == 1


def test_recipient_delimiter_and_case(servers, tmp_path):
    md = tmp_path / "al"
    s = start(servers, tmp_path, f'[lmtp]\nrecipient_delimiter = "+"\n'
                                 f'[[recipient]]\naddress = "alice@example.com"\nmaildir = "{md}"\n')
    with smtplib.LMTP(s.host, s.port) as c:
        c.ehlo("t")
        c.mail("b@example.org")
        assert c.rcpt("Alice+Lists@EXAMPLE.com")[0] == 250
        assert c.rcpt("alicex@example.com")[0] == 550
        assert lmtp_data(c, MSG, 1)[0][0] == 250
    stored, = maildir_messages(md)
    assert b"Delivered-To: Alice+Lists@EXAMPLE.com\n" in stored


# -- clients and transports -------------------------------------------------------------------------

def test_swaks_over_tcp_and_unix_socket(servers, tmp_path):
    swaks = shutil.which("swaks")
    if not swaks:
        pytest.skip("swaks is not installed (apt-get install swaks)")
    md = tmp_path / "m"
    cfg = f'[delivery]\nmaildir = "{md}"\nstate_dir = "{tmp_path}/st"\n'
    tcp = start(servers, tmp_path, cfg)
    sock_path = str(tmp_path / "run" / "lmtp.sock")
    unix = start(servers, tmp_path, cfg, unix=sock_path)
    assert unix.path == sock_path
    for where in (["--server", f"{tcp.host}:{tcp.port}"], ["--socket", sock_path]):
        r = subprocess.run([swaks, "--protocol", "LMTP", *where, "--to", "u@example.com",
                            "--from", "s@example.org", "--header", f"Subject: via {where[0]}",
                            "--body", "swaks body"], capture_output=True, timeout=60, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "250 2.0.0" in r.stdout
    subjects = sorted(m.split(b"Subject: ", 1)[1].split(b"\n", 1)[0] for m in maildir_messages(md))
    assert subjects == [b"via --server", b"via --socket"]


def test_cli_command_on_unix_socket(tmp_path, fetchdeliver_cmd):
    md = tmp_path / "m"
    sock_path = str(tmp_path / "lmtp.sock")
    cfg = write_config(tmp_path, f'[delivery]\nmaildir = "{md}"\nstate_dir = "{tmp_path}/st"\n')
    proc = subprocess.Popen([sys.executable, "-m", "fetchdeliver", "lmtp", "--socket", sock_path,
                             "-c", cfg], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        line = proc.stderr.readline()
        while line and "listening on" not in line:
            line = proc.stderr.readline()
        assert "listening on " + sock_path in line, line
        with smtplib.LMTP(sock_path) as c:
            assert c.sendmail("s@example.org", ["x@example.com"], MSG) == {}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(maildir_messages(md)) == 1


# -- robustness --------------------------------------------------------------------------------------

def test_garbage_gets_500_501_and_others_are_served(servers, tmp_path):
    md = tmp_path / "m"
    s = start(servers, tmp_path, f'[delivery]\nmaildir = "{md}"\nstate_dir = "{tmp_path}/st"\n')
    bad = RawClient(s.host, s.port)
    assert bad.reply()[0] == 220
    assert bad.cmd(b"MAIL FROM:<a@b>")[0] == 503           # before LHLO
    assert bad.cmd(b"HELO x")[0] == 500                     # not LMTP
    assert bad.cmd(b"LHLO")[0] == 501
    assert bad.cmd(b"LHLO x")[0] == 250
    assert bad.cmd(b"DATA")[0] == 503                       # no recipients
    assert bad.cmd(b"MAIL TO:<a@b.example>")[0] == 501        # wrong keyword
    assert bad.cmd(b"MAIL FROM:")[0] == 501
    assert bad.cmd(b"RCPT TO:<x@y>")[0] == 503              # no MAIL
    code, text = bad.cmd(b"\xff\xfe\x00\x01 binary")
    assert code == 500 and text[0].startswith("5.5.2"), text  # enhanced codes on aiosmtpd's replies too
    assert bad.cmd(b"X" * 5000)[0] == 500                   # over-long command line
    # meanwhile another session works normally
    with smtplib.LMTP(s.host, s.port) as c:
        assert c.sendmail("s@example.org", ["x@example.com"], MSG) == {}
    # and the garbage session itself still answers
    assert bad.cmd(b"NOOP")[0] == 250
    bad.close()
    assert len(maildir_messages(md)) == 1


def test_message_size_limit_and_pipelining(servers, tmp_path):
    md = tmp_path / "m"
    s = start(servers, tmp_path, f'[lmtp]\nmax_message_size = 2000\n'
                                 f'[delivery]\nmaildir = "{md}"\nstate_dir = "{tmp_path}/st"\n')
    c = RawClient(s.host, s.port)
    assert c.reply()[0] == 220
    lhlo = c.cmd("LHLO t")
    assert "SIZE 2000" in lhlo[1]
    assert c.cmd("MAIL FROM:<a@b.example> SIZE=5000")[0] == 552
    # pipelined: MAIL, 2x RCPT, DATA in one write (RFC 2920)
    c.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nRCPT TO:<y@example.com>\r\nDATA\r\n")
    assert [c.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    c.send(dot_stuff(b"Subject: big\r\n\r\n" + (b"z" * 70 + b"\r\n") * 50))
    codes = [c.reply() for _ in range(2)]
    assert [x[0] for x in codes] == [552, 552] and all(x[1][0].startswith("5.3.4") for x in codes)
    # the session goes on: a small message in the same pipelined style
    c.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    c.send(dot_stuff(MSG))
    assert c.reply()[0] == 250
    c.close()
    assert len(maildir_messages(md)) == 1


def test_concurrent_sessions(servers, tmp_path):
    md = tmp_path / "m"
    s = start(servers, tmp_path, f'[delivery]\nmaildir = "{md}"\nstate_dir = "{tmp_path}/st"\n')
    errors = []

    def client(n):
        try:
            with smtplib.LMTP(s.host, s.port) as c:
                for i in range(5):
                    body = f"Subject: c{n} m{i}\r\n\r\nbody {n}/{i}\r\n".encode()
                    assert c.sendmail("s@example.org", ["x@example.com"], body) == {}
        except Exception as e:  # collected, asserted below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    bodies = sorted(split_trace(m)[1] for m in maildir_messages(md))
    assert bodies == sorted(f"Subject: c{n} m{i}\n\nbody {n}/{i}\n".encode() for n in range(8) for i in range(5))


def test_session_limit_and_idle_timeout(servers, tmp_path):
    s = start(servers, tmp_path, f'[lmtp]\nmax_sessions = 2\ntimeout = 1\n'
                                 f'[delivery]\nmaildir = "{tmp_path}/m"\nstate_dir = "{tmp_path}/st"\n')
    a, b = RawClient(s.host, s.port), RawClient(s.host, s.port)
    assert a.reply()[0] == 220 and b.reply()[0] == 220
    third = RawClient(s.host, s.port)
    code, text = third.reply()
    assert code == 421 and text[0].startswith("4.3.2"), text
    third.close()
    # idle sessions are closed by the server (recv returns EOF; bounded by the socket timeout)
    for c in (a, b):
        c.sock.settimeout(60)
        assert c.sock.recv(100) == b""
        c.close()
    # with the idle ones gone, a new session is welcome
    d = RawClient(s.host, s.port)
    assert d.reply()[0] == 220
    d.close()
