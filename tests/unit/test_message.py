"""Message: header splitting on odd input, byte-exact raw, lazy decoding."""

from hypothesis import given, strategies as st

from fetchdeliver.message import Message, decode_rfc2047


def test_headers_crlf_folded_and_decoded():
    m = Message(b"From: a@b\r\nSubject: =?utf-8?q?h=C3=A9llo?=\r\n world\r\n\r\nbody\r\n")
    assert m.header_items == [("From", "a@b"), ("Subject", "=?utf-8?q?h=C3=A9llo?= world")]
    assert m.get("subject") == "héllo world"
    assert m.body == b"body\r\n"


def test_headerless_message_has_no_headers_and_whole_body():
    raw = b"just text\nmore text\n"
    m = Message(raw)
    assert m.header_items == []
    assert m.body == raw


def test_leading_blank_line_means_empty_header_block():
    m = Message(b"\nbody only")
    assert m.header_items == []
    assert m.body == b"body only"


def test_no_final_newline_and_no_body():
    m = Message(b"Subject: x")
    assert m.get("Subject") == "x"
    assert m.body == b""


def test_8bit_header_is_decoded_as_utf8_or_latin1():
    assert Message("Subject: grüße\n\n".encode("utf-8")).get("subject") == "grüße"
    assert Message("Subject: grüße\n\n".encode("latin-1")).get("subject") == "grüße"


def test_get_all_is_case_insensitive_and_ordered():
    m = Message(b"Received: one\nreceived: two\nRECEIVED: three\n\n")
    assert m.get_all("Received") == ["one", "two", "three"]


def test_malformed_encoded_word_is_kept():
    assert decode_rfc2047("=?bogus?x?abc?=") == "=?bogus?x?abc?="


def test_prepend_header_keeps_bytes_and_line_ending():
    raw = b"A: 1\r\n\r\nbody"
    m = Message(raw).prepend_header("Received", "from x")
    assert m.raw == b"Received: from x\r\n" + raw


@given(st.binary(max_size=2000))
def test_any_bytes_parse_without_error(raw):
    m = Message(raw)
    m.header_items
    assert m.raw == raw
    assert raw.endswith(m.body)
