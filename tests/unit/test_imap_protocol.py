"""The IMAP command parser and framing: unit checks and a Hypothesis fuzz (any bytes -> BAD/NO/BYE, no crash)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fetchdeliver.delivery.maildir import MaildirStore
from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password
from fetchdeliver.imapserver.fetch import Parsed, Section, parse_fetch_atts, section_bytes
from fetchdeliver.imapserver.mime import parse_addresses
from fetchdeliver.imapserver.protocol import ParseError, Parser, decode_mailbox, literal_at_end
from fetchdeliver.imapserver.server import Server, ServerConfig
from fetchdeliver.imapserver.session import Session


def test_parser_pieces():
    p = Parser(b'a1 LOGIN "us\\"er" {3}\r\npw\x01 x')
    assert p.tag() == "a1"
    p.sp()
    assert p.atom() == "LOGIN"
    p.sp()
    assert p.astring() == b'us"er'
    p.sp()
    assert p.astring() == b"pw\x01"
    with pytest.raises(ParseError):
        p.end()
    assert Parser(b"1:3,5,*:7").sequence_set() == [(1, 3), (5, 5), (None, 7)]
    with pytest.raises(ParseError):
        Parser(b"0:3").sequence_set()
    assert literal_at_end(b"a APPEND x {12+}") == (12, True)
    assert literal_at_end(b"a APPEND x {12}") == (12, False)
    assert literal_at_end(b"a NOOP") is None
    assert decode_mailbox(b"&AMQ-rger/Sub") == "Ärger/Sub"
    assert decode_mailbox(b"inbox") == "INBOX"
    assert Parser(b'"24-Nov-2025 10:00:00 +0100"').date_time() == 1763974800.0


def test_fetch_att_parsing():
    items = parse_fetch_atts(Parser(b"(UID BODY.PEEK[1.2.MIME]<10.20> BODY[HEADER.FIELDS (A B)])"))
    assert items[0] == "UID"
    s = items[1]
    assert (s.peek, s.nums, s.spec, s.partial, s.label) == (True, [1, 2], "MIME", (10, 20), b"BODY[1.2.MIME]")
    assert items[2].fields == ["A", "B"] and not items[2].peek
    assert parse_fetch_atts(Parser(b"FAST")) == ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
    for bad in (b"(BODY[0])", b"(BODY[MIME])", b"(NOPE)", b"(BODY[1.])", b"(BODY[TEXT]<1>)"):
        with pytest.raises(ParseError):
            parse_fetch_atts(Parser(bad))


NESTED = (b"Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: text/plain\n\none\n"
          b"--a\nContent-Type: multipart/alternative; boundary=b\n\n--b\n\ntwo-one\n--b\n"
          b"Content-Type: text/html\n\n<p>two-two</p>\n--b--\n--a--\n")


def test_sections_of_nested_multipart():
    parsed = Parsed(NESTED)

    def sec(nums, spec=""):
        return section_bytes(parsed, Section(True, nums, spec, [], None, b""))

    assert sec([1]) == b"one"
    assert sec([2, 1]) == b"two-one"
    assert sec([2, 2]) == b"<p>two-two</p>"
    assert sec([2, 2], "MIME") == b"Content-Type: text/html\r\n\r\n"
    assert sec([3]) is None and sec([1, 2]) is None
    assert sec([], "TEXT").startswith(b"--a\r\n")


def test_address_parsing_edge_cases():
    assert parse_addresses(b'"Doe, John" <john@x.org>') == [(b"Doe, John", None, b"john", b"x.org")]
    assert parse_addresses(b"undisclosed-recipients:;") == [(None, None, b"undisclosed-recipients", None),
                                                          (None, None, None, None)]
    # a comment after a bare addr-spec is its personal name (imaptest fetch-envelope, Dovecot)
    assert parse_addresses(b"a@b (Comment), <@r1,@r2:c@d>") == [(b"Comment", None, b"a", b"b"),
                                                               (None, b"@r1,@r2", b"c", b"d")]
    assert parse_addresses(b"justaname") == [(None, None, b"justaname", b"MISSING_DOMAIN")]
    assert parse_addresses(b"a: b: c;;") is not None   # malformed, must not hang


def test_comment_gives_the_personal_name_only_to_a_bare_addr_spec():
    assert parse_addresses(b"user@domain (Real Name)") == [(b"Real Name", None, b"user", b"domain")]
    assert parse_addresses(b"a(x)@b(y).c (Name)") == [(b"Name", None, b"a", b"b.c")]
    assert parse_addresses(b"x@y (one (nested)), z@w") == [(b"one (nested)", None, b"x", b"y"),
                                                           (None, None, b"z", b"w")]
    assert parse_addresses(b"<a@b> (not a name)") == [(None, None, b"a", b"b")]
    assert parse_addresses(b"Phrase <a@b> (c)") == [(b"Phrase", None, b"a", b"b")]
    assert parse_addresses(b"g: (foo) ;") == [(None, None, b"g", None), (None, None, None, None)]


def test_envelope_empty_sender_and_reply_to_take_from():
    from fetchdeliver.imapserver.fetch import envelope

    raw = b"From: user@domain (Real Name)\r\nSender: \r\nReply-To:\r\nSubject: a\rb\r\n\r\nbody\r\n"
    env = envelope(Parsed(raw).root)
    frm = b'(("Real Name" NIL "user" "domain"))'
    assert env == b'(NIL "a b" ' + frm + b" " + frm + b" " + frm + b" NIL NIL NIL NIL NIL)"


def test_content_type_corner_cases_as_dovecot():
    from fetchdeliver.imapserver.fetch import bodystructure

    def bs(ct: bytes) -> bytes:
        return bodystructure(Parsed(b"Content-Type: " + ct + b"\r\n\r\nbody\r\n").root)

    assert bs(b"text").startswith(b'("text" "" ("charset" "us-ascii") NIL NIL "7bit" 6 1')
    assert bs(b"").startswith(b'("" "" NIL NIL NIL "7bit" 6 NIL')
    assert bs(b'text/plain; charset; =x; name="a').startswith(b'("text" "plain" ("charset" "us-ascii")')
    assert bs(b"text/plain; charset=utf-8; f=g junk; x=y").startswith(
        b'("text" "plain" ("charset" "utf-8" "f" "g" "x" "y")')
    # an unterminated quoted boundary is no boundary: one empty part, as Dovecot answers
    raw = b'Content-Type: multipart/mixed; boundary="XYZ\r\n\r\n--XYZ\r\n\r\nx\r\n--XYZ--\r\n'
    assert bodystructure(Parsed(raw).root).startswith(b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0')


# -- the fuzz: a session fed arbitrary bytes ---------------------------------------------------

class _Writer:
    def __init__(self):
        self.data = bytearray()

    def write(self, b):
        self.data += b

    async def drain(self):
        pass

    def close(self):
        pass

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 5555) if name == "peername" else default


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    md = str(d / "Maildir")
    store = MaildirStore(md, fsync=False)
    store.deliver(b"Subject: one\n\nbody\n")
    store.deliver(NESTED, flags=["\\Seen"])
    pw = str(d / "passwd")
    set_password(pw, "alice", "secret", "SHA256-CRYPT")
    cfg = ServerConfig(listen=[], authenticator=PasswdFileAuthenticator(pw), default_mail="maildir:" + md,
                       login_failure_delay=0, idle_timeout=5, max_line=4096, max_literal=4096)
    return Server(cfg)


def _run(server, data: bytes) -> bytes:
    async def go():
        reader = asyncio.StreamReader(limit=server.config.max_line)
        reader.feed_data(data)
        reader.feed_eof()
        w = _Writer()
        await asyncio.wait_for(Session(server, reader, w, False).run(), 30)
        return bytes(w.data)

    return asyncio.run(go())


PREFIX = b"p1 LOGIN alice secret\r\np2 SELECT INBOX\r\n"
WORDS = st.sampled_from([b"FETCH", b"UID", b"STORE", b"SEARCH", b"COPY", b"MOVE", b"LIST", b"STATUS",
                         b"APPEND", b"SELECT", b"EXAMINE", b"CREATE", b"RENAME", b"BODY[", b"BODY.PEEK[1.MIME]",
                         b"(", b")", b"{3}\r\n", b"{2+}\r\n", b"*", b"1:*", b"\"", b"\\Seen", b"HEADER.FIELDS",
                         b"<0.5>", b" ", b"NIL", b"OR", b"NOT", b"CHARSET", b"IDLE", b"DONE", b"EXPUNGE",
                         b"AUTHENTICATE", b"PLAIN", b"ENVELOPE", b"BODYSTRUCTURE", b"+FLAGS", b"INBOX",
                         b"&-", b"&AMQ", b"%", b"RETURN", b"LOGOUT"])


def _answered(out: bytes) -> None:
    """The junk got a tagged answer (x/y OK, NO or BAD) or a BYE, or the stream ended while the
    server waited for more of it (a continuation request was the last thing it sent)."""
    assert out.startswith(b"* OK")
    assert b"SERVERBUG" not in out, out[-400:]
    rest = out.split(b"p2 OK", 1)[1].split(b"\r\n", 1)[1]
    lines = rest.split(b"\r\n")
    assert any(ln[:5] in (b"x OK ", b"x NO ", b"x BAD", b"y OK ", b"* BYE") for ln in lines) or \
        rest.endswith((b"+ OK\r\n", b"+ idling\r\n", b"+ \r\n")), rest[-300:]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_any_bytes(server, payload):
    _answered(_run(server, PREFIX + b"x " + payload + b"\r\ny NOOP\r\n"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(st.lists(WORDS, min_size=1, max_size=12))
def test_fuzz_command_shaped(server, words):
    _answered(_run(server, PREFIX + b"x " + b" ".join(words) + b"\r\ny NOOP\r\n"))
