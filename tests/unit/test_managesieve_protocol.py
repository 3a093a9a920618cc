"""ManageSieve framing: tokens, literals, quoting, and staying in step after a malformed line."""

import asyncio

import pytest

from fetchdeliver.managesieve.protocol import Atom, Number, ProtocolError, Reader, TooLarge, quote


def commands(data: bytes, **kw) -> list:
    """Every command in `data`: its tokens, or the ProtocolError it raised."""
    async def run():
        r = asyncio.StreamReader()
        r.feed_data(data)
        r.feed_eof()
        reader = Reader(r, **kw)
        out = []
        while True:
            try:
                out.append(await reader.command())
            except ProtocolError as e:
                out.append(e)
            except EOFError:
                return out
    return asyncio.run(run())


def test_tokens_quoted_escapes_numbers_and_literals():
    got = commands(b'PUTSCRIPT "a\\"b\\\\c" {5+}\r\nkeep;\r\nHAVESPACE "x" 42\r\n'
                   b'RENAMESCRIPT {1}\r\na {2+}\r\nbc\r\n')
    assert got[0] == [Atom("PUTSCRIPT"), b'a"b\\c', b"keep;"]
    assert got[1] == ["HAVESPACE", b"x", 42] and isinstance(got[1][2], Number)
    assert got[2] == ["RENAMESCRIPT", b"a", b"bc"]


def test_a_malformed_line_still_consumes_its_literal():
    got = commands(b'PUTSCRIPT "unterminated {6+}\r\nNOOP\r\n\r\nNOOP\r\n')
    assert isinstance(got[0], ProtocolError)
    assert got[1] == ["NOOP"]
    for bad in (b"NOOP 123x\r\n", b"NOOP 12345678901\r\n", b"NOOP (x)\r\n", b'NOOP "a\rb"\r\n'):
        assert isinstance(commands(bad)[0], ProtocolError), bad


def test_oversized_literals_are_dropped_or_end_the_connection():
    async def run(data, max_literal):
        r = asyncio.StreamReader()
        r.feed_data(data)
        r.feed_eof()
        reader = Reader(r, max_literal=max_literal)
        tokens = await reader.command()
        return tokens, reader.oversized, await reader.command()
    tokens, oversized, nxt = asyncio.run(run(b'PUTSCRIPT "x" {20+}\r\n' + b"#" * 20 + b"\r\nNOOP\r\n", 10))
    assert tokens == ["PUTSCRIPT", b"x", b""] and oversized and nxt == ["NOOP"]
    with pytest.raises(TooLarge):
        asyncio.run(run(b'PUTSCRIPT "x" {999999+}\r\n', 10))


def test_quote_uses_a_literal_when_it_must():
    assert quote("abc") == b'"abc"'
    assert quote('a"b') == b'{3}\r\na"b'
    assert quote("line 1\r\nline 2") == b"{14}\r\nline 1\r\nline 2"
    assert quote("x" * 2000).startswith(b"{2000}\r\n")
