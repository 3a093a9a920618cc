"""Property-based fuzzing of the IMAP command parser itself: any bytes give ParseError (BAD), never another exception.

(The session-level fuzz in test_imap_protocol.py drives whole commands through a Session; this one
hits each grammar entry point with arbitrary and grammar-shaped input, without a server.)
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fetchdeliver.imapserver.fetch import parse_fetch_atts
from fetchdeliver.imapserver.protocol import ParseError, Parser, decode_mailbox, literal_at_end
from fetchdeliver.imapserver.search import BadCharset, parse_search

ENTRY_POINTS = {
    "tag": lambda p: p.tag(),
    "atom": lambda p: p.atom(),
    "number": lambda p: p.number(),
    "nz_number": lambda p: p.nz_number(),
    "quoted": lambda p: p.quoted(),
    "literal": lambda p: p.literal(),
    "string": lambda p: p.string(),
    "astring": lambda p: p.astring(),
    "nstring": lambda p: p.nstring(),
    "list_mailbox": lambda p: p.list_mailbox(),
    "mailbox": lambda p: p.mailbox(),
    "sequence_set": lambda p: p.sequence_set(),
    "flag": lambda p: p.flag(),
    "flag_list": lambda p: p.flag_list(),
    "date": lambda p: p.date(),
    "date_time": lambda p: p.date_time(),
    "fetch_atts": parse_fetch_atts,
    "search": parse_search,
    "search_utf8": lambda p: parse_search(p, utf8=True),
}

PIECES = st.sampled_from([
    b" ", b"(", b")", b"[", b"]", b"<", b">", b".", b"*", b":", b",", b"\"", b"\\", b"{", b"}", b"+", b"-",
    b"{5}\r\n", b"{0+}\r\n", b"{99999999999999999999}\r\n", b"\r\n", b"\x00", b"\xff", b"&", b"&AMQ-",
    b"0", b"1", b"4294967295", b"4294967296", b"99999999999", b"1:*", b"$",
    b"BODY", b"BODY.PEEK", b"HEADER.FIELDS", b"HEADER.FIELDS.NOT", b"MIME", b"TEXT", b"ENVELOPE", b"ALL",
    b"OR", b"NOT", b"CHARSET", b"UTF-8", b"KOI8-R", b"SINCE", b"1-Feb-2024", b"31-Foo-99", b"HEADER",
    b"LARGER", b"UID", b"\\Seen", b"\\*", b"INBOX", b"NIL", b'"24-Nov-2025 10:00:00 +0100"',
    b'"99-Nov-2025 10:00:00 +0100"', b'"1-Jan-9999 99:99:99 +9999"',
])


def _check(entry: str, data: bytes) -> None:
    p = Parser(data)
    try:
        ENTRY_POINTS[entry](p)
        p.end()
    except (ParseError, BadCharset):
        pass
    assert 0 <= p.i <= len(data)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@settings(max_examples=120, deadline=None)
@given(data=st.binary(max_size=200))
def test_any_bytes_give_parse_errors_only(entry, data):
    _check(entry, data)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@settings(max_examples=120, deadline=None)
@given(pieces=st.lists(PIECES, max_size=25))
def test_grammar_shaped_input_gives_parse_errors_only(entry, pieces):
    _check(entry, b"".join(pieces))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_framing_and_mailbox_names(data):
    lit = literal_at_end(data)
    assert lit is None or (lit[0] >= 0 and isinstance(lit[1], bool))
    try:
        decode_mailbox(data)
    except ParseError:
        pass


def test_deep_nesting_is_a_parse_error_not_a_recursion_error():
    for entry in ("search", "fetch_atts", "flag_list"):
        _check(entry, b"(" * 5000 + b"ALL" + b")" * 5000)
        _check(entry, b"NOT " * 5000 + b"ALL")
        _check(entry, b"OR " * 5000 + b"ALL ALL")
