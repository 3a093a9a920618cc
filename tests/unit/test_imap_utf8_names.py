"""Mailbox names on the wire: modified UTF-7 (RFC 3501 5.1.3), UTF-8 after ENABLE UTF8=ACCEPT (RFC 6855)."""

from __future__ import annotations

import pytest

from fetchdeliver.imapserver.protocol import ParseError, Parser, decode_mailbox, encode_mailbox


def test_modified_utf7_by_default():
    assert decode_mailbox(b"Entw&APw-rfe") == "Entwürfe"
    assert decode_mailbox(b"a&-b") == "a&b"
    assert encode_mailbox("Café & Co") == b'"Caf&AOk- &- Co"'
    assert Parser(b"inbox/Sub").mailbox() == "INBOX/Sub"


def test_utf8_after_enable():
    assert decode_mailbox("Entwürfe".encode(), utf8=True) == "Entwürfe"
    assert decode_mailbox(b"a&-b", utf8=True) == "a&-b"            # "&" is only "&"
    assert decode_mailbox(b"Inbox", utf8=True) == "INBOX"
    assert decode_mailbox("Entwu\u0308rfe".encode(), utf8=True) == "Entw\u00fcrfe"     # NFC
    assert Parser('"Café & Co"'.encode(), 0, True).mailbox() == "Café & Co"
    assert encode_mailbox("Café & Co", utf8=True) == '"Café & Co"'.encode()
    assert encode_mailbox('a"b\\c', utf8=True) == b'"a\\"b\\\\c"'
    with pytest.raises(ParseError):
        decode_mailbox(b"\xff\xfe", utf8=True)
