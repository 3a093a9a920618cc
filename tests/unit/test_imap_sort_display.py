"""SORT=DISPLAY (RFC 5957): the DISPLAYFROM / DISPLAYTO sort key of an address field."""

from __future__ import annotations

import pytest

from fetchdeliver.imapserver import sort_thread
from fetchdeliver.imapserver.protocol import Parser


class Fields:
    def __init__(self, value: bytes | None) -> None:
        self.value = value

    def raw_header_values(self, name: str) -> list[bytes]:
        return [] if self.value is None else [self.value]


@pytest.mark.parametrize("value, key", [
    (b"foo bar <a@b.c>", "FOO BAR"),                      # the display name
    (b"b@c.d", "B@C.D"),                                  # no display name: the addr-spec
    (b"d", "D"),                                          # no domain
    (b"=?iso-8859-1?q?foo_aar?= <e@f.g>", "FOO AAR"),     # RFC 2047-decoded
    (b'"Quoted, Name" <q@r.s>, x@y.z', "QUOTED, NAME"),   # the first address only
    (b"a: xx@xx.org, yy@yy.org;", "A"),                   # a group: its name
    (b"empty:;", "EMPTY"),
    (b"", ""), (None, ""),
])
def test_display_key(value, key):
    assert sort_thread.display_key(Fields(value), "to") == key


def test_parse_display_keys():
    assert sort_thread.parse_sort_criteria(Parser(b"(REVERSE DISPLAYFROM DISPLAYTO) UTF-8 ")) == \
        [("DISPLAYFROM", True), ("DISPLAYTO", False)]
