"""`fetchdeliver fetch` against a real Dovecot over IMAP: every policy, every TLS mode, first runs,
UIDVALIDITY changes, two runs at once."""

import os
import signal
import subprocess
import sys

import pytest

from conftest import make_message
from fetchsetup import FetchSetup, counts, originals, split_received, lf


def odd_messages(tag):
    """Messages that must survive byte for byte (servers speak CRLF, so these are CRLF)."""
    return [
        make_message(1, tag),
        make_message(2, tag, extra="X-Grüße: 8-bit header\r\n".encode("utf-8")),
        make_message(3, tag) + b".leading dot\r\n..two dots\r\nFrom the start\r\n",
        make_message(4, tag) + b"y" * 300_000 + b"\r\n",                # one 300 kB line
        make_message(5, tag) + b"no final newline",
        make_message(6, tag) + "8-bit body: naïve café\r\n".encode("latin-1"),
    ]


@pytest.fixture
def setup(tmp_path, dovecot, fetchdeliver_cmd):
    return FetchSetup(tmp_path, dovecot, fetchdeliver_cmd)


def assert_delivered_exactly(setup, expected, account="work"):
    got = setup.delivered()
    assert sorted(originals(got)) == sorted(lf(expected))
    for raw in got:
        received, _ = split_received(raw)
        assert f"account {account}".encode() in received
        assert received.endswith(b"\n") and not received.endswith(b"\r\n")  # stored with LF


@pytest.mark.parametrize("tls", ["implicit", "starttls", "none"])
@pytest.mark.parametrize("after", ["keep", "delete", "mark-seen", "move:Archive"])
def test_imap_policy_and_tls(setup, dovecot, tls, after):
    msgs = odd_messages(f"{tls}-{after}")
    dovecot.append_many("alice", msgs)
    setup.account("work", "imap", tls, after=after)

    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "work") == (len(msgs), len(msgs), 0, 0)
    assert r.stderr == ""
    assert_delivered_exactly(setup, msgs)

    inbox = dovecot.contents("alice")
    if after == "keep":
        assert sorted(raw for _, raw in inbox.values()) == sorted(msgs)
        assert all(b"\\Seen" not in flags for flags, _ in inbox.values())   # BODY.PEEK[]
    elif after == "mark-seen":
        assert sorted(raw for _, raw in inbox.values()) == sorted(msgs)
        assert all(b"\\Seen" in flags for flags, _ in inbox.values())
    elif after == "delete":
        assert inbox == {}
    else:
        assert inbox == {}
        archived = dovecot.contents("alice", "Archive")
        assert sorted(raw for _, raw in archived.values()) == sorted(msgs)

    r2 = setup.run()
    assert r2.returncode == 0, r2.stderr
    assert counts(r2.stdout, "work") == (0, 0, 0, 0)
    assert len(setup.delivered()) == len(msgs)


def test_keep_fetches_only_new_mail_and_folders(setup, dovecot):
    dovecot.append("alice", make_message(1, "a"))
    dovecot.append("alice", make_message(2, "a"), folder="Lists")
    setup.account("work", "imap", folders=["INBOX", "Lists"])
    r = setup.run()
    assert counts(r.stdout, "work") == (2, 2, 0, 0), r.stderr
    new = make_message(3, "a")
    dovecot.append("alice", new, folder="Lists")
    r = setup.run()
    assert counts(r.stdout, "work") == (1, 1, 0, 0), r.stderr
    assert sorted(originals(setup.delivered())) == sorted(
        lf([make_message(1, "a"), make_message(2, "a"), new]))


def test_initial_new_only_skips_what_is_there(setup, dovecot):
    old = [make_message(i, "old") for i in range(3)]
    dovecot.append_many("alice", old)
    setup.account("work", "imap", initial="new-only")
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "work") == (0, 0, 0, 0)
    assert setup.delivered() == []
    new = [make_message(i, "new") for i in range(2)]
    dovecot.append_many("alice", new)
    r = setup.run()
    assert counts(r.stdout, "work") == (2, 2, 0, 0), r.stderr
    assert sorted(originals(setup.delivered())) == sorted(lf(new))


