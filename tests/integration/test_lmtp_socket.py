"""`fetchdeliver lmtp` on a Unix socket: owner, group and mode, removal on exit, one log line per
recipient (issue 21, items 3 and 7)."""

import grp
import os
import re
import signal
import smtplib
import subprocess
import time

import pytest

from fetchdeliver.recipients import socket_mode


def _start(cmd, tmp_path, *args):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[delivery]\nmaildir = "{tmp_path}/Mail"\nstate_dir = "{tmp_path}/state"\n')
    log = tmp_path / f"lmtp-{time.monotonic_ns()}.log"
    with open(log, "wb") as f:
        p = subprocess.Popen(cmd + ["lmtp", "-c", str(cfg), *args], stdout=subprocess.DEVNULL, stderr=f)
    deadline = time.monotonic() + 30
    while "listening on" not in log.read_text():
        assert p.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return p, log


def _stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(20)
    finally:
        if p.poll() is None:
            p.kill()


@pytest.mark.parametrize("processes", ["1", "2"])
def test_socket_mode_and_removal_on_exit(tmp_path, fetchdeliver_cmd, processes):
    sock = tmp_path / "run" / "lmtp"
    args = ["--socket", str(sock), "--socket-mode", "0640", "--processes", processes]
    if os.geteuid() == 0:
        args += ["--socket-group", "nogroup"]
    p, log = _start(fetchdeliver_cmd, tmp_path, *args)
    try:
        st = os.stat(sock)
        assert st.st_mode & 0o777 == 0o640
        if os.geteuid() == 0:
            assert st.st_gid == grp.getgrnam("nogroup").gr_gid
        with smtplib.LMTP(str(sock), timeout=30) as c:
            c.ehlo("mta.test")  # smtplib.LMTP sends LHLO
            c.mail("alice@remote.test")
            c.rcpt("me@example.org")
            code, _ = c.data(b"Subject: over the socket\r\n\r\nbody\r\n")
            assert code == 250
    finally:
        assert _stop(p) == 0
    assert not sock.exists(), "the socket is removed on exit"
    text = log.read_text()
    assert re.search(r": to=<me@example.org>, from=<alice@remote.test>, \d+ bytes, [\d.]+s, "
                     r"status=delivered, folder=maildir:INBOX \(250 2.0.0 ", text), text
    assert "LHLO" not in text, "aiosmtpd's protocol trace is for -vv only"


@pytest.mark.parametrize("processes", ["1", "2"])
def test_an_unknown_socket_owner_is_a_clear_error(tmp_path, fetchdeliver_cmd, processes):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[delivery]\nmaildir = "{tmp_path}/Mail"\nstate_dir = "{tmp_path}/state"\n')
    r = subprocess.run(fetchdeliver_cmd + ["lmtp", "-c", str(cfg), "--socket", str(tmp_path / "s"),
                                           "--processes", processes, "--socket-owner", "no-such-user-fd"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "no such user or group" in r.stderr and "no-such-user-fd" in r.stderr, r.stderr
    assert not (tmp_path / "s").exists(), "no socket is left behind"


def test_socket_mode_values():
    assert socket_mode("0660") == 0o660
    assert socket_mode("660") == 0o660
    assert socket_mode(0o600) == 0o600
    for bad in ("rw-rw----", "0999", "", 99999, True):
        with pytest.raises(ValueError):
            socket_mode(bad)
