"""OBJECTID (RFC 8474) and PREVIEW (RFC 8970) without a server: FETCH and SEARCH parsing, the ids
(content-derived, shared by a thread, valid objectid syntax), the preview text."""

from __future__ import annotations

import re

import pytest

from fetchdeliver.imapserver import objectid
from fetchdeliver.imapserver.fetch import parse_fetch_atts
from fetchdeliver.imapserver.protocol import ParseError, Parser
from fetchdeliver.imapserver.search import parse_search

OBJECTID = re.compile(r"[A-Za-z0-9_-]{1,255}\Z")    # RFC 8474 section 7


def test_fetch_items_parse():
    assert parse_fetch_atts(Parser(b"(EMAILID THREADID)")) == ["EMAILID", "THREADID"]
    assert parse_fetch_atts(Parser(b"(UID PREVIEW (LAZY) FLAGS)")) == ["UID", "PREVIEW", "FLAGS"]   # RFC 8970 3.1
    assert parse_fetch_atts(Parser(b"PREVIEW")) == ["PREVIEW"]
    with pytest.raises(ParseError):
        parse_fetch_atts(Parser(b"(PREVIEW (FUZZY))"))


def test_search_keys_parse():
    assert parse_search(Parser(b"EMAILID M6d99ac3275bb4e")) == ("AND", [("EMAILID", "M6d99ac3275bb4e")])
    assert parse_search(Parser(b"THREADID T64b478a75b7ea9")) == ("AND", [("THREADID", "T64b478a75b7ea9")])
    with pytest.raises(ParseError):
        parse_search(Parser(b"EMAILID"))


ROOT = b"From: a@x\r\nMessage-ID: <root@x>\r\nSubject: hi\r\n\r\nHello there.\r\n"
REPLY = b"From: b@x\r\nMessage-ID: <r@x>\r\nIn-Reply-To: <root@x>\r\nSubject: Re: hi\r\n\r\n> Hello\r\n"
REPLY2 = (b"From: a@x\r\nMessage-ID: <r2@x>\r\nReferences: <root@x>\r\n <r@x>\r\nIn-Reply-To: <r@x>\r\n"
          b"Subject: Re: hi\r\n\r\nok\r\n")


def test_ids():
    for raw in (ROOT, REPLY, b"no header at all"):
        assert OBJECTID.match(objectid.email_id(raw)) and OBJECTID.match(objectid.thread_id(raw))
    assert objectid.email_id(ROOT) == objectid.email_id(bytes(ROOT))       # content-derived
    assert objectid.email_id(ROOT) != objectid.email_id(REPLY)
    assert objectid.thread_id(ROOT) == objectid.thread_id(REPLY) == objectid.thread_id(REPLY2)
    other = b"Message-ID: <else@x>\r\n\r\nx\r\n"
    assert objectid.thread_id(other) != objectid.thread_id(ROOT)


def test_mailbox_id_from_the_uidlist_guid(tmp_path):
    (tmp_path / "dovecot-uidlist").write_bytes(b"3 V1700000000 N5 G0123456789abcdef0123456789abcdef\n1 :x\n")

    class Box:
        path = str(tmp_path)
        uidvalidity = 1700000000
        name = "Work"

    assert objectid.mailbox_id(Box()) == "F0123456789abcdef0123456789abcdef"
    Box.path = str(tmp_path / "none")
    assert OBJECTID.match(objectid.mailbox_id(Box()))


def test_preview():
    assert objectid.preview(ROOT) == "Hello there."
    html = (b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            b"<html><head><style>p{}</style></head><body><p>Gr\xc3\xbc\xc3\x9fe</p>\r\n<p>aus   K\xc3\xb6ln</p></body></html>")
    assert objectid.preview(html) == "Grüße aus Köln"
    long = b"Subject: x\r\n\r\n" + b"word " * 200
    assert len(objectid.preview(long)) == objectid.PREVIEW_CHARS
    assert objectid.preview(b"Content-Type: image/png\r\n\r\nxx") is None
    assert objectid.render_preview(b"Subject: x\r\n\r\n") == b"NIL"
    assert objectid.render_preview(b'Subject: x\r\n\r\nsay "hi"\r\n') == b'"say \\"hi\\""'
    assert objectid.render_preview(html) == b"{17}\r\nGr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln"
