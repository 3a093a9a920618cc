"""CONDSTORE and QRESYNC (RFC 7162): a poll of a folder where nothing changed costs one command (the
SELECT/EXAMINE), checked in Dovecot's own raw log of what the client sent. With CONDSTORE alone a change
(new mail, a flag set elsewhere, an expunge) costs one SEARCH; with QRESYNC the SELECT names the last
sync point and its answer (VANISHED, FETCH) is all the client needs."""

from __future__ import annotations

import re

import pytest
from conftest import _start, make_message
from fetchsetup import FetchSetup, counts
from rawlog_support import dovecot_with_rawlog, sent_commands

N = 3000


# Dovecot 2.3's capabilities without QRESYNC (imap_capability replaces the list): CONDSTORE alone.
CONDSTORE_ONLY = ("IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT UNSELECT CHILDREN NAMESPACE UIDPLUS "
                  "LIST-EXTENDED CONDSTORE ESEARCH SEARCHRES LIST-STATUS BINARY MOVE LITERAL+")


@pytest.fixture
def dovecot_rawlog(request):
    """Dovecot offering CONDSTORE but not QRESYNC, logging what clients send."""
    return dovecot_with_rawlog(request, f"imap_capability = {CONDSTORE_ONLY}\n")


@pytest.fixture
def dovecot_qresync(request):
    """Dovecot as it comes (CONDSTORE and QRESYNC), logging what clients send."""
    return dovecot_with_rawlog(request)


def test_an_unchanged_large_folder_costs_one_round_trip(tmp_path, dovecot_rawlog, fetchdeliver_cmd):
    dc = dovecot_rawlog
    dc.append_many("alice", (make_message(i, "big", body_lines=1) for i in range(N)))
    setup = FetchSetup(tmp_path, dc, fetchdeliver_cmd)
    setup.account("big", "imap", "implicit", after="mark-seen", batch_size=1000)
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "big") == (N, N, 0, 0)
    sent_commands(dc)
    # The pass after an acknowledgement looks again (our own STORE raised the modseq) and records the point.
    r = setup.run()
    assert counts(r.stdout, "big") == (0, 0, 0, 0), r.stdout + r.stderr
    second = sent_commands(dc)
    assert any(c.startswith("UID SEARCH") for s in second for c in s), second
    # Nothing changed: the folder costs its EXAMINE/SELECT and nothing else.
    r = setup.run()
    assert r.returncode == 0 and counts(r.stdout, "big") == (0, 0, 0, 0), r.stdout + r.stderr
    (session,) = sent_commands(dc)
    assert session == ["ENABLE CONDSTORE", 'SELECT "INBOX"', "LOGOUT"], session
    # New mail and a flag changed elsewhere (\Seen removed by another client): one SEARCH for what arrived
    # or changed since the last pass, not the folder's 3,000 UIDs.
    c = dc.imap("alice")
    c.select_folder("INBOX")
    c.remove_flags([5], [b"\\Seen"])
    c.append("INBOX", make_message(N + 1, "big"))
    c.logout()
    sent_commands(dc)
    r = setup.run()
    assert counts(r.stdout, "big") == (1, 1, 0, 0), r.stdout + r.stderr
    session = sent_commands(dc)[0]
    searches = [cmd for cmd in session if cmd.startswith("UID SEARCH")]
    assert len(searches) == 1 and re.fullmatch(rf"UID SEARCH UNDELETED OR UID {N + 1}:\* MODSEQ \d+", searches[0]), \
        session
    assert [cmd for cmd in session if cmd.startswith("UID FETCH")] == [f"UID FETCH {N + 1} (RFC822.SIZE)",
                                                                      f"UID FETCH {N + 1} (BODY.PEEK[])"], session


def test_a_message_undeleted_elsewhere_is_found_by_the_incremental_search(tmp_path, dovecot_rawlog,
                                                                          fetchdeliver_cmd):
    dc = dovecot_rawlog
    dc.append("alice", make_message(1, "undel"))
    dc.append("alice", make_message(2, "undel"), flags="T")   # \Deleted: not fetched
    setup = FetchSetup(tmp_path, dc, fetchdeliver_cmd)
    setup.account("acct", "imap", "implicit")
    assert counts(setup.run().stdout, "acct") == (1, 1, 0, 0)
    sent_commands(dc)
    assert counts(setup.run().stdout, "acct") == (0, 0, 0, 0)
    assert sent_commands(dc) == [["ENABLE CONDSTORE", 'EXAMINE "INBOX"', "LOGOUT"]]
    c = dc.imap("alice")
    c.select_folder("INBOX")
    c.remove_flags(c.search("DELETED"), [b"\\Deleted"])
    c.logout()
    r = setup.run()
    assert counts(r.stdout, "acct") == (1, 1, 0, 0), r.stdout + r.stderr
    assert len(setup.delivered()) == 2


