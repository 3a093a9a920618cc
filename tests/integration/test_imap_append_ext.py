"""APPEND's extensions over a socket: MULTIAPPEND (RFC 3502), CATENATE (RFC 4469) with IMAP URLs
(RFC 5092), BINARY's literal8 (RFC 3516), APPENDLIMIT (RFC 7889) and LITERAL- (RFC 7888)."""

from __future__ import annotations

import re

import pytest

from fetchdeliver.delivery.maildir import MaildirStore
from imap_helpers import RawClient, make_server

pytestmark = pytest.mark.timeout(120)

# RFC 3502 section 6's example messages (shortened)
MSG1 = (b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nFrom: Fred Foobar <foobar@Blurdybloop.example.COM>\r\n"
        b"Subject: afternoon meeting\r\nTo: mooch@owatagu.siam.edu\r\nMessage-Id: <B27397-0100000@Blurdybloop.example.COM>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\nHello Joe, do you think we can meet at 3:30 tomorrow?\r\n")
MSG2 = (b"Date: Mon, 7 Feb 1994 22:43:04 -0800 (PST)\r\nFrom: Joe Mooch <mooch@OWATAGU.siam.EDU>\r\n"
        b"Subject: Re: afternoon meeting\r\nTo: foobar@blurdybloop.example.com\r\nMessage-Id: <a0434793874930@OWATAGU.siam.EDU>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n3:30 is fine with me.\r\n")


def _send_literals(c: RawClient, tag: str, head: bytes, pieces: list[tuple[bytes, bytes]],
                   tail: bytes = b"") -> list[bytes]:
    """`tag head` then for each (text before the literal, literal bytes): text {n}, wait for +, the bytes;
    then CRLF; returns the answer lines."""
    line = tag.encode() + b" " + head
    for before, data in pieces:
        c.send(line + before + b"{%d}\r\n" % len(data))
        cont = c.line()
        assert cont.startswith(b"+"), cont
        line = data
    c.send(line + tail + b"\r\n")
    return c.until(tag)


def _messages(maildir: str, folder: str) -> list[bytes]:
    import os

    path = maildir if folder == "INBOX" else os.path.join(maildir, "." + folder)
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(path, sub)
        for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            with open(os.path.join(d, n), "rb") as f:
                out.append(f.read())
    return out


@pytest.fixture
def served(tmp_path):
    server, maildir, _ = make_server(tmp_path, n_plain=0, idle_poll=600)
    MaildirStore(maildir, fsync=False).create_mailbox("saved-messages")
    c = RawClient(server.port())
    c.command("a0", b"LOGIN alice secret")
    yield server, maildir, c
    c.close()
    server.stop()


def test_rfc3502_multiappend_example(served):
    server, maildir, c = served
    caps = c.command("a1", b"CAPABILITY")[0].split()
    assert b"MULTIAPPEND" in caps
    got = _send_literals(c, "A003", b"APPEND saved-messages", [(b" (\\Seen) ", MSG1),
                                                               (b' (\\Seen) " 7-Feb-1994 22:43:04 -0800" ', MSG2)])
    m = re.match(rb"A003 OK \[APPENDUID (\d+) (\d+):(\d+)\]", got[-1])
    assert m and int(m.group(3)) == int(m.group(2)) + 1, got
    stored = _messages(maildir, "saved-messages")
    assert sorted(stored) == sorted([MSG1, MSG2])
    # RFC 3502 section 6: the server may refuse before the literal: no "+", NO [TRYCREATE]
    c.send(b"A004 APPEND bogusname (\\Flagged) {1023}\r\n")
    assert c.line().startswith(b"A004 NO [TRYCREATE]")
    got = c.command("A04b", b"APPEND bogusname (\\Flagged) {3+}\r\nabc")
    assert got[-1].startswith(b"A04b NO [TRYCREATE]")
    got = c.command("A005", b'APPEND saved-messages "random text" {3+}\r\nabc')
    assert got[-1].startswith(b"A005 BAD")
    c.command("a6", b"SELECT saved-messages")
    got = c.command("a7", b"FETCH 1:* (FLAGS INTERNALDATE)")
    assert got[-1].startswith(b"a7 OK") and len(got) == 3
    assert all(b"\\Seen" in ln for ln in got[:2])
    assert b"-Feb-1994 " in got[1] and b"-Feb-1994 " not in got[0]    # the second one's date-time


