"""APPEND's arguments: MULTIAPPEND (RFC 3502), CATENATE (RFC 4469), literal8; IMAP URLs (RFC 5092)."""

from __future__ import annotations

import pytest

from fetchdeliver.imapserver.commands import REGISTRY
from fetchdeliver.imapserver.commands.append import AppendMessage, BadUrl, parse_url
from fetchdeliver.imapserver.protocol import ParseError, Parser


def parse(args: bytes):
    return REGISTRY["APPEND"].parse(Parser(args), False)


def test_multiappend():
    a = parse(b' saved-messages (\\Seen) {3}\r\none (\\Seen) " 7-Feb-1994 22:43:04 -0800" {3+}\r\ntwo ~{3}\r\n\x00\x01\x02')
    assert a.mailbox == "saved-messages"
    assert [m.message for m in a.messages] == [b"one", b"two", b"\x00\x01\x02"]
    assert a.messages[1].date == 760689784.0 and a.messages[0].flags == frozenset({"\\Seen"})
    with pytest.raises(ParseError):
        parse(b' saved-messages "random text" {3}\r\none')     # RFC 3502 example A005: BAD
    with pytest.raises(ParseError):
        parse(b" INBOX {3}\r\none junk")


def test_catenate():
    a = parse(b' Drafts (\\Draft) CATENATE (URL "/Drafts;UIDVALIDITY=385759045/;UID=20/;SECTION=HEADER" '
              b'TEXT {42}\r\n' + b"x" * 42 + b' URL "/Drafts;UIDVALIDITY=385759045/;UID=20/;SECTION=1.MIME" '
              b'TEXT ~{2}\r\n\x00\x01)')
    (m,) = a.messages
    assert m == AppendMessage(frozenset({"\\Draft"}), None, None, (
        ("URL", b"/Drafts;UIDVALIDITY=385759045/;UID=20/;SECTION=HEADER"), ("TEXT", b"x" * 42),
        ("URL", b"/Drafts;UIDVALIDITY=385759045/;UID=20/;SECTION=1.MIME"), ("TEXT", b"\x00\x01")))
    two = parse(b' INBOX CATENATE (URL "/INBOX/;UID=1") (\\Answered) {3}\r\nabc')
    assert len(two.messages) == 2 and two.messages[1].flags == frozenset({"\\Answered"})
    for bad in (b" INBOX CATENATE ()", b' INBOX CATENATE (TEXT "abc")', b" INBOX CATENATE (FOO {1}\r\nx)"):
        with pytest.raises(ParseError):
            parse(bad)


def test_imap_urls():
    assert parse_url(b"/Drafts;UIDVALIDITY=385759045/;UID=20/;SECTION=HEADER") == \
        ("Drafts", 385759045, 20, b"HEADER", None)
    assert parse_url(b"/INBOX/;UID=3") == ("INBOX", None, 3, b"", None)
    assert parse_url(b"imap://alice@mail.example.org/INBOX;uidvalidity=7/;uid=3/;section=1.2/;partial=5.10") == \
        ("INBOX", 7, 3, b"1.2", (5, 10))
    assert parse_url(b"/Entw%C3%BCrfe/;UID=1")[0] == "Entwürfe"       # UTF-8, percent-encoded
    assert parse_url(b"/Entw&APw-rfe/;UID=1")[0] == "Entwürfe"          # modified UTF-7 (RFC 2192)
    for bad in (b"/INBOX", b"/INBOX?SUBJECT%20x", b"/;UID=1", b"/INBOX/;UID=x",
                b"/INBOX/;UID=1;URLAUTH=anonymous:internal:abc", b"http://x/INBOX/;UID=1"):
        with pytest.raises(BadUrl):
            parse_url(bad)
