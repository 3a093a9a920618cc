"""`fetchdeliver imap` and `fetchdeliver passwd` as processes: config file, hashed entry, login, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import imapclient

from fetchdeliver.delivery.maildir import MaildirStore
from imap_helpers import plain

def _cmd(*args):
    """The real command line: `fetchdeliver imap ...` / `fetchdeliver passwd ...`."""
    return [sys.executable, "-m", "fetchdeliver", *args]


def test_passwd_then_imap_from_config(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    maildir = tmp_path / "Maildir"
    MaildirStore(str(maildir)).deliver(plain(1))
    passwd = tmp_path / "users"
    conf = tmp_path / "config.toml"
    conf.write_text(f'[delivery]\nmaildir = "{maildir}"\n\n[imap]\nlisten = "127.0.0.1:0"\n'
                    f'passwd_file = "{passwd}"\nlogin_failure_delay = "0s"\n')
    r = subprocess.run(_cmd("passwd", "-c", str(conf), "--stdin", "alice"), input="s3cret\n", text=True,
                       capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    entry = passwd.read_text()
    assert entry.startswith("alice:{SHA512-CRYPT}$6$") and "s3cret" not in entry
    proc = subprocess.Popen(_cmd("imap", "-c", str(conf)), stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        assert "listening on 127.0.0.1:" in line, line
        port = int(line.rsplit(":", 1)[1])
        c = imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30)
        c.login("alice", "s3cret")
        assert c.select_folder("INBOX")[b"EXISTS"] == 1
        c.logout()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0


def test_imap_config_errors_are_reported(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    conf = tmp_path / "config.toml"
    conf.write_text('[imap]\nlisten = "nonsense"\ntls_listen = "127.0.0.1:0"\n')
    r = subprocess.run(_cmd("imap", "-c", str(conf)), capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 78
    assert "imap.listen" in r.stderr and "HOST:PORT" in r.stderr
    conf.write_text('[imap]\nlisten = "127.0.0.1:0"\n')
    r = subprocess.run(_cmd("imap", "-c", str(conf)), capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 78 and "passwd_file" in r.stderr
