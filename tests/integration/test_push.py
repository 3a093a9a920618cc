"""Push everywhere: every folder of every `idle = true` account pushed by one daemon, against a real Dovecot.

With NOTIFY (Dovecot with mailbox_list_index = yes) each account holds one connection for all its
folders; without it, one IDLE connection per folder up to `max_connections` (the fetch pass's
connection included), the rest polled. Connections are counted at the server (`doveadm who`).
"""

from __future__ import annotations

import re
import sys
import time

import pytest
from conftest import PUSH_USERS, make_message
from fetchsetup import FetchSetup, lf, originals
from test_daemon import DaemonProc, status, wait_for

FOLDERS = ["INBOX", "Work", "Lists", "Family"]
USERS = sorted(PUSH_USERS)


def _setup(tmp_path, dc, cmd, **keys) -> FetchSetup:
    s = FetchSetup(tmp_path, dc, cmd)
    for user in USERS:
        for f in FOLDERS:
            dc.maildir(user, f)
        s.account(f"acct-{user}", "imap", user=user, idle=True, folders=FOLDERS, **keys)
    return s


def _start(setup, daemons) -> DaemonProc:
    d = DaemonProc(setup.cmd + ["-v", "-v"], setup.config, str(setup.dir / "daemon.log"))
    daemons.append(d)
    d.wait_log(r"ready: ")
    return d


@pytest.fixture
def daemons():
    started: list[DaemonProc] = []
    yield started
    for d in started:
        d.kill()


def _append(dc, user: str, folder: str, raw: bytes) -> None:
    """IMAP APPEND (Dovecot announces it to IDLE and NOTIFY sessions at once)."""
    c = dc.imap(user)
    try:
        c.append(folder, raw)
    finally:
        c.logout()


def _deliver_everywhere(setup, dc, d, tag: str, folders=FOLDERS, budget: int | None = None) -> None:
    """Append one message to each folder of each account; each must be delivered before the next is sent."""
    expected = []
    slowest = 0.0
    most = 0
    for user in USERS:
        for f in folders:
            raw = make_message(len(expected), f"{tag}-{user}-{f}")
            expected.append(raw)
            t0 = time.monotonic()
            _append(dc, user, f, raw)
            n = len(expected)
            wait_for(lambda n=n: setup.count_delivered() >= n, 30, f"delivery of {user}/{f}", proc=d)
            slowest = max(slowest, time.monotonic() - t0)
            if budget is not None:
                most = max(most, dc.connections(user))
                assert most <= budget, f"{user} holds {most} connections, max_connections is {budget}"
    sys.stderr.write(f"push ({tag}): slowest delivery after APPEND {slowest:.2f}s; "
                     f"most connections per account seen {most}\n")
    assert sorted(originals(setup.delivered())) == sorted(lf(expected))


def test_notify_pushes_every_folder_of_five_accounts_on_one_connection_each(tmp_path, dovecot_notify,
                                                                             fetchdeliver_cmd, daemons):
    dc = dovecot_notify
    setup = _setup(tmp_path, dc, fetchdeliver_cmd, poll="1h")
    d = _start(setup, daemons)
    for i in range(len(USERS)):
        d.wait_log(r"acct-user\d: NOTIFY connected: new mail in 4 folders", count=i + 1)
    # With nothing to fetch: exactly one connection per account at the server (no pass is due for an hour).
    wait_for(lambda: all(dc.connections(u) == 1 for u in USERS), 20, "one NOTIFY connection per account",
             proc=d)
    _deliver_everywhere(setup, dc, d, "notify", budget=5)
    wait_for(lambda: all(dc.connections(u) == 1 for u in USERS), 20, "back to one connection per account",
             proc=d)
    out = status(setup)
    for user in USERS:
        block = re.search(rf"acct-{user} \(idle, poll every 1h\):\n(?:    .*\n)+", out + "\n").group(0)
        for f in FOLDERS:
            assert f"      {f}: pushed (NOTIFY, one connection for all 4 folders)" in block, out
    assert "errors:    none" in out
    assert d.stop()[0] == 0


def test_without_notify_idle_per_folder_within_a_budget_of_two_the_rest_polled(tmp_path, dovecot_no_notify,
                                                                                fetchdeliver_cmd, daemons):
    dc = dovecot_no_notify
    setup = _setup(tmp_path, dc, fetchdeliver_cmd, poll="2s", max_connections=2)
    d = _start(setup, daemons)
    for i in range(len(USERS)):
        d.wait_log(r"acct-user\d: IDLE connected on INBOX", count=i + 1)
    out = wait_for(lambda: (lambda t: t if t.count(": polled (") == 15 else None)(status(setup)), 20,
                   "the push plan in status", proc=d)
    for user in USERS:
        block = re.search(rf"acct-{user} \(idle, poll every 2s\):\n(?:    .*\n)+", out + "\n").group(0)
        assert "      INBOX: pushed (IDLE connection 1 of 1, no NOTIFY on the server)" in block, out
        for f in FOLDERS[1:]:
            assert (f"      {f}: polled (max_connections = 2: 1 IDLE connection and one for fetching are in "
                    f"use, no NOTIFY on the server; polled every 2s)") in block, out
    assert "IDLE connected on Work" not in d.log()
    # Pushed or polled, every folder's mail arrives, and no account ever holds more than 2 connections.
    _deliver_everywhere(setup, dc, d, "budget", budget=2)
    assert d.stop()[0] == 0


def test_without_notify_every_folder_gets_its_own_idle_connection(tmp_path, dovecot_no_notify, fetchdeliver_cmd,
                                                                   daemons):
    dc = dovecot_no_notify
    setup = FetchSetup(tmp_path, dc, fetchdeliver_cmd)
    for f in FOLDERS:
        dc.maildir("user0", f)
    setup.account("solo", "imap", user="user0", idle=True, folders=FOLDERS, poll="1h")
    d = _start(setup, daemons)
    for f in FOLDERS:
        d.wait_log(rf"solo: IDLE connected on {f}:")
    wait_for(lambda: dc.connections("user0") == 4, 20, "four IDLE connections", proc=d)
    expected = []
    for i, f in enumerate(reversed(FOLDERS)):
        raw = make_message(i, f"solo-{f}")
        expected.append(raw)
        _append(dc, "user0", f, raw)
        wait_for(lambda i=i: setup.count_delivered() == i + 1, 30, f"delivery from {f} by push", proc=d)
        assert dc.connections("user0") <= 5
    assert sorted(originals(setup.delivered())) == sorted(lf(expected))
    out = status(setup)
    assert "      Family: pushed (IDLE connection 4 of 4, no NOTIFY on the server)" in out, out
    assert d.stop()[0] == 0
