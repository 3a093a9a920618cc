"""\\Recent for what COPY, MOVE and APPEND put into a mailbox (RFC 3501 2.3.2, imaptest's "copy" group):
the next session that selects the target (or has it selected) sees them \\Recent, and only that one."""

from __future__ import annotations

import imapclient
import pytest

from imap_helpers import make_server


@pytest.fixture
def srv(tmp_path):
    server, _maildir, _passwd = make_server(tmp_path, n_plain=3, idle_poll=600)
    yield server
    server.stop()


def _login(srv) -> imapclient.IMAPClient:
    c = imapclient.IMAPClient("127.0.0.1", port=srv.port(), ssl=False, timeout=30)
    c.login("alice", "secret")
    return c


def _flags(c) -> dict[int, set[bytes]]:
    """UID -> flags of every message in the selected mailbox."""
    uids = c.search("ALL")
    assert uids
    return {n: set(d[b"FLAGS"]) for n, d in c.fetch(uids, ["FLAGS"]).items()}


def test_copy_into_a_selected_mailbox_is_recent_for_that_session(srv):
    a, b = _login(srv), _login(srv)
    try:
        a.create_folder("Target")
        assert b.select_folder("Target")[b"RECENT"] == 0
        a.select_folder("INBOX")
        a.add_flags([1], [b"\\Seen"])
        a.add_flags([2], [b"\\Flagged", b"$Work"])
        a.copy([1, 2, 3], "Target")     # 1 and 2 keep their flags, so the copies go to cur/
        responses = b.noop()[1]
        assert (3, b"EXISTS") in responses and (3, b"RECENT") in responses
        flags = _flags(b)
        assert all(b"\\Recent" in f for f in flags.values()), flags
        assert b"\\Seen" in flags[1] and {b"\\Flagged", b"$Work"} <= flags[2]
        # taken by b: a session selecting the mailbox after it sees none of them \Recent
        c = _login(srv)
        try:
            assert c.select_folder("Target")[b"RECENT"] == 0
            assert not any(b"\\Recent" in f for f in _flags(c).values())
        finally:
            c.logout()
    finally:
        a.logout()
        b.logout()


def test_copy_and_move_are_recent_for_the_next_session_that_selects_the_target(srv):
    a = _login(srv)
    try:
        a.create_folder("Archive")
        a.select_folder("INBOX")
        a.add_flags([1, 2], [b"\\Seen"])
        a.copy([1], "Archive")
        a.move([2], "Archive")
        assert a.folder_status("Archive", [b"RECENT"])[b"RECENT"] == 2
        e = _login(srv)
        try:   # EXAMINE sees them \Recent but leaves them so for the next SELECT
            assert e.select_folder("Archive", readonly=True)[b"RECENT"] == 2
        finally:
            e.logout()
        b = _login(srv)
        try:
            assert b.select_folder("Archive")[b"RECENT"] == 2
            assert all(b"\\Recent" in f for f in _flags(b).values())
        finally:
            b.logout()
        c = _login(srv)
        try:
            assert c.select_folder("Archive")[b"RECENT"] == 0
        finally:
            c.logout()
    finally:
        a.logout()


def test_append_with_flags_is_recent_for_the_next_session(srv):
    a = _login(srv)
    try:
        a.append("INBOX", b"Subject: flagged\r\n\r\nbody\r\n", flags=[b"\\Seen"])
        b = _login(srv)
        try:
            b.select_folder("INBOX")
            seen = [f for f in _flags(b).values() if b"\\Seen" in f]
            assert len(seen) == 1 and b"\\Recent" in seen[0]
        finally:
            b.logout()
    finally:
        a.logout()