def test_multiappend_is_all_or_none(served):
    """A failure on the second message (a CATENATE URL that names nothing) leaves no message behind."""
    server, maildir, c = served
    got = c.command("b1", b"APPEND saved-messages {5+}\r\nfirst CATENATE (URL \"/INBOX/;UID=99\")")
    assert got[-1].startswith(b"b1 NO [BADURL /INBOX/;UID=99]"), got
    assert _messages(maildir, "saved-messages") == []
    got = c.command("b2", b"STATUS saved-messages (MESSAGES)")
    assert b"(MESSAGES 0)" in got[0]


def test_rfc4469_catenate_examples(served):
    server, maildir, c = served
    assert b"CATENATE" in c.command("a1", b"CAPABILITY")[0].split()
    got = c.command("c0", b"APPEND INBOX {%d+}\r\n" % len(MSG1) + MSG1)
    uidvalidity, uid = re.search(rb"APPENDUID (\d+) (\d+)", got[-1]).groups()
    # RFC 4469 section 5: a message made of a URL's header, a new body part and another URL's part
    url = b"/INBOX;UIDVALIDITY=" + uidvalidity + b"/;UID=" + uid
    c.send(b"A003 APPEND Drafts-missing CATENATE (TEXT {1}\r\n")     # refused before the literal
    assert c.line().startswith(b"A003 NO [TRYCREATE]")
    got = c.command("A03b", b'APPEND Drafts-missing CATENATE (URL "' + url + b'")')
    assert got[-1].startswith(b"A03b NO [TRYCREATE]")
    got = _send_literals(c, "A004", b'APPEND saved-messages (\\Seen) CATENATE (URL "' + url +
                         b'/;SECTION=HEADER" TEXT ', [(b"", b"--abc\r\nnew part\r\n")], b")")
    assert got[-1].startswith(b"A004 OK [APPENDUID"), got
    got = c.command("A005", b'APPEND saved-messages CATENATE (URL "' + url + b'/;SECTION=TEXT" URL "' + url +
                    b'/;SECTION=1")')
    assert got[-1].startswith(b"A005 OK"), got
    header, body = MSG1.split(b"\r\n\r\n", 1)
    stored = sorted(_messages(maildir, "saved-messages"))
    assert stored == sorted([header + b"\r\n\r\n--abc\r\nnew part\r\n", body + body])
    # a UIDVALIDITY that is not the mailbox's, a section that does not exist: BADURL
    bad = b"/INBOX;UIDVALIDITY=1/;UID=" + uid
    got = c.command("A006", b'APPEND saved-messages CATENATE (URL "' + bad + b'")')
    assert got[-1].startswith(b"A006 NO [BADURL " + bad + b"]")
    got = c.command("A007", b'APPEND saved-messages CATENATE (URL "' + url + b'/;SECTION=7")')
    assert got[-1].startswith(b"A007 NO [BADURL")
    got = c.command("A07b", b'APPEND saved-messages CATENATE (URL "/x]y/;UID=1")')   # no "]" inside the code
    assert got[-1].startswith(b"A07b NO [BADURL /xy/;UID=1] ")
    # an absolute URL of this server, and a partial
    got = c.command("A008", b'APPEND saved-messages CATENATE (URL "imap://alice@localhost' + url +
                    b'/;SECTION=TEXT/;PARTIAL=0.5")')
    assert got[-1].startswith(b"A008 OK"), got
    assert body[:5] in _messages(maildir, "saved-messages")


def test_binary_append_with_literal8(served):
    server, maildir, c = served
    msg = (b"From: a@example.org\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary"
           b"\r\n\r\n\x00\x01\xff\r\n")
    got = c.command("d1", b"APPEND saved-messages ~{%d+}\r\n" % len(msg) + msg)
    assert got[-1].startswith(b"d1 OK"), got
    assert _messages(maildir, "saved-messages") == [msg]
    c.command("d2", b"SELECT saved-messages")
    c.send(b"d3 FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])\r\n")
    data = c.f.readline()
    assert data == b"* 1 FETCH (BINARY.SIZE[1] 5 BINARY[1] ~{5}\r\n"
    assert c.f.read(5) == b"\x00\x01\xff\r\n"
    assert c.until("d3")[-1].startswith(b"d3 OK")


