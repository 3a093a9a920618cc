"""CONDSTORE: a poll of a folder where nothing changed costs one command (the SELECT/EXAMINE), checked in
Dovecot's own raw log of what the client sent; any change (new mail, a flag set elsewhere, an expunge)
brings the full comparison back."""

from __future__ import annotations

import glob
import os
import re

import pytest
from conftest import _start, make_message
from fetchsetup import FetchSetup, counts

N = 3000


@pytest.fixture
def dovecot_rawlog(request):
    import shutil
    import tempfile

    # Dovecot's mail processes run as another user: a directory they can reach and write.
    rawlog = tempfile.mkdtemp(prefix="fd-rawlog-", dir="/tmp")
    os.chmod(rawlog, 0o777)
    request.addfinalizer(lambda: shutil.rmtree(rawlog, ignore_errors=True))
    dc = _start(request, users={"alice": "secret"},
                extra_config=f"protocol imap {{\n  rawlog_dir = {rawlog}\n}}\n")
    dc.rawlog = rawlog
    return dc


def sent_commands(dc) -> list[list[str]]:
    """The commands of each logged-in session so far (Dovecot's rawlog *.in files), oldest first."""
    sessions = []
    for path in sorted(glob.glob(os.path.join(dc.rawlog, "*.in")), key=os.path.getmtime):
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        # "<timestamp> <tag> COMMAND args"
        sessions.append([" ".join(line.split(" ")[2:]) for line in lines if line.strip()])
    for path in glob.glob(os.path.join(dc.rawlog, "*")):
        os.unlink(path)
    return sessions


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