def test_without_condstore_every_poll_compares(request, tmp_path, fetchdeliver_cmd):
    # Dovecot announcing no CONDSTORE (imap_capability replaces its list): no shortcut, still correct.
    dovecot = _start(request, users={"alice": "secret"},
                     extra_config="imap_capability = IMAP4rev1 IDLE UIDPLUS MOVE LITERAL+\n")
    c = dovecot.imap("alice")
    assert b"CONDSTORE" not in c.capabilities()
    c.logout()
    dovecot.append("alice", make_message(1, "plain"))
    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd)
    setup.account("plain", "imap", "implicit")
    assert counts(setup.run().stdout, "plain") == (1, 1, 0, 0)
    assert counts(setup.run().stdout, "plain") == (0, 0, 0, 0)
    dovecot.append("alice", make_message(2, "plain"))
    assert counts(setup.run().stdout, "plain") == (1, 1, 0, 0)


# -- QRESYNC ---------------------------------------------------------------------------------------

def _qresync_select(cmd: str) -> re.Match | None:
    return re.fullmatch(r'(SELECT|EXAMINE) "INBOX" \(QRESYNC \((\d+) (\d+)\)\)', cmd)


def _seen_uids(setup, account: str) -> set[int]:
    from fetchdeliver.state import State

    with State(setup.state_dir) as st:
        return st.imap_seen(account, "INBOX")


def test_qresync_poll_is_one_round_trip_and_learns_changes_from_the_select(tmp_path, dovecot_qresync,
                                                                           fetchdeliver_cmd):
    dc = dovecot_qresync
    dc.append_many("alice", (make_message(i, "big", body_lines=1) for i in range(N)))
    dc.append("alice", make_message(N, "big"), flags="T")      # \Deleted elsewhere: not fetched (UID N+1)
    setup = FetchSetup(tmp_path, dc, fetchdeliver_cmd)
    setup.account("big", "imap", "implicit", after="mark-seen", batch_size=1000)
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "big") == (N, N, 0, 0)
    first = sent_commands(dc)[0]
    assert first[0] == "ENABLE QRESYNC" and first[1] == 'SELECT "INBOX"', first
    # Our own \Seen flags raised the modseq: the next SELECT names the sync point and its answer (3,000 FETCH
    # lines: flags we set ourselves) needs no further command.
    r = setup.run()
    assert counts(r.stdout, "big") == (0, 0, 0, 0), r.stdout + r.stderr
    (session,) = sent_commands(dc)
    assert len(session) == 3 and session[0] == "ENABLE QRESYNC" and session[2] == "LOGOUT", session
    assert _qresync_select(session[1]), session
    # Nothing changed: one round trip (the SELECT) again, with the newer modseq.
    r = setup.run()
    assert r.returncode == 0 and counts(r.stdout, "big") == (0, 0, 0, 0), r.stdout + r.stderr
    (again,) = sent_commands(dc)
    assert len(again) == 3 and _qresync_select(again[1]), again
    assert int(_qresync_select(again[1]).group(3)) > int(_qresync_select(session[1]).group(3))

    # Elsewhere: \Seen removed from a delivered message, the \Deleted one undeleted, one expunged, one new.
    c = dc.imap("alice")
    c.select_folder("INBOX")
    c.remove_flags([5], [b"\\Seen"])
    c.remove_flags([N + 1], [b"\\Deleted"])
    c.add_flags([7], [b"\\Deleted"])
    c.expunge()
    c.append("INBOX", make_message(N + 1, "big"))
    c.logout()
    sent_commands(dc)
    assert 7 in _seen_uids(setup, "big")
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "big") == (2, 2, 0, 0), r.stdout + r.stderr   # the undeleted and the new one
    (session,) = sent_commands(dc)
    assert _qresync_select(session[1]) and not any(cmd.startswith("UID SEARCH") for cmd in session), session
    assert [cmd for cmd in session if cmd.startswith("UID FETCH")] == [
        f"UID FETCH {N + 1},{N + 2} (RFC822.SIZE)", f"UID FETCH {N + 1},{N + 2} (BODY.PEEK[])"], session
    seen = _seen_uids(setup, "big")
    assert 7 not in seen and {5, N + 1, N + 2} <= seen     # the expunge was learned from VANISHED
    # Message 5 stays unread: a flag changed elsewhere on a delivered message is not undone or refetched.
    flags = dc.contents("alice")
    assert b"\\Seen" not in flags[5][0] and b"\\Seen" in flags[N + 2][0]
    assert len(setup.delivered()) == N + 2