def test_appendlimit_refuses_before_the_literal(tmp_path):
    server, maildir, _ = make_server(tmp_path, n_plain=0, idle_poll=600, append_limit=1000)
    c = RawClient(server.port())
    try:
        c.command("a0", b"LOGIN alice secret")
        assert b"APPENDLIMIT=1000" in c.command("a1", b"CAPABILITY")[0].split()
        # RFC 7889 section 3: the STATUS item (one limit for every mailbox), also through LIST-STATUS
        assert c.command("a2", b"STATUS INBOX (APPENDLIMIT)")[0] == b'* STATUS "INBOX" (APPENDLIMIT 1000)\r\n'
        assert b'* STATUS "INBOX" (APPENDLIMIT 1000)\r\n' in c.command("a3", b'LIST "" INBOX RETURN (STATUS (APPENDLIMIT))')
        # RFC 7889 section 4's exchange: NO [TOOBIG] instead of the continuation request
        c.send(b"A003 APPEND INBOX {1001}\r\n")
        assert c.line().startswith(b"A003 NO [TOOBIG]")
        got = c.command("A004", b"APPEND INBOX {1000+}\r\n" + b"x" * 1000)
        assert got[-1].startswith(b"A004 OK")
        got = c.command("A005", b"APPEND INBOX {1001+}\r\n" + b"x" * 1001)    # already sent: read, refused
        assert got[-1].startswith(b"A005 NO [TOOBIG]")
        got = c.command("A006", b"APPEND INBOX CATENATE (TEXT {600+}\r\n" + b"x" * 600 + b" TEXT {600+}\r\n" +
                        b"y" * 600 + b")")
        assert got[-1].startswith(b"A006 NO [TOOBIG]")
        assert c.command("A007", b"NOOP")[-1].startswith(b"A007 OK")
        assert len(_messages(maildir, "INBOX")) == 1
    finally:
        c.close()
        server.stop()


def test_literal_minus(tmp_path):
    server, maildir, _ = make_server(tmp_path, n_plain=0, idle_poll=600, literal_plus=False)
    c = RawClient(server.port())
    try:
        c.command("a0", b"LOGIN alice secret")
        caps = c.command("a1", b"CAPABILITY")[0].split()
        assert b"LITERAL-" in caps and b"LITERAL+" not in caps
        # RFC 7888 section 3's example: small non-synchronizing literals still work
        c2 = RawClient(server.port())
        try:
            c2.send(b"A001 LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n")
            assert c2.until("A001")[-1].startswith(b"A001 OK")
        finally:
            c2.close()
        got = c.command("a2", b"APPEND INBOX {4096+}\r\n" + b"x" * 4096)
        assert got[-1].startswith(b"a2 OK")
        # RFC 7888 section 4: a larger non-synchronizing literal is refused with BAD [TOOBIG]
        got = c.command("a3", b"APPEND INBOX {4097+}\r\n" + b"x" * 4097)
        assert got[-1].startswith(b"a3 BAD [TOOBIG]")
        assert c.command("a4", b"NOOP")[-1].startswith(b"a4 OK")
        assert len(_messages(maildir, "INBOX")) == 1
    finally:
        c.close()
        server.stop()


def test_multiappend_over_quota_appends_nothing(tmp_path):
    """The third of three messages is over the [quota] message limit: the command adds none (RFC 3502
    section 6.3.11), and the quota's usage is back where it was."""
    from test_imap_quota import append, login, msg, serve

    srv, maildir = serve(tmp_path, {"storage": 100 * 1024, "messages": 4})
    try:
        c = login(srv)
        for i in range(2):
            assert append(c, f"a{i}", msg(i))[-1].startswith(b"a%d OK" % i)
        got = c.command("M1", b"APPEND INBOX " + b" ".join(b"{%d+}\r\n" % len(msg(i)) + msg(i) for i in (5, 6, 7)))
        assert got[-1].startswith(b"M1 NO [OVERQUOTA]"), got
        assert len(_messages(maildir, "INBOX")) == 2
        assert b"MESSAGE 2 4" in c.command("q", b"GETQUOTAROOT INBOX")[1]
        got = c.command("M2", b"APPEND INBOX " + b" ".join(b"{%d+}\r\n" % len(msg(i)) + msg(i) for i in (5, 6)))
        assert got[-1].startswith(b"M2 OK [APPENDUID"), got
        assert len(_messages(maildir, "INBOX")) == 4
        c.close()
    finally:
        srv.stop()
