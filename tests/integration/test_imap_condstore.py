"""CONDSTORE and QRESYNC (RFC 7162) against our server on 127.0.0.1: the RFC's examples as sessions.

The examples are replayed with the message numbers and MODSEQs of a real Maildir; what is
asserted is the shape and the logic of each answer (which messages, which response codes).
"""

from __future__ import annotations

import re

import imapclient
import pytest

from fetchdeliver.imapserver.auth import PasswdFileAuthenticator
from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer
from fetchdeliver.storage import index as indexmod
from imap_helpers import RawClient, make_server, plain

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def srv(tmp_path):
    server, maildir, passwd = make_server(tmp_path, n_plain=5, idle_poll=600)
    server.maildir = maildir
    server.passwd = passwd
    yield server
    server.stop()


def login(srv) -> RawClient:
    c = RawClient(srv.port())
    assert c.command("a0", b"LOGIN alice secret")[-1].startswith(b"a0 OK")
    return c


def code(lines, name: str) -> int:
    for ln in lines:
        m = re.search(rb"\[" + name.encode() + rb" (\d+)\]", ln)
        if m:
            return int(m.group(1))
    raise AssertionError(f"no [{name} n] in {lines!r}")


def modseqs(lines) -> dict[int, int]:
    """{sequence number: MODSEQ} from the untagged FETCH answers."""
    out = {}
    for ln in lines:
        m = re.match(rb"\* (\d+) FETCH \(.*MODSEQ \((\d+)\)", ln)
        if m:
            out[int(m.group(1))] = int(m.group(2))
    return out


def test_capability_select_status_announce_highestmodseq(srv):
    c = login(srv)
    caps = c.command("a1", b"CAPABILITY")[0].split()
    assert b"CONDSTORE" in caps and b"QRESYNC" in caps
    sel = c.command("a2", b"SELECT INBOX")
    hms = code(sel, "HIGHESTMODSEQ")
    assert hms >= 1            # RFC 7162: a mod-sequence value is positive
    st = c.command("a3", b"STATUS INBOX (HIGHESTMODSEQ MESSAGES)")
    assert st[0].strip() == b'* STATUS "INBOX" (HIGHESTMODSEQ %d MESSAGES 5)' % hms
    # RFC 7162 3.1.2: SELECT (CONDSTORE) enables CONDSTORE: a FETCH that sets \Seen now tells
    # the new MODSEQ (a plain FETCH FLAGS does not, as in Dovecot).
    sel = c.command("a4", b"SELECT INBOX (CONDSTORE)")
    assert sel[-1].startswith(b"a4 OK [READ-WRITE]")
    assert sel[0] == b"* OK [CLOSED] Previous mailbox closed.\r\n"    # as Dovecot, QRESYNC enabled or not
    assert modseqs(c.command("a5", b"FETCH 1:2 FLAGS")) == {}
    got = c.command("a6", b"FETCH 1 BODY[TEXT]")
    assert re.match(rb"\* 1 FETCH \(BODY\[TEXT\] \{\d+\}", got[0]) and b"MODSEQ (" in got[2], got
    assert modseqs(c.command("a7", b"FETCH 1 MODSEQ"))[1] > hms
    c.close()


