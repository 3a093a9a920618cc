"""CONTEXT=SEARCH (RFC 5267 section 4) on our server over a socket: SEARCH RETURN (UPDATE) answers
ESEARCH ADDTO/REMOVEFROM as flags change, messages arrive and are expunged (by this session and by
another), MIN/MAX/COUNT updates, CANCELUPDATE, a new SELECT ending the contexts, and the parser's rules."""

from __future__ import annotations

import pytest

from fetchdeliver.imapserver.commands import REGISTRY
from fetchdeliver.imapserver.protocol import ParseError, Parser
from fetchdeliver.storage.maildir import MaildirStore
from imap_helpers import RawClient, make_server, plain

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def served(tmp_path):
    server, maildir, _ = make_server(tmp_path, n_plain=5)
    a, b = RawClient(server.addresses[0][1]), RawClient(server.addresses[0][1])
    for c in (a, b):
        c.command("l", b"LOGIN alice secret")
        c.command("s", b"SELECT INBOX")
    yield MaildirStore(maildir), a, b
    a.close()
    b.close()
    server.stop()


def test_parser():
    assert REGISTRY["SEARCH"].parse(Parser(b" RETURN (UPDATE) SEEN"), False).returns == ["UPDATE"]
    assert REGISTRY["SEARCH"].parse(Parser(b" RETURN (UPDATE ALL) SEEN"), True).returns == ["UPDATE", "ALL"]
    with pytest.raises(ParseError):
        REGISTRY["SEARCH"].parse(Parser(b" RETURN (UPDATE SAVE) SEEN"), False)
    assert REGISTRY["CANCELUPDATE"].parse(Parser(b' "A01" "B02"'), False).tags == ("A01", "B02")
    with pytest.raises(ParseError):
        REGISTRY["CANCELUPDATE"].parse(Parser(b""), False)


def test_rfc_5267_updates(served):
    store, a, b = served
    # 4.2: the initial answer is a normal ESEARCH
    assert a.command("A01", b"SEARCH RETURN (UPDATE ALL) UNSEEN") == \
        [b'* ESEARCH (TAG "A01") ALL 1:5\r\n', b"A01 OK Search completed.\r\n"]
    # 4.3: this session's STORE: REMOVEFROM; undoing it: ADDTO
    got = a.command("A02", b"STORE 2:3 +FLAGS (\\Seen)")
    assert b'* ESEARCH (TAG "A01") REMOVEFROM (0 2:3)\r\n' in got
    got = a.command("A03", b"STORE 3 -FLAGS (\\Seen)")
    assert b'* ESEARCH (TAG "A01") ADDTO (0 3)\r\n' in got
    assert got.index(b'* ESEARCH (TAG "A01") ADDTO (0 3)\r\n') < len(got) - 1    # before the tagged OK
    # another session's change and a delivery: told at the next command, after EXISTS
    b.command("B01", b"STORE 1 +FLAGS (\\Seen)")
    store.deliver(plain(6))
    got = a.command("A04", b"NOOP")
    assert b"* 6 EXISTS\r\n" in got
    assert b'* ESEARCH (TAG "A01") REMOVEFROM (0 1)\r\n' in got and b'* ESEARCH (TAG "A01") ADDTO (0 6)\r\n' in got
    assert got.index(b"* 6 EXISTS\r\n") < got.index(b'* ESEARCH (TAG "A01") ADDTO (0 6)\r\n')
    # an expunged message leaves by the number it had
    a.command("A05", b"STORE 4 +FLAGS (\\Deleted)")
    got = a.command("A06", b"EXPUNGE")
    assert b"* 4 EXPUNGE\r\n" in got and b'* ESEARCH (TAG "A01") REMOVEFROM (0 4)\r\n' in got
    # CANCELUPDATE: no more
    assert a.command("A07", b'CANCELUPDATE "A01"') == [b"A07 OK Cancelupdate completed.\r\n"]
    assert a.command("A08", b"STORE 1 -FLAGS (\\Seen)") == [b"* 1 FETCH (FLAGS (\\Recent))\r\n",
                                                           b"A08 OK Store completed.\r\n"]


def test_uid_context_with_count_and_min(served):
    _, a, b = served
    assert a.command("U1", b"UID SEARCH RETURN (UPDATE MIN COUNT) UNSEEN")[0] == \
        b'* ESEARCH (TAG "U1") UID MIN 1 COUNT 5\r\n'
    got = a.command("U2", b"UID STORE 1 +FLAGS.SILENT (\\Seen)")
    assert got == [b'* ESEARCH (TAG "U1") UID MIN 2 COUNT 4\r\n', b"U2 OK Store completed.\r\n"]
    # selecting another mailbox ends every context
    a.command("U3", b"SELECT INBOX")
    b.command("B1", b"STORE 2 +FLAGS (\\Seen)")
    assert not any(b"ESEARCH" in ln for ln in a.command("U4", b"NOOP"))


def test_partial_rfc_5267_section_4_4(served):
    _, a, _ = served
    assert a.command("P1", b"SEARCH RETURN (PARTIAL 2:4) ALL")[0] == b'* ESEARCH (TAG "P1") PARTIAL (2:4 2:4)\r\n'
    assert a.command("P2", b"SEARCH RETURN (PARTIAL 4:2) 1:2,4:5")[0] == \
        b'* ESEARCH (TAG "P2") PARTIAL (2:4 2,4:5)\r\n'                      # the range as lo:hi
    assert a.command("P3", b"UID SEARCH RETURN (COUNT PARTIAL 6:9) ALL")[0] == \
        b'* ESEARCH (TAG "P3") UID COUNT 5 PARTIAL (6:9 NIL)\r\n'
    for bad in (b"SEARCH RETURN (PARTIAL 1) ALL", b"SEARCH RETURN (PARTIAL 1:*) ALL", b"SEARCH RETURN (PARTIAL 0:2) ALL"):
        assert a.command("P4", bad)[-1].startswith(b"P4 BAD")
