"""Two IMAP sessions, or a session and an outside writer (mutt, `rm`), changing one Maildir's cur/
within one tick of the kernel's clock (issue #11): the directory stamp does not move, yet the next
NOOP must report the change. The same tick is made on purpose: cur/'s mtime is put back after the
change, and the folder is kept "changed just now" (a stamp in the future) so that no listing gets
older than the tick however slowly the machine runs."""

from __future__ import annotations

import os
import time

import imapclient
import pytest

from imap_helpers import make_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def srv(tmp_path):
    server, maildir, _passwd = make_server(tmp_path, n_plain=5, idle_poll=600)
    server.maildir = maildir
    yield server
    server.stop()


def _session(srv) -> imapclient.IMAPClient:
    c = imapclient.IMAPClient("127.0.0.1", port=srv.port(), ssl=False, timeout=30)
    c.login("alice", "secret")
    c.select_folder("INBOX")
    return c


def _set_mtime(path: str, when: float) -> None:
    os.utime(path, (when, when))


def _restore(path: str, st: os.stat_result) -> None:
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size


def _fetched_flags(responses) -> dict[int, set]:
    out = {}
    for r in responses:
        if len(r) == 3 and r[1] == b"FETCH":
            items = r[2]
            out[r[0]] = set(items[items.index(b"FLAGS") + 1])
    return out


def test_another_session_s_changes_in_the_tick_of_ours_show_at_our_next_noop(srv):
    a, b = _session(srv), _session(srv)       # the first SELECT moved the mail to cur/
    try:
        _set_mtime(os.path.join(srv.maildir, "new"), time.time() - 3600)
        _set_mtime(os.path.join(srv.maildir, "dovecot-uidlist"), time.time() + 3600)
        a.noop()
        b.noop()
        a.add_flags([1], [b"\\Flagged"])
        cur = os.path.join(srv.maildir, "cur")
        st = os.stat(cur)
        b.add_flags([2], [b"\\Flagged"])
        b.add_flags([3], [b"\\Deleted"])
        b.expunge()
        _restore(cur, st)                      # both sessions' changes in one tick
        got = a.noop()[1]
        assert (3, b"EXPUNGE") in got
        assert b"\\Flagged" in _fetched_flags(got).get(2, set())
        assert a.search(["FLAGGED"]) == [1, 2]
    finally:
        a.logout()
        b.logout()


def test_an_outside_rename_and_rm_in_the_tick_of_our_listing_show_at_our_next_noop(srv):
    a = _session(srv)
    try:
        cur = os.path.join(srv.maildir, "cur")
        _set_mtime(os.path.join(srv.maildir, "new"), time.time() - 3600)
        _set_mtime(cur, time.time() + 3600)    # cur/ changed "now": our next listing is in its tick
        a.noop()
        st = os.stat(cur)
        names = sorted(os.listdir(cur))        # the five messages, in UID order
        assert len(names) == 5
        base, _sep, info = names[0].partition(":2,")
        os.rename(os.path.join(cur, names[0]), os.path.join(cur, f"{base}:2,F{info}"))   # mutt flags it
        os.unlink(os.path.join(cur, names[4]))                                          # rm
        _restore(cur, st)
        got = a.noop()[1]
        assert b"\\Flagged" in _fetched_flags(got).get(1, set())
        assert (5, b"EXPUNGE") in got
    finally:
        a.logout()
