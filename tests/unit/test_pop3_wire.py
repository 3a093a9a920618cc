"""POP3 wire forms (RETR/TOP bytes) and Dovecot-style UIDL formats."""

from __future__ import annotations

import pytest

from fetchdeliver.pop3server.session import top_bytes, wire_bytes
from fetchdeliver.pop3server.uidl import check_format, compile_format
from fetchdeliver.storage.base import MessageInfo


class _H:
    def __init__(self, name):
        self.name = name


def test_wire_bytes_crlf_final_line_and_dot_stuffing():
    assert wire_bytes(b"a\nb\n") == b"a\r\nb\r\n.\r\n"
    assert wire_bytes(b"a\r\nb") == b"a\r\nb\r\n.\r\n"
    assert wire_bytes(b".x\n.\n..\n") == b"..x\r\n..\r\n...\r\n.\r\n"
    assert wire_bytes(b"") == b".\r\n"


def test_top_bytes():
    raw = b"H: 1\nH2: 2\n\nl1\nl2\nl3\n"
    assert top_bytes(raw, 0) == b"H: 1\r\nH2: 2\r\n\r\n.\r\n"
    assert top_bytes(raw, 2) == b"H: 1\r\nH2: 2\r\n\r\nl1\r\nl2\r\n.\r\n"
    assert top_bytes(raw, 9) == wire_bytes(raw)
    assert top_bytes(b"H: only\n", 3) == b"H: only\r\n.\r\n"
    assert top_bytes(b"\n.body\n", 1) == b"\r\n..body\r\n.\r\n"


def test_uidl_formats():
    m = MessageInfo(10, frozenset(), 0.0, _H("1700000000.M1P2.host,S=12,W=13:2,S"))
    assert compile_format("%08Xu%08Xv")(m, 0x6B1018C1) == "0000000a6b1018c1"
    assert compile_format("%u.%v")(m, 77) == "10.77"
    assert compile_format("%f")(m, 1) == "1700000000.M1P2.host,S=12,W=13"
    assert compile_format("%g")(m, 1) == "1700000000.M1P2.host,S=12,W=13"
    assert compile_format("%Xu-%4v%%")(m, 123456) == "a-1234%"
    for bad in ("%08Xq", "abc", "%v", "%"):
        with pytest.raises(ValueError):
            check_format(bad)


def test_saved_uidls_from_dovecot_uidlist():
    from fetchdeliver.pop3server.saved_uidls import parse_saved_uidls

    data = (b"3 V1 N5 Gabc\n1 W176 :a.host\n2 W10 Pold-2 :b.host,S=9:2,S\n3 Pa:b GX :c.host\n"
            b"4 :d.host P-not-a-field\n")
    assert parse_saved_uidls(data) == {2: "old-2", 3: "a:b"}
    assert parse_saved_uidls(b"3 V1 N2\n1 :a.host\n") == {}
