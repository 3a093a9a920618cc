"""`fetchdeliver lmtp` with several processes: connections spread over them, nothing lost or doubled,
a redirect queued by a child still leaves at once, SIGTERM stops every process."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time

from lmtp_support import maildir_messages
from smtp_sinks import Sink


def _wait(cond, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _pids_in_names(maildir) -> set[int]:
    """The delivering process of each file: Maildir names carry "P<pid>"."""
    pids = set()
    for sub in ("new", "cur"):
        d = os.path.join(maildir, sub)
        for name in os.listdir(d) if os.path.isdir(d) else []:
            m = re.search(r"P(\d+)", name)
            if m:
                pids.add(int(m.group(1)))
    return pids


def test_two_processes_share_four_connections(tmp_path):
    sink = Sink()
    md, fwd = tmp_path / "m", tmp_path / "fwd"
    (tmp_path / "fwd.sieve").write_text('require "copy";\nredirect :copy "carol@dest.test";\n')
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
[lmtp]
listen = "127.0.0.1:0"
processes = 2
[relay]
host = "127.0.0.1"
port = {sink.port}
tls = "none"
[[recipient]]
address = "me@example.com"
maildir = "{md}"
[[recipient]]
address = "fwd@example.com"
maildir = "{fwd}"
rules = "{tmp_path}/fwd.sieve"
[delivery]
state_dir = "{tmp_path}/state"
""")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "fetchdeliver", "lmtp", "-c", str(cfg)],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        while line and "listening on" not in line:
            line = proc.stderr.readline()
        assert "(2 processes)" in line, line
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        errors = []

        def client(k: int) -> None:
            try:
                with smtplib.LMTP("127.0.0.1", port) as c:
                    for i in range(25):
                        raw = f"From: s@example.org\r\nSubject: c{k} m{i}\r\nMessage-ID: <{k}.{i}@x>\r\n\r\nhi\r\n"
                        assert c.sendmail("s@example.org", ["me@example.com"], raw.encode()) == {}
            except Exception as e:  # reported below, with the others
                errors.append(e)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        got = maildir_messages(md)
        subjects = sorted(m.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].split(b"\n", 1)[0] for m in got)
        assert len(subjects) == 100 and len(set(subjects)) == 100          # each once
        served_by = _pids_in_names(md)
        assert len(served_by) == 2 and proc.pid in served_by, served_by     # both processes worked

        # Two connections open at once: the second is the child's. A redirect it queues reaches
        # the relay at once too (the child wakes the parent's queue runner; its own interval is 60 s).
        with smtplib.LMTP("127.0.0.1", port) as c1, smtplib.LMTP("127.0.0.1", port) as c2:
            c1.noop(), c2.noop()
            for _ in range(2):
                assert c2.sendmail("bob@src.test", ["fwd@example.com"], b"Subject: pass on\r\n\r\nx\r\n") == {}
        assert _pids_in_names(fwd) == {child for child in served_by if child != proc.pid}  # the child's
        _wait(lambda: len(sink.messages) == 2, 20, "two redirects at the relay")
        assert all(m.rcpt_tos == ["carol@dest.test"] for m in sink.messages)

        child = (served_by - {proc.pid}).pop()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        _wait(lambda: not os.path.exists(f"/proc/{child}") or
              open(f"/proc/{child}/stat").read().split()[2] == "Z", 10, "the child to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sink.stop()