def test_qresync_with_move_forgets_what_it_moved_and_finds_an_undeleted_message(tmp_path, dovecot_qresync,
                                                                              fetchdeliver_cmd):
    dc = dovecot_qresync
    for i in range(5):
        dc.append("alice", make_message(i, "mv"))
    setup = FetchSetup(tmp_path, dc, fetchdeliver_cmd)
    setup.account("mv", "imap", "implicit", after="move:Archive")
    assert counts(setup.run().stdout, "mv") == (5, 5, 0, 0)
    assert _seen_uids(setup, "mv") == {1, 2, 3, 4, 5}
    sent_commands(dc)
    # The next pass hears of its own MOVEs as VANISHED in the SELECT's answer: the state stops holding them.
    assert counts(setup.run().stdout, "mv") == (0, 0, 0, 0)
    (session,) = sent_commands(dc)
    assert _qresync_select(session[1]) and len(session) == 3, session
    assert _seen_uids(setup, "mv") == set()
    # A message another client flagged \Deleted is left alone; undeleted elsewhere, it is fetched and moved.
    dc.append("alice", make_message(9, "mv"), flags="T")
    assert counts(setup.run().stdout, "mv") == (0, 0, 0, 0)
    c = dc.imap("alice")
    c.select_folder("INBOX")
    c.remove_flags(c.search("DELETED"), [b"\\Deleted"])
    c.logout()
    sent_commands(dc)
    r = setup.run()
    assert counts(r.stdout, "mv") == (1, 1, 0, 0), r.stdout + r.stderr
    (session,) = sent_commands(dc)
    assert not any(cmd.startswith("UID SEARCH") for cmd in session), session
    assert any(cmd.startswith("UID MOVE") for cmd in session), session
    assert dc.contents("alice") == {} and len(dc.contents("alice", "Archive")) == 6
    assert len(setup.delivered()) == 6


def test_qresync_after_a_uidvalidity_change_compares_everything(tmp_path, dovecot_qresync, fetchdeliver_cmd):
    dc = dovecot_qresync
    dc.append("alice", make_message(1, "uv"))
    setup = FetchSetup(tmp_path, dc, fetchdeliver_cmd)
    setup.account("uv", "imap", "implicit")
    assert counts(setup.run().stdout, "uv") == (1, 1, 0, 0)
    assert counts(setup.run().stdout, "uv") == (0, 0, 0, 0)
    dc.set_uidvalidity("alice", 12345)
    dc.append("alice", make_message(2, "uv"))
    r = setup.run()
    # The server ignores QRESYNC parameters of another UIDVALIDITY: the full comparison finds the new one
    # and recognises the old one as delivered.
    assert counts(r.stdout, "uv") == (2, 1, 1, 0), r.stdout + r.stderr
    assert "UIDVALIDITY changed" in r.stderr
    assert len(setup.delivered()) == 2


def test_qresync_against_fetchdeliver_imap_server(tmp_path, fetchdeliver_cmd):
    """Our own IMAP server offers QRESYNC too: fetch from it with `after = "move:..."`, an undeleted
    message found through the SELECT's FETCH lines, the moved ones forgotten through VANISHED."""
    import subprocess

    from imap_helpers import make_server, plain

    from fetchdeliver.state import State

    server, _maildir, _passwd = make_server(tmp_path / "server", n_plain=4)
    try:
        cfg = tmp_path / "config.toml"
        cfg.write_text(f'[delivery]\nmaildir = "{tmp_path}/out"\nstate_dir = "{tmp_path}/state"\n\n'
                       f'[[account]]\nname = "own"\nprotocol = "imap"\nhost = "127.0.0.1"\nport = {server.port()}\n'
                       'tls = "none"\nuser = "alice"\npassword = "secret"\nafter = "move:Archive"\n')

        def fetch() -> tuple[int, int, int, int]:
            r = subprocess.run(fetchdeliver_cmd + ["fetch", "-c", str(cfg)], capture_output=True, text=True,
                               timeout=60)
            assert r.returncode == 0, r.stdout + r.stderr
            return counts(r.stdout, "own")

        assert fetch() == (4, 4, 0, 0)
        assert fetch() == (0, 0, 0, 0)
        with State(str(tmp_path / "state")) as st:
            assert st.imap_seen("own", "INBOX") == set()            # the moves came back as VANISHED
            assert st.imap_sync_point("own", "INBOX") is not None
        c = imapclient_for(server.port())
        c.select_folder("INBOX")
        c.append("INBOX", plain(9), flags=[b"\\Deleted"])
        assert fetch() == (0, 0, 0, 0)
        c.select_folder("INBOX")
        c.remove_flags(c.search("ALL"), [b"\\Deleted"])
        assert fetch() == (1, 1, 0, 0)
        c.select_folder("Archive", readonly=True)
        assert len(c.search("ALL")) == 5
        c.logout()
    finally:
        server.stop()


def imapclient_for(port: int):
    import imapclient

    c = imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30)
    c.login("alice", "secret")
    return c