def test_uidvalidity_change_does_not_redeliver(setup, dovecot):
    msgs = [make_message(i, "uv") for i in range(4)]
    dovecot.append_many("alice", msgs)
    setup.account("work", "imap")
    r = setup.run()
    assert counts(r.stdout, "work") == (4, 4, 0, 0), r.stderr
    before = dovecot.contents("alice")
    dovecot.set_uidvalidity("alice", 4242)
    late = make_message(9, "uv")
    dovecot.append("alice", late)
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert "UIDVALIDITY changed" in r.stderr
    assert counts(r.stdout, "work") == (5, 1, 4, 0)
    assert sorted(originals(setup.delivered())) == sorted(lf(msgs + [late]))
    assert len(before) == 4
    r = setup.run()
    assert counts(r.stdout, "work") == (0, 0, 0, 0), r.stderr


def test_dry_run_delivers_and_changes_nothing(setup, dovecot):
    msgs = [make_message(i, "dry") for i in range(3)]
    dovecot.append_many("alice", msgs)
    setup.account("work", "imap", after="delete")
    r = setup.run("--dry-run")
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "work") == (3, 3, 0, 0)
    assert "dry run" in r.stdout
    assert setup.delivered() == []
    assert len(dovecot.contents("alice")) == 3
    r = setup.run()
    assert counts(r.stdout, "work") == (3, 3, 0, 0), r.stderr
    assert sorted(originals(setup.delivered())) == sorted(lf(msgs))


def test_only_the_named_accounts_run(setup, dovecot):
    dovecot.append("alice", make_message(1, "n"))
    dovecot.append("bob", make_message(2, "n"))
    setup.account("a", "imap")
    setup.account("b", "imap", user="bob")
    r = setup.run("b")
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "b") == (1, 1, 0, 0)
    assert "a: " not in r.stdout
    r = setup.run("nosuch")
    assert r.returncode != 0 and "nosuch" in r.stderr


def test_two_runs_at_once_deliver_each_message_once(setup, dovecot):
    msgs = [make_message(i, "conc", body_lines=20) for i in range(150)]
    dovecot.append_many("alice", msgs)
    setup.account("work", "imap", after="keep")
    p1, p2 = setup.popen(), setup.popen()
    out1, err1 = p1.communicate(timeout=120)
    out2, err2 = p2.communicate(timeout=120)
    assert p1.returncode == 0 and p2.returncode == 0, err1 + err2
    c1, c2 = counts(out1, "work"), counts(out2, "work")
    assert c1[1] + c2[1] == len(msgs)          # together, every message delivered once
    assert sorted(originals(setup.delivered())) == sorted(lf(msgs))


def test_idle_reports_new_mail(dovecot, tmp_path):
    from fetchdeliver.sources.accounts import Account
    from fetchdeliver.sources.imap import ImapSource

    acc = Account({"name": "push", "protocol": "imap", "host": "127.0.0.1", "port": dovecot.port("imaps"),
                   "tls": "implicit", "ca_file": dovecot.ca_file, "user": "alice", "password": "secret",
                   "timeout": 30})
    src = ImapSource(acc)
    src.connect()
    try:
        src.select("INBOX", readonly=True)
        # A second session appends while the first is in IDLE; the server must tell the first.
        child = subprocess.Popen([sys.executable, "-c", _APPEND_LATER, str(dovecot.port("imap"))])
        try:
            assert src.idle_wait(timeout=60) is True
        finally:
            child.wait(30)
        assert len(src.search("ALL")) == 1
    finally:
        src.close()


# Appends through IMAP APPEND, so Dovecot itself announces the message to IDLE sessions.
_APPEND_LATER = r"""
import sys, imapclient
c = imapclient.IMAPClient("127.0.0.1", port=int(sys.argv[1]), ssl=False, timeout=30)
c.login("alice", "secret")
c.append("INBOX", b"Subject: pushed\r\n\r\nhello\r\n")
c.logout()
"""


