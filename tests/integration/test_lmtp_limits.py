"""The LMTP server's connection caps (one process and pre-forked) and its survival of a descriptor shortage."""

from __future__ import annotations

import re
import smtplib
import socket
import subprocess
import sys
import time

import pytest

from lmtp_support import Server, maildir_messages, write_config

pytestmark = pytest.mark.timeout(180)


def wait_for(cond, what: str, deadline: float = 60.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def greet(port: int, source: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    return s, s.makefile("rb").readline()


def _caps(port: int) -> None:
    held = []
    try:
        for _ in range(2):
            s, g = greet(port)
            assert g.startswith(b"220 "), g
            held.append(s)
        s, g = greet(port)
        assert g.startswith(b"421 4.3.2 Too many connections from your address"), g
        assert s.recv(100) == b""
        s.close()
        for _ in range(2):
            s, g = greet(port, "127.0.0.2")
            assert g.startswith(b"220 "), g
            held.append(s)
        s, g = greet(port, "127.0.0.3")
        assert g.startswith(b"421 4.3.2 Too many connections to this server"), g
        s.close()
        # A closed session gives its place back (in whichever process served it).
        for s in held[:2]:
            s.close()
        del held[:2]

        def delivered() -> bool:
            try:
                with smtplib.LMTP("127.0.0.1", port) as c:
                    return c.sendmail("s@example.org", ["me@example.com"], b"Subject: hi\r\n\r\nx\r\n") == {}
            except smtplib.SMTPServerDisconnected:
                return False
            except smtplib.SMTPConnectError:
                return False

        assert wait_for(delivered, "a place after two sessions closed")
    finally:
        for s in held:
            s.close()


def test_lmtp_caps_in_one_process(tmp_path):
    md = tmp_path / "m"
    cfg = write_config(tmp_path, f"""
        [lmtp]
        listen = "127.0.0.1:0"
        max_connections = 4
        max_connections_per_ip = 2
        [[recipient]]
        address = "me@example.com"
        maildir = "{md}"
        """)
    srv = Server(cfg)
    try:
        _caps(srv.port)
        assert len(maildir_messages(md)) == 1
    finally:
        srv.stop()


def _start(tmp_path, body: str, nofile: int | None = None, processes: int = 2):
    cfg = tmp_path / "config.toml"
    cfg.write_text(body + f'\n[delivery]\nstate_dir = "{tmp_path}/state"\n')
    log = tmp_path / "lmtp.log"

    def lower():
        if nofile:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen([sys.executable, "-m", "fetchdeliver", "lmtp", "-c", str(cfg), "--processes",
                             str(processes)], stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            preexec_fn=lower)
    m = wait_for(lambda: re.search(rb"listening on 127\.0\.0\.1:(\d+)", log.read_bytes()) or
                 (proc.poll() is not None and pytest.fail(log.read_text())), "the LMTP server", 30)
    return proc, int(m.group(1)), log


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_lmtp_caps_count_every_process(tmp_path):
    md = tmp_path / "m"
    proc, port, log = _start(tmp_path, f"""
[lmtp]
listen = "127.0.0.1:0"
max_connections = 4
max_connections_per_ip = 2
[[recipient]]
address = "me@example.com"
maildir = "{md}"
""")
    try:
        _caps(port)      # two sessions at once from one address: one is the child's, and still counted
        assert len(maildir_messages(md)) == 1
    finally:
        _stop(proc)
    assert proc.returncode == 0, log.read_text()


def test_lmtp_under_a_low_open_file_limit_sheds_and_recovers(tmp_path):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 800:
        pytest.skip("this test needs 800 open files in the test process")
    md = tmp_path / "m"
    proc, port, log = _start(tmp_path, f"""
[lmtp]
listen = "127.0.0.1:0"
max_connections = 5000
max_sessions = 5000
max_connections_per_ip = 5000
timeout = 1
[[recipient]]
address = "me@example.com"
maildir = "{md}"
""", nofile=96, processes=1)
    socks = []
    try:
        for _ in range(600):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        wait_for(lambda: b"out of file descriptors" in log.read_bytes(), "the EMFILE log line")

        def delivered() -> bool:
            try:
                with smtplib.LMTP("127.0.0.1", port, timeout=10) as c:
                    return c.sendmail("s@example.org", ["me@example.com"], b"Subject: hi\r\n\r\nx\r\n") == {}
            except (OSError, smtplib.SMTPException):
                return False

        # The idle sessions time out (timeout = 1 s) or were refused; then mail is delivered again.
        assert wait_for(delivered, "a delivery after the flood", 90)
        assert proc.poll() is None
    finally:
        for s in socks:
            s.close()
        _stop(proc)
    text = log.read_text(errors="replace")
    # One line from the listener, however many connections it refused, and no traceback from any part
    # of the process (the outbound queue's runner postpones its run with one line of its own).
    assert text.count("out of file descriptors") <= 2, text[-3000:]
    assert len(text.splitlines()) < 40, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert len(maildir_messages(md)) >= 1
