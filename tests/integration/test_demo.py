"""The README's first command: `fetchdeliver demo` (the whole loop) and `demo --once`."""

import os
import re
import signal
import subprocess
import time

import imapclient


def _count(mail, folder, sub="new"):
    d = mail / folder / sub if folder else mail / sub
    return len(os.listdir(d)) if d.is_dir() else 0


def test_demo_once_fetches_the_samples_and_files_them_where_the_rules_say(tmp_path, fetchdeliver_cmd):
    r = subprocess.run(fetchdeliver_cmd + ["demo", "--once", "--dir", str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    mail = tmp_path / "Mail"
    assert _count(mail, ".Junk", "cur") == 1                      # spam, marked \Seen
    assert _count(mail, ".Lists.python-weekly") == 1              # List-Id -> Lists/<id>
    assert _count(mail, ".Receipts") == 1                         # To: me+receipts@ (fetched: no envelope)
    assert _count(mail, ".Notifications") == 1                    # CI mail
    assert _count(mail, "", "cur") == 1                           # the boss, flagged, in INBOX
    assert os.listdir(mail / "cur")[0].endswith(":2,F")
    assert _count(mail, "") == 2                                  # friend + headerless message: implicit keep
    assert "Built-in IMAP server on 127.0.0.1:" in r.stdout
    assert "Lists/python-weekly" in r.stdout and "03-spam.eml" in r.stdout
    # Fetched through IMAP: each delivery carries fetchdeliver's Received: line.
    with open(os.path.join(mail / ".Receipts" / "new", os.listdir(mail / ".Receipts" / "new")[0]), "rb") as f:
        assert f.read().startswith(b"Received: from 127.0.0.1 by ")
    # Again with the same folder: nothing is fetched twice.
    r2 = subprocess.run(fetchdeliver_cmd + ["demo", "--once", "--dir", str(tmp_path)], capture_output=True,
                        text=True, timeout=120)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    n = sum(len(f) for d, _s, f in os.walk(mail) if os.path.basename(d) in ("new", "cur"))
    assert n == 7


def test_demo_once_without_dir_removes_its_temporary_folder(tmp_path, fetchdeliver_cmd):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    r = subprocess.run(fetchdeliver_cmd + ["demo", "--once"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"04-receipt\.eml\s+-> Receipts", r.stdout), r.stdout  # the plain fetch path files it
    assert "removed the temporary folder" in r.stdout
    assert [n for n in os.listdir(tmp_path) if n.startswith("fetchdeliver-demo-")] == []


def test_demo_serves_the_result_over_imap_fetches_new_mail_and_stops_on_ctrl_c(tmp_path, fetchdeliver_cmd):
    log = tmp_path / "demo.out"
    with open(log, "wb") as out:
        p = subprocess.Popen(fetchdeliver_cmd + ["demo", "--dir", str(tmp_path / "d")], stdout=out,
                             stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        text = ""
        while "Ctrl-C ends the demo" not in text:
            assert p.poll() is None and time.monotonic() < deadline, text
            time.sleep(0.05)
            text = log.read_text()
        port = int(re.search(r"port:\s+(\d+)", text).group(1))
        password = re.search(r"password: (\S+)\n", text).group(1)
        remote_pw = re.search(r"user: remote, password: (\S+)\)", text).group(1)
        c = imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30)
        c.login("demo", password)
        names = {f[2] for f in c.list_folders()}
        assert {"INBOX", "Junk", "Receipts", "Notifications"} <= names, names
        assert c.select_folder("INBOX", readonly=True)[b"EXISTS"] == 3
        # New mail in the remote account is fetched and filed by the running loop.
        r = imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30)
        r.login("remote", remote_pw)
        r.append("INBOX", b"From: ci@github.example\r\nSubject: [CI] build passed\r\n\r\nok\r\n")
        r.logout()
        deadline = time.monotonic() + 30
        while c.folder_status("Notifications", ["MESSAGES"])[b"MESSAGES"] < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        c.logout()
        p.send_signal(signal.SIGINT)
        assert p.wait(15) == 0
        assert "demo stopped" in log.read_text()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