def test_fetch_modseq_and_changedsince(srv):
    c = login(srv)
    c.command("a1", b"SELECT INBOX")
    # RFC 7162 3.1.4.1 example: FETCH MODSEQ.
    got = c.command("a2", b"FETCH 1:* (FLAGS MODSEQ)")
    before = modseqs(got)
    assert sorted(before) == [1, 2, 3, 4, 5]
    hms = max(before.values())
    c.command("a3", b"STORE 2,4 +FLAGS (\\Flagged)")
    # RFC 7162 3.1.4.1 example: FETCH 1:* (FLAGS) (CHANGEDSINCE n): only the changed messages.
    got = c.command("a4", b"FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % hms)
    changed = modseqs(got)
    assert sorted(changed) == [2, 4]
    assert all(v > hms for v in changed.values())
    assert all(b"\\Flagged" in ln for ln in got[:-1])
    got = c.command("a5", b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % max(changed.values()))
    assert got == [b"a5 OK Fetch completed.\r\n"]
    # VANISHED needs QRESYNC enabled.
    assert c.command("a6", b"UID FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)")[-1].startswith(b"a6 BAD")
    c.close()


def test_store_unchangedsince_answers_modified(srv):
    c = login(srv)
    c.command("a1", b"SELECT INBOX (CONDSTORE)")
    ms = modseqs(c.command("a2", b"FETCH 1:5 MODSEQ"))
    # Another client changes message 3 (and so its MODSEQ).
    other = login(srv)
    other.command("b1", b"SELECT INBOX")
    other.command("b2", b"STORE 3 +FLAGS.SILENT ($Work)")
    other.close()
    # RFC 7162 3.1.3 example 10: a conditional STORE.SILENT; the unchanged messages are stored
    # and report their new MODSEQ, the changed one is listed in MODIFIED.
    since = max(ms[2], ms[3], ms[4])
    got = c.command("a3", b"STORE 2:4 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Deleted)" % since)
    assert got[-1].startswith(b"a3 OK [MODIFIED 3]"), got
    # (Message 3's change by the other client is announced first, with its FLAGS.)
    assert any(re.match(rb"\* 3 FETCH \(FLAGS \([^)]*\$Work\) MODSEQ \(\d+\)\)", ln) for ln in got), got
    stored = modseqs(ln for ln in got if b"FLAGS" not in ln)
    assert sorted(stored) == [2, 4] and all(v > since for v in stored.values())
    # Message 3 did not get \Deleted; 2 and 4 did.
    flags = c.command("a4", b"FETCH 2:4 FLAGS")
    assert b"\\Deleted" in flags[-4] or any(ln.startswith(b"* 2 FETCH") and b"\\Deleted" in ln for ln in flags)
    three = [ln for ln in flags if ln.startswith(b"* 3 FETCH")]
    assert three and b"\\Deleted" not in three[0] and b"$Work" in three[0]
    # UNCHANGEDSINCE 0 always fails (RFC 7162 3.1.3).
    got = c.command("a5", b"UID STORE 1:* (UNCHANGEDSINCE 0) +FLAGS (\\Seen)")
    assert got[-1].startswith(b"a5 OK [MODIFIED 1:5]"), got
    # Without .SILENT the stored messages answer with FLAGS and MODSEQ.
    cur = modseqs(c.command("a6", b"FETCH 1 MODSEQ"))[1]
    got = c.command("a7", b"STORE 1 (UNCHANGEDSINCE %d) +FLAGS (\\Answered)" % cur)
    assert got[-1].startswith(b"a7 OK Store completed")
    assert re.match(rb"\* 1 FETCH \(FLAGS \(\\Answered \\Recent\) MODSEQ \((\d+)\)\)", got[0]), got
    c.close()


def test_search_modseq(srv):
    c = login(srv)
    c.command("a1", b"SELECT INBOX")
    hms = code(c.command("a2", b"SELECT INBOX"), "HIGHESTMODSEQ")
    c.command("a3", b"STORE 2 +FLAGS (\\Draft)")
    c.command("a4", b"STORE 5 +FLAGS (\\Seen)")
    # RFC 7162 3.1.5 example: SEARCH MODSEQ "/flags/\\draft" all n, answered with the highest MODSEQ.
    got = c.command("a5", b'SEARCH MODSEQ "/flags/\\\\draft" all %d' % (hms + 1))
    assert got[0].startswith(b"* OK [HIGHESTMODSEQ ")     # the first CONDSTORE-enabling command
    m = re.match(rb"\* SEARCH 2 5 \(MODSEQ (\d+)\)\r\n", got[1])
    assert m, got
    top = int(m.group(1))
    assert top == max(modseqs(c.command("a6", b"FETCH 2,5 MODSEQ")).values())
    got = c.command("a7", b"UID SEARCH MODSEQ %d" % (top + 1))
    assert got[0] == b"* SEARCH\r\n"           # no hits: no MODSEQ (RFC 7162 3.1.5)
    got = c.command("a8", b"SEARCH OR NOT MODSEQ %d DRAFT" % (hms + 1))
    assert re.match(rb"\* SEARCH 1 2 3 4 \(MODSEQ \d+\)", got[0]), got
    c.command("a9", b'SEARCH MODSEQ "/flags/\\\\draft" bogus 1')[-1].startswith(b"a9 BAD")
    c.close()


def test_enable_qresync_vanished_instead_of_expunge(srv):
    a = login(srv)
    got = a.command("a1", b"ENABLE QRESYNC CONDSTORE")
    assert got[0] == b"* ENABLED QRESYNC CONDSTORE\r\n"
    assert a.command("a1b", b"ENABLE QRESYNC")[0] == b"* ENABLED\r\n"   # nothing new enabled
    a.command("a2", b"SELECT INBOX")
    b = login(srv)
    b.command("b1", b"SELECT INBOX")
    b.command("b2", b"STORE 2,3 +FLAGS.SILENT (\\Deleted)")
    b.command("b3", b"STORE 5 +FLAGS.SILENT (\\Flagged)")
    assert b.command("b4", b"EXPUNGE")[-1].startswith(b"b4 OK")
    got = a.command("a3", b"NOOP")
    # RFC 7162 3.2.10: VANISHED (UIDs), never EXPUNGE; flag changes carry UID and MODSEQ.
    assert b"* VANISHED 2:3\r\n" in got, got
    assert not any(b"EXPUNGE" in ln for ln in got)
    assert any(re.match(rb"\* 3 FETCH \(FLAGS \(\\Flagged \\Recent\) UID 5 MODSEQ \(\d+\)\)", ln) for ln in got), got
    a.command("a4", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    got = a.command("a5", b"EXPUNGE")
    assert got[0] == b"* VANISHED 1\r\n" and len(got) == 2
    assert re.match(rb"a5 OK \[HIGHESTMODSEQ \d+\] Expunge completed", got[1]), got
    a.close()
    b.close()


def test_select_qresync_resyncs(srv):
    c = login(srv)
    sel = c.command("a1", b"SELECT INBOX")
    uidvalidity, hms = code(sel, "UIDVALIDITY"), code(sel, "HIGHESTMODSEQ")
    c.command("a2", b"STORE 1 +FLAGS (\\Seen)")
    c.command("a3", b"STORE 3,4 +FLAGS (\\Deleted)")
    c.command("a4", b"EXPUNGE")
    c.command("a5", b"APPEND INBOX {%d+}\r\n" % len(plain(9)) + plain(9))
    c.command("a6", b"LOGOUT")
    c.close()

    c = login(srv)
    # Without ENABLE QRESYNC the parameter is an error (RFC 7162 3.2.5).
    got = c.command("b0", b"SELECT INBOX (QRESYNC (%d %d))" % (uidvalidity, hms))
    assert got[-1].startswith(b"b0 BAD"), got
    c.command("b1", b"ENABLE QRESYNC")
    # RFC 7162 3.2.5.2 example: SELECT (QRESYNC (uidvalidity modseq known-uids)).
    got = c.command("b2", b"SELECT INBOX (QRESYNC (%d %d 1:5))" % (uidvalidity, hms))
    assert got[-1].startswith(b"b2 OK [READ-WRITE]")
    assert b"* VANISHED (EARLIER) 3:4\r\n" in got, got
    fetches = [ln for ln in got if b" FETCH " in ln]
    # Message 1 changed; the new message (UID 6) is outside known-uids 1:5.
    assert len(fetches) == 1 and re.match(rb"\* 1 FETCH \(UID 1 FLAGS \(\\Seen\) MODSEQ \(\d+\)\)", fetches[0])
    assert got.index(b"* VANISHED (EARLIER) 3:4\r\n") < got.index(fetches[0])
    # Selecting again: [CLOSED] first (RFC 7162 3.2.11); no known-uids: every UID, the new one too.
    got = c.command("b3", b"EXAMINE INBOX (QRESYNC (%d %d))" % (uidvalidity, hms))
    assert got[0] == b"* OK [CLOSED] Previous mailbox closed.\r\n"
    assert b"* VANISHED (EARLIER) 3:4\r\n" in got
    assert sorted(re.match(rb"\* \d+ FETCH \(UID (\d+)", ln).group(1) for ln in got if b" FETCH " in ln) \
        == [b"1", b"6"]
    # With sequence-match data (which we may ignore: we keep every expunge) the answer is the same.
    got2 = c.command("b4", b"EXAMINE INBOX (QRESYNC (%d %d 1:6 (1,3 1,3)))" % (uidvalidity, hms))
    assert [ln for ln in got2 if b"VANISHED" in ln or b" FETCH " in ln] == \
        [ln for ln in got if b"VANISHED" in ln or b" FETCH " in ln]
    # A wrong UIDVALIDITY: no VANISHED and no FETCH (the client must resync from scratch).
    got = c.command("b5", b"EXAMINE INBOX (QRESYNC (%d %d))" % (uidvalidity + 1, hms))
    assert not [ln for ln in got if b"VANISHED" in ln or b" FETCH " in ln]
    # RFC 7162 3.2.6 example: UID FETCH ... (CHANGEDSINCE n VANISHED).
    got = c.command("b6", b"UID FETCH 1:* FLAGS (CHANGEDSINCE %d VANISHED)" % hms)
    assert got[0] == b"* VANISHED (EARLIER) 3:4\r\n"
    assert len([ln for ln in got if b" FETCH " in ln]) == 2
    got = c.command("b7", b"UID FETCH 4:5 FLAGS (CHANGEDSINCE %d VANISHED)" % hms)
    assert got == [b"* VANISHED (EARLIER) 4\r\n", b"b7 OK Fetch completed.\r\n"]
    c.close()


def test_modseq_persists_across_restart(tmp_path):
    server, maildir, passwd = make_server(tmp_path, n_plain=3, idle_poll=600)
    try:
        c = login(server)
        c.command("a1", b"SELECT INBOX")
        c.command("a2", b"STORE 2 +FLAGS (\\Flagged)")
        c.command("a3", b"STORE 3 +FLAGS (\\Deleted)")
        c.command("a4", b"EXPUNGE")
        before = c.command("a5", b"FETCH 1:* (UID MODSEQ)")
        hms = code(c.command("a6", b"SELECT INBOX"), "HIGHESTMODSEQ")
        c.close()
    finally:
        server.stop()
    indexmod.close_idle()
    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                       default_mail="maildir:" + maildir, login_failure_delay=0, idle_poll=600)
    server = ThreadedServer(cfg).start()
    try:
        c = login(server)
        c.command("b0", b"ENABLE QRESYNC")
        sel = c.command("b1", b"SELECT INBOX")
        assert code(sel, "HIGHESTMODSEQ") == hms
        fetches = [ln for ln in before if b" FETCH " in ln]
        assert len(fetches) == 2
        assert [ln for ln in c.command("b2", b"FETCH 1:* (UID MODSEQ)") if b" FETCH " in ln] == fetches
        # The expunge is remembered too: VANISHED (EARLIER) after the restart.
        uv = code(sel, "UIDVALIDITY")
        got = c.command("b3", b"EXAMINE INBOX (QRESYNC (%d %d))" % (uv, hms - 1))
        assert b"* VANISHED (EARLIER) 3\r\n" in got, got
        c.close()
    finally:
        server.stop()


def test_imapclient_condstore(srv):
    """The imapclient library's own CONDSTORE support (modifiers, select_folder's HIGHESTMODSEQ)."""
    c = imapclient.IMAPClient("127.0.0.1", port=srv.port(), ssl=False, timeout=30)
    try:
        c.login("alice", "secret")
        assert c.has_capability("CONDSTORE")
        assert c.enable("CONDSTORE") == [b"CONDSTORE"]
        info = c.select_folder("INBOX")
        hms = info[b"HIGHESTMODSEQ"]
        c.add_flags([2], [b"$Label1"])
        got = c.fetch([1, 2, 3, 4, 5], ["FLAGS"], modifiers=[f"CHANGEDSINCE {hms}"])
        assert list(got) == [2]
        assert b"$Label1" in got[2][b"FLAGS"] and got[2][b"MODSEQ"][0] > hms
    finally:
        c.logout()


def test_first_enabling_command_tells_highestmodseq(srv):
    """RFC 7162 3.1: a CONDSTORE-enabling command in the selected state gets [HIGHESTMODSEQ n] first
    (imaptest's esearch-condstore group checks this with FETCH MODSEQ)."""
    c = login(srv)
    hms = code(c.command("a1", b"SELECT INBOX"), "HIGHESTMODSEQ")
    got = c.command("a2", b"FETCH 1 MODSEQ")
    assert got[0] == b"* OK [HIGHESTMODSEQ %d] Highest.\r\n" % hms
    assert not any(b"HIGHESTMODSEQ" in ln for ln in c.command("a3", b"FETCH 2 MODSEQ"))   # once only
    # ESEARCH with MIN (or MAX) alone: the MODSEQ of that message, not the highest of all hits.
    c.command("a4", b"STORE 3 +FLAGS (\\Seen)")
    ms = modseqs(c.command("a5", b"FETCH 1:3 MODSEQ"))
    got = c.command("a6", b"SEARCH RETURN (MIN) 1:3 MODSEQ 1")
    assert got[0] == b'* ESEARCH (TAG "a6") MIN 1 MODSEQ %d\r\n' % ms[1]
    got = c.command("a7", b"SEARCH RETURN (MAX COUNT) 1:3 MODSEQ 1")
    assert got[0] == b'* ESEARCH (TAG "a7") MAX 3 COUNT 3 MODSEQ %d\r\n' % max(ms.values())
    c.close()
