"""ManageSieve framing (RFC 5804 section 4): command lines, quoted strings, literals; quoting replies.

A command is one line of tokens: an atom (the command name), quoted strings,
literals (`{N+}` or `{N}` then CRLF then N octets; the line goes on after them)
and numbers. `Reader.command()` returns the tokens of one command with every
literal read in; sizes are bounded and a malformed line raises ProtocolError
after the whole line (with its literals) has been consumed, so the next command
starts in the right place.
"""

from __future__ import annotations

import asyncio
import re

from fetchdeliver.errors import FetchdeliverError


class ProtocolError(FetchdeliverError):
    """A malformed command: answer NO and go on."""


class TooLarge(FetchdeliverError):
    """A line or literal beyond what this connection may send: answer BYE and close."""


class Atom(str):
    """A bare word (command names)."""


class Number(int):
    pass


_LITERAL_AT_END = re.compile(rb"\{(\d{1,10})(\+?)\}$")
_ATOM = re.compile(rb"[A-Za-z0-9_.\-]+")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')


def _tokens(line: bytes, out: list) -> None:
    pos, n = 0, len(line)
    while pos < n:
        if line[pos:pos + 1] == b" ":
            pos += 1
            continue
        c = line[pos:pos + 1]
        if c == b'"':
            m = _QUOTED.match(line, pos)
            if m is None:
                raise ProtocolError("Malformed quoted string.")
            out.append(re.sub(rb'\\(["\\])', rb"\1", m.group(1)))
            pos = m.end()
        elif c.isdigit():
            m = re.compile(rb"\d+").match(line, pos)
            assert m is not None  # c is a digit
            end = m.end()
            if end < n and line[end:end + 1] != b" ":
                raise ProtocolError("Malformed number.")
            if end - pos > 10:
                raise ProtocolError("Number too large.")
            out.append(Number(int(m.group(0))))
            pos = end
        else:
            m = _ATOM.match(line, pos)
            if m is None:
                raise ProtocolError(f"Unexpected character {c!r} in command.")
            out.append(Atom(m.group(0).decode("ascii")))
            pos = m.end()


def text(value: bytes) -> str:
    """A client string as text; ProtocolError if it is not UTF-8."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("String is not valid UTF-8.") from None


def quote(s: str | bytes) -> bytes:
    """A reply string: quoted when it can be, else a literal {N}CRLF..."""
    b = s.encode("utf-8") if isinstance(s, str) else s
    if len(b) < 1024 and not re.search(rb'[\r\n\0"\\]', b):
        return b'"' + b + b'"'
    return b"{%d}\r\n" % len(b) + b


class Reader:
    """Reads commands from a StreamReader with bounds on line and literal sizes."""

    def __init__(self, reader: asyncio.StreamReader, *, max_line: int = 8192,
                 max_literal: int = 1024 * 1024) -> None:
        self.reader = reader
        self.max_line = max_line
        self.max_literal = max_literal   # may be changed (e.g. raised after login)
        self.oversized = False           # set when a literal was read but dropped (over max_literal)

    async def line(self) -> bytes:
        try:
            data = await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise TooLarge("Command line too long.") from None
        except asyncio.IncompleteReadError as e:
            raise EOFError() from e
        if len(data) > self.max_line:
            raise TooLarge("Command line too long.")
        return data.rstrip(b"\r\n")

    async def command(self) -> list:
        """The tokens of one command (literals as bytes). ProtocolError when malformed."""
        tokens: list = []
        error: ProtocolError | None = None
        self.oversized = False
        total = 0
        while True:
            line = await self.line()
            m = _LITERAL_AT_END.search(line)
            head = line[:m.start()] if m else line
            if error is None:
                try:
                    _tokens(head, tokens)
                except ProtocolError as e:
                    error = e
            if m is None:
                break
            size = int(m.group(1))
            total += size
            if total > self.max_literal * 4 + 65536:
                raise TooLarge("Literal too large.")
            if size > self.max_literal:
                await self._discard(size)
                self.oversized = True
                tokens.append(b"")
            else:
                try:
                    tokens.append(await self.reader.readexactly(size))
                except asyncio.IncompleteReadError as e:
                    raise EOFError() from e
        if error is not None:
            raise error
        return tokens

    async def _discard(self, size: int) -> None:
        try:
            while size:
                chunk = await self.reader.readexactly(min(size, 65536))
                size -= len(chunk)
        except asyncio.IncompleteReadError as e:
            raise EOFError() from e