def test_server_killed_mid_fetch_then_rerun_delivers_each_once(setup, dovecot):
    msgs = [make_message(i, "crash", body_lines=30) for i in range(300)]
    dovecot.append_many("alice", msgs)
    setup.account("work", "imap", after="delete", batch_size=20)
    p = setup.popen()
    try:
        # Kill the server once some mail is delivered (polling the Maildir, not timing).
        while setup.count_delivered() < 40 and p.poll() is None:
            os.sched_yield()
        dovecot.crash()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()
    if p.returncode == 0:
        pytest.skip("the fetch finished before the server could be killed (machine too fast)")
    assert "fetchdeliver: work: " in err
    assert len([ln for ln in err.splitlines() if ln.startswith("fetchdeliver: work:")]) == 1, err
    dovecot.start()
    setup.repoint()
    r = setup.run()
    assert r.returncode == 0, r.stderr
    got = originals(setup.delivered())
    assert sorted(got) == sorted(lf(msgs))
    assert dovecot.contents("alice") == {}


def test_progress_bar_only_on_a_terminal(setup, dovecot):
    import pty

    dovecot.append_many("alice", [make_message(i, "tty") for i in range(30)])
    setup.account("work", "imap", batch_size=5)
    r = setup.run()                                   # stdout is a pipe: no bar
    assert "\r" not in r.stdout and "[" not in r.stdout
    dovecot.append_many("alice", [make_message(i, "tty2") for i in range(30)])
    master, slave = pty.openpty()
    p = subprocess.Popen(setup.argv(), stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:              # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert p.wait(60) == 0, p.stderr.read()
    text = out.decode()
    assert "work  [" in text and "30/30" in text
    assert text.rstrip().endswith("work: 30 fetched, 30 delivered, 0 duplicates skipped, 0 failed")


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_tempfail_is_neither_acknowledged_nor_recorded(setup, dovecot, protocol):
    msgs = [make_message(i, f"tf-{protocol}") for i in range(3)]
    dovecot.append_many("alice", msgs)
    setup.account("work", protocol, after="delete")
    # A plain file where the Maildir should be: every delivery fails temporarily (even for root).
    with open(setup.maildir, "w") as f:
        f.write("in the way")
    r = setup.run()
    assert r.returncode != 0
    assert counts(r.stdout, "work") == (3, 0, 0, 3)
    assert r.stderr.count("not delivered, left on the server for the next run") == 3, r.stderr
    assert len(dovecot.contents("alice")) == 3           # nothing deleted
    os.unlink(setup.maildir)
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "work") == (3, 3, 0, 0)      # nothing was recorded either
    assert sorted(originals(setup.delivered())) == sorted(lf(msgs))
    assert dovecot.contents("alice") == {}


def test_too_many_failures_in_a_row_stop_the_account(setup, dovecot):
    dovecot.append_many("alice", [make_message(i, "many") for i in range(12)])
    setup.account("work", "imap", after="delete")
    with open(setup.maildir, "w") as f:
        f.write("in the way")
    r = setup.run()
    assert r.returncode != 0
    _, delivered, _, failed = counts(r.stdout, "work")
    assert (delivered, failed) == (0, 5), r.stdout          # the other 7 were not even tried
    assert "stopped after 5 deliveries in a row failed" in r.stderr
    assert len(dovecot.contents("alice")) == 12


def test_rules_sort_fetched_mail(tmp_path, dovecot, fetchdeliver_cmd):
    rules = tmp_path / "rules.sieve"
    rules.write_text('require ["fileinto"];\n'
                     'if header :contains "subject" "urgent" { fileinto "Urgent"; }\n'
                     'elsif header :contains "received" "account work" { fileinto "Work"; }\n')
    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd, rules=str(rules))
    urgent = make_message(1, "urgent")
    normal = make_message(2, "plain")
    dovecot.append_many("alice", [urgent, normal])
    setup.account("work", "imap")
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "work") == (2, 2, 0, 0)
    assert originals(setup.delivered("Urgent")) == [lf(urgent)]
    # The rules see the Received: header naming the account, as with fetchmail.
    assert originals(setup.delivered("Work")) == [lf(normal)]
