"""BINARY (RFC 3516): parsing BINARY[...] / BINARY.PEEK / BINARY.SIZE, content-transfer-decoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fetchdeliver.imapserver import fetch as fetchmod
from fetchdeliver.imapserver.protocol import ParseError, Parser

MSG = (b"From: a@example.org\r\nMime-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
       b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8g\r\nd29ybGQ=\r\n"
       b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
       b"caf=C3=A9 soft=\r\nbreak  \r\nfoo_bar=3D\r\n"
       b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nxx\r\n"
       b"--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b--\r\n")


def items(text: bytes) -> list:
    return fetchmod.parse_fetch_atts(Parser(text))


def render(text: bytes, raw: bytes = MSG) -> bytes:
    class M:
        uid, modseq, internaldate = 1, 1, 0.0
    return fetchmod.render(items(text), M(), None, b"()", fetchmod.Parsed(raw), False)


def test_parse_binary_items():
    sec, size, peek = items(b"(BINARY[1.2]<0.10> BINARY.SIZE[3] BINARY.PEEK[])")
    assert (sec.binary, sec.nums, sec.partial, sec.peek, sec.label) == ("BINARY", [1, 2], (0, 10), False,
                                                                       b"BINARY[1.2]")
    assert (size.binary, size.nums, size.label) == ("SIZE", [3], b"BINARY.SIZE[3]")
    assert (peek.binary, peek.nums, peek.peek) == ("BINARY", [], True)
    assert fetchmod.sets_seen([sec]) and not fetchmod.sets_seen([size, peek])


@pytest.mark.parametrize("bad", [b"BINARY[HEADER]", b"BINARY[1.TEXT]", b"BINARY[1.]", b"BINARY.SIZE[1]<0.5>",
                                 b"BINARY[0]"])
def test_section_binary_takes_part_numbers_only(bad):
    with pytest.raises(ParseError):
        p = Parser(bad)
        fetchmod.parse_fetch_atts(p)
        p.end()


def test_base64_and_quoted_printable_are_decoded():
    assert render(b"BINARY.PEEK[1]") == b"(BINARY[1] {11}\r\nhello world)"
    assert render(b"BINARY.SIZE[1]") == b"(BINARY.SIZE[1] 11)"
    assert render(b"BINARY.PEEK[2]") == b"(BINARY[2] {25}\r\ncaf\xc3\xa9 softbreak\r\nfoo_bar=)"
    assert render(b"BINARY.PEEK[1]<6.100>") == b"(BINARY[1]<6> {5}\r\nworld)"
    assert render(b"BINARY.PEEK[4]") == b"(BINARY[4] {5}\r\nplain)"   # identity encoding: as it is
    assert render(b"BINARY.PEEK[9]") == b"(BINARY[9] {0}\r\n)"     # no such part: empty, as Dovecot
    assert render(b"BINARY.SIZE[9]") == b"(BINARY.SIZE[9] 0)"


def test_whole_message_is_not_decoded():
    assert render(b"BINARY.SIZE[]") == b"(BINARY.SIZE[] %d)" % len(MSG)


def test_unknown_cte():
    with pytest.raises(fetchmod.UnknownCte):
        render(b"BINARY.PEEK[3]")


def test_nul_content_goes_out_as_literal8_and_body_as_base64():
    raw = (b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b\r\nContent-Transfer-Encoding: binary\r\n\r\n"
           b"\x00\xe4\n\r\n--b--\r\n")
    assert render(b"BINARY.PEEK[1]", raw) == b"(BINARY[1] ~{3}\r\n\x00\x01\x02)"
    assert render(b"BINARY.PEEK[2]", raw) == b"(BINARY[2] ~{3}\r\n\x00\xe4\n)"   # line ends kept
    assert render(b"BODY.PEEK[2]", raw) == b"(BODY[2] {6}\r\nAOQK\r\n)"


def test_qp_decoder():
    assert fetchmod.decode_qp(b"a=3Db=\r\nc \t\r\n=XYz") == b"a=bc\r\n=XYz"


def test_base64_is_decoded_leniently():
    raw = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"aGVs!bG8g\r\nd29y bGQ=garbage after the end\r\n--b\r\nContent-Transfer-Encoding: BASE64\r\n\r\nQUJDRA\r\n"
           b"--b--\r\n")
    assert render(b"BINARY.PEEK[1]", raw) == b"(BINARY[1] {11}\r\nhello world)"
    assert render(b"BINARY.PEEK[2]", raw) == b"(BINARY[2] {4}\r\nABCD)"     # no padding, upper-case name


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"base64", b"quoted-printable", b"7bit", b"x-unknown"]))
def test_any_content_decodes_or_is_unknown_cte(body, cte):
    raw = b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + body
    try:
        out = render(b"(BINARY.PEEK[1] BINARY.SIZE[1])", raw)
    except fetchmod.UnknownCte:
        assert cte == b"x-unknown"
    else:
        assert out.startswith(b"(BINARY[1] ")
