"""ESEARCH (RFC 4731) and SEARCHRES (RFC 5182) against our server: the RFCs' examples as sessions."""

from __future__ import annotations

import imaplib
import pytest

from imap_helpers import RawClient, make_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def c(tmp_path):
    server, maildir, passwd = make_server(tmp_path, n_plain=8, idle_poll=600)
    cl = RawClient(server.port())
    assert cl.command("a0", b"LOGIN alice secret")[-1].startswith(b"a0 OK")
    cl.command("a1", b"SELECT INBOX")
    # Flagged: 2, 5, 6; sender 6 is "Smith" for the RFC's NOT FROM "Smith".
    cl.command("a2", b"STORE 2,5,6 +FLAGS.SILENT (\\Flagged)")
    cl.server = server
    yield cl
    cl.close()
    server.stop()


def test_capabilities(c):
    caps = c.command("b0", b"CAPABILITY")[0].split()
    assert b"ESEARCH" in caps and b"SEARCHRES" in caps


def test_rfc4731_examples(c):
    # RFC 4731 section 4 (the message numbers are this mailbox's).
    assert c.command("A282", b'SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM "sender6"') == [
        b'* ESEARCH (TAG "A282") MIN 2 COUNT 2\r\n', b"A282 OK Search completed.\r\n"]
    assert c.command("A283", b'SEARCH RETURN () FLAGGED SINCE 1-Feb-1994')[0] == \
        b'* ESEARCH (TAG "A283") ALL 2,5:6\r\n'
    assert c.command("A284", b"SEARCH RETURN (MIN) DELETED")[0] == b'* ESEARCH (TAG "A284")\r\n'
    assert c.command("A284b", b"SEARCH RETURN (COUNT MIN MAX ALL) DELETED")[0] == \
        b'* ESEARCH (TAG "A284b") COUNT 0\r\n'
    assert c.command("A285", b"UID SEARCH RETURN (MIN MAX) 1:5000")[0] == \
        b'* ESEARCH (TAG "A285") UID MIN 1 MAX 8\r\n'
    assert c.command("A286", b"SEARCH RETURN (ALL) 1:3,7")[0] == b'* ESEARCH (TAG "A286") ALL 1:3,7\r\n'
    assert c.command("A287", b"SEARCH RETURN (BOGUS) ALL")[-1].startswith(b"A287 BAD")


def test_rfc5182_examples(c):
    # RFC 5182 section 2.1 / 4: SAVE alone answers no ESEARCH; `$` in FETCH, STORE, SEARCH, UID EXPUNGE.
    assert c.command("A282", b'SEARCH RETURN (SAVE) FLAGGED SINCE 1-Feb-1994 NOT FROM "sender6"') == \
        [b"A282 OK Search completed.\r\n"]
    got = c.command("A283", b"FETCH $ (UID FLAGS)")
    assert [ln.split(b" FETCH")[0] for ln in got[:-1]] == [b"* 2", b"* 5"]
    assert c.command("A284", b"SEARCH $ SMALLER 4096")[0] == b"* SEARCH 2 5\r\n"
    assert c.command("A285", b"UID SEARCH UID $")[0] == b"* SEARCH 2 5\r\n"
    assert c.command("A286", b"SEARCH OR $ 1")[0] == b"* SEARCH 1 2 5\r\n"
    # SAVE with MIN (and no ALL/COUNT) saves only the minimum; the ESEARCH answer is still given.
    assert c.command("A290", b"UID SEARCH RETURN (SAVE MIN) FLAGGED")[0] == b'* ESEARCH (TAG "A290") UID MIN 2\r\n'
    assert c.command("A291", b"UID SEARCH $")[0] == b"* SEARCH 2\r\n"
    assert c.command("A292", b"SEARCH RETURN (SAVE MIN MAX) FLAGGED")[0] == b'* ESEARCH (TAG "A292") MIN 2 MAX 6\r\n'
    assert c.command("A293", b"SEARCH $")[0] == b"* SEARCH 2 6\r\n"
    # RFC 5182 example: UID SEARCH ... SAVE, then UID STORE $ / UID EXPUNGE $.
    c.command("A301", b"UID SEARCH RETURN (SAVE) UID 6:* NOT FLAGGED")
    got = c.command("A303", b"UID STORE $ +FLAGS (\\Deleted)")
    assert [ln.split(b" FETCH")[0] for ln in got[:-1]] == [b"* 7", b"* 8"]
    c.command("A303b", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    got = c.command("A304", b"UID EXPUNGE $")
    assert got == [b"* 8 EXPUNGE\r\n", b"* 7 EXPUNGE\r\n", b"A304 OK Expunge completed.\r\n"]
    # The expunged messages left the saved result; message 1 (not in it) is still there.
    assert c.command("A305", b"UID SEARCH $")[0] == b"* SEARCH\r\n"
    assert c.command("A306", b"SEARCH DELETED")[0] == b"* SEARCH 1\r\n"
    # A new SELECT forgets the saved result: `$` is then the empty set.
    c.command("A307", b"SEARCH RETURN (SAVE) ALL")
    c.command("A308", b"SELECT INBOX")
    assert c.command("A309", b"FETCH $ FLAGS") == [b"A309 OK Fetch completed.\r\n"]


def test_esearch_with_modseq_and_imaplib(c):
    got = c.command("A1", b"SEARCH RETURN (COUNT) MODSEQ 1")
    assert got[0].startswith(b"* OK [HIGHESTMODSEQ ")     # the first CONDSTORE-enabling command
    assert got[1].startswith(b'* ESEARCH (TAG "A1") COUNT 8 MODSEQ ')
    # Python's imaplib keeps the untagged ESEARCH answer under its name.
    m = imaplib.IMAP4("127.0.0.1", c.server.port(), timeout=30)
    try:
        m.login("alice", "secret")
        m.select("INBOX")
        typ, _ = m.uid("SEARCH", "RETURN (MIN MAX COUNT) FLAGGED")
        assert typ == "OK"
        tag_data = m.response("ESEARCH")[1][0]
        assert tag_data.startswith(b'(TAG "') and tag_data.endswith(b'") UID MIN 2 MAX 6 COUNT 3')
    finally:
        m.logout()
