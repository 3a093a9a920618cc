"""IMAP4rev1 wire format: the command parser (RFC 3501 section 9 grammar) and response encoding.

A command arrives as one bytes buffer without its final CRLF, literals left in
place: `{n}` or `{n+}` (LITERAL+), CRLF, then n bytes. The framing in
session.py has already read them, within its size limits. `Parser` reads the
grammar's pieces from that buffer and raises `ParseError` (answered with BAD).
"""

from __future__ import annotations

import calendar
import re
import time

from fetchdeliver.delivery.names import utf7_decode, utf7_encode
from fetchdeliver.errors import FetchdeliverError


class ParseError(FetchdeliverError):
    """The command does not follow the grammar; the message goes into the BAD response."""


ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0, 32)) | {127}
ATOM_CHARS = frozenset(range(32, 127)) - ATOM_SPECIALS
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
TAG_CHARS = ASTRING_CHARS - {ord("+")}
LIST_CHARS = ATOM_CHARS | {ord("%"), ord("*"), ord("]")}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUM = {m.lower(): i for i, m in enumerate(MONTHS, 1)}
_LITERAL = re.compile(rb"\{(\d{1,20})(\+?)\}$")


def literal_at_end(line: bytes) -> tuple[int, bool] | None:
    """(size, non-synchronizing) when a line (without its CRLF) ends in a literal marker."""
    m = _LITERAL.search(line)
    if m is None:
        return None
    return int(m.group(1)), bool(m.group(2))


class Parser:
    __slots__ = ("b", "i", "n", "utf8")

    def __init__(self, buf: bytes, pos: int = 0, utf8: bool = False) -> None:
        self.b = buf
        self.i = pos
        self.n = len(buf)
        self.utf8 = utf8     # UTF8=ACCEPT / IMAP4rev2 enabled: mailbox names are UTF-8, not modified UTF-7

    # -- basics ---------------------------------------------------------------------

    def error(self, what: str) -> ParseError:
        near = self.b[self.i:self.i + 20].decode("ascii", "replace")
        return ParseError(f"expected {what} at position {self.i}" + (f" near {near!r}" if near else
                                                                         " (end of line)"))

    def peek(self) -> int | None:
        return self.b[self.i] if self.i < self.n else None

    def at_end(self) -> bool:
        return self.i >= self.n

    def end(self) -> None:
        if self.i != self.n:
            raise self.error("end of command")

    def sp(self) -> None:
        if self.peek() != 32:
            raise self.error("a space")
        self.i += 1

    def maybe(self, text: bytes) -> bool:
        """Consume `text` (case-insensitive) if it comes next."""
        end = self.i + len(text)
        if self.b[self.i:end].upper() == text.upper():
            self.i = end
            return True
        return False

    def expect(self, text: bytes) -> None:
        if not self.maybe(text):
            raise self.error(repr(text.decode()))

    def _run(self, chars) -> bytes:
        start = self.i
        b, n = self.b, self.n
        i = start
        while i < n and b[i] in chars:
            i += 1
        self.i = i
        return b[start:i]

    def tag(self) -> str:
        t = self._run(TAG_CHARS)
        if not t:
            raise self.error("a tag")
        return t.decode("ascii")

    def atom(self) -> str:
        a = self._run(ATOM_CHARS)
        if not a:
            raise self.error("an atom")
        return a.decode("ascii")

    def number(self) -> int:
        d = self._run(b"0123456789")
        if not d or len(d) > 10:
            raise self.error("a number")
        v = int(d)
        if v > 0xFFFFFFFF:
            raise self.error("a 32-bit number")
        return v

    def nz_number(self) -> int:
        v = self.number()
        if v == 0:
            raise self.error("a non-zero number")
        return v

    def quoted(self) -> bytes:
        self.expect(b'"')
        out = bytearray()
        b = self.b
        while True:
            if self.i >= self.n:
                raise self.error("a closing '\"'")
            c = b[self.i]
            if c == 34:
                self.i += 1
                return bytes(out)
            if c == 92:
                self.i += 1
                if self.i >= self.n or b[self.i] not in (34, 92):
                    raise self.error("'\\\"' or '\\\\' after a backslash in a quoted string")
                c = b[self.i]
            elif c in (10, 13, 0):
                raise self.error("no CR, LF or NUL in a quoted string")
            out.append(c)
            self.i += 1

    def literal(self) -> bytes:
        self.expect(b"{")
        size = self.number()
        self.maybe(b"+")
        self.expect(b"}\r\n")
        end = self.i + size
        if end > self.n:
            raise self.error(f"{size} bytes of literal")
        data = self.b[self.i:end]
        self.i = end
        return data

    def string(self) -> bytes:
        c = self.peek()
        if c == 34:
            return self.quoted()
        if c == 123:
            return self.literal()
        raise self.error("a string")

    def astring(self) -> bytes:
        c = self.peek()
        if c == 34 or c == 123:
            return self.string()
        a = self._run(ASTRING_CHARS)
        if not a:
            raise self.error("an atom or string")
        return a

    def nstring(self) -> bytes | None:
        if self.maybe(b"NIL"):
            return None
        return self.string()

    def list_mailbox(self) -> bytes:
        c = self.peek()
        if c == 34 or c == 123:
            return self.string()
        a = self._run(LIST_CHARS)
        if not a:
            raise self.error("a mailbox pattern")
        return a

    def mailbox(self) -> str:
        return decode_mailbox(self.astring(), self.utf8)

    # -- structured pieces ------------------------------------------------------------

    def sequence_set(self, allow_search_res: bool = True) -> list[tuple[int | None, int | None]]:
        """[(lo, hi)] with None standing for "*"; "$" (SEARCHRES) is refused."""
        out = []
        while True:
            a = self._seq_number()
            b = a
            if self.maybe(b":"):
                b = self._seq_number()
            out.append((a, b))
            if not self.maybe(b","):
                return out

    def _seq_number(self) -> int | None:
        if self.maybe(b"*"):
            return None
        return self.nz_number()

    def flag(self) -> str:
        if self.maybe(b"\\"):
            if self.maybe(b"*"):
                return "\\*"
            return "\\" + self.atom()
        return self.atom()

    def flag_list(self) -> list[str]:
        self.expect(b"(")
        flags = []
        if self.maybe(b")"):
            return flags
        while True:
            flags.append(self.flag())
            if self.maybe(b")"):
                return flags
            self.sp()

    def date(self) -> tuple[int, int, int]:
        """search date: "1-Feb-1994" or the same quoted -> (y, m, d)."""
        q = self.maybe(b'"')
        day = self._run(b"0123456789")
        if not day or len(day) > 2:
            raise self.error("a date like 1-Feb-2024")
        self.expect(b"-")
        mon = self.b[self.i:self.i + 3].decode("ascii", "replace").lower()
        if mon not in _MONTH_NUM:
            raise self.error("a month name (Jan..Dec)")
        self.i += 3
        self.expect(b"-")
        year = self._run(b"0123456789")
        if len(year) != 4:
            raise self.error("a four-digit year")
        if q:
            self.expect(b'"')
        return int(year), _MONTH_NUM[mon], int(day)

    def date_time(self) -> float:
        """APPEND's "dd-Mon-yyyy hh:mm:ss +zzzz" -> epoch seconds."""
        raw = self.quoted().decode("ascii", "replace")
        m = re.fullmatch(r" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)", raw)
        if not m or m.group(2).lower() not in _MONTH_NUM:
            raise ParseError(f"bad date-time {raw!r} (expected \"dd-Mon-yyyy hh:mm:ss +zzzz\")")
        d, mon, y, hh, mm, ss, sign, zh, zm = m.groups()
        try:
            t = calendar.timegm((int(y), _MONTH_NUM[mon.lower()], int(d), int(hh), int(mm), int(ss)))
            time.gmtime(t)
        except (ValueError, OverflowError):
            raise ParseError(f"bad date-time {raw!r}") from None
        off = (int(zh) * 60 + int(zm)) * 60
        return float(t - off if sign == "+" else t + off)


def decode_mailbox(raw: bytes, utf8: bool = False) -> str:
    """A mailbox name from the wire: modified UTF-7 (or UTF-8 when a client sends it) -> str.
    With `utf8` (after ENABLE UTF8=ACCEPT or IMAP4rev2, RFC 6855 3) the name is UTF-8 as it is:
    "&" is just "&"."""
    if utf8:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("mailbox name is not UTF-8") from None
        if not name.isascii():   # RFC 6855 3 / RFC 9051 5.1: names are in NFC (Net-Unicode)
            import unicodedata

            name = unicodedata.normalize("NFC", name)
        if name.upper() == "INBOX" or name.upper().startswith("INBOX/"):
            name = "INBOX" + name[5:]
        return name
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("mailbox name is neither modified UTF-7 nor UTF-8") from None
    if text.upper() == "INBOX":
        return "INBOX"
    try:
        name = utf7_decode(text)
    except ValueError:
        name = text  # Dovecot accepts such names as they are
    if name.upper().startswith("INBOX/"):
        name = "INBOX" + name[5:]
    return name


# -- responses ------------------------------------------------------------------------

_SAFE_QUOTED = frozenset(range(32, 127)) - {34, 92}


def astring_or_quoted(data: bytes | str) -> bytes:
    """A string as an IMAP quoted string when it can be, else a literal."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) < 1024 and all(c in _SAFE_QUOTED or c in (34, 92) for c in data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def nstring(data: bytes | str | None) -> bytes:
    if data is None:
        return b"NIL"
    return astring_or_quoted(data)


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def encode_mailbox(name: str, utf8: bool = False) -> bytes:
    if utf8:     # RFC 6855 / RFC 9051: UTF-8 goes in a quoted string as it is
        data = name.encode("utf-8")
        if len(data) < 1024 and not any(c < 32 or c == 127 for c in data):
            return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        return astring_or_quoted(data)
    return astring_or_quoted(utf7_encode(name))


def format_sequence(nums: list[int]) -> str:
    """[1,2,3,5] -> "1:3,5"."""
    out = []
    nums = sorted(nums)
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}:{nums[j]}")
        i = j + 1
    return ",".join(out)


def format_internaldate(t: float) -> str:
    tm = time.localtime(t)
    off = tm.tm_gmtoff or 0
    sign = "+" if off >= 0 else "-"
    off = abs(off) // 60
    return (f'"{tm.tm_mday:2d}-{MONTHS[tm.tm_mon - 1]}-{tm.tm_year:04d} '
            f'{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {sign}{off // 60:02d}{off % 60:02d}"')


# -- COMPRESS=DEFLATE (RFC 4978) ----------------------------------------------------------------

INFLATE_CHUNK = 64 * 1024


class _DeflateTransport:
    """What the session writes goes out raw-DEFLATE compressed, flushed (Z_SYNC_FLUSH) at each write,
    so every response reaches the client whole. Everything else is the socket's transport."""

    def __init__(self, inner, level: int = 6) -> None:
        import zlib

        self._inner = inner
        self._z = zlib.compressobj(level, zlib.DEFLATED, -15)
        self._flush = zlib.Z_SYNC_FLUSH

    def write(self, data) -> None:
        if data:
            self._inner.write(self._z.compress(bytes(data)) + self._z.flush(self._flush))

    def writelines(self, lines) -> None:
        self.write(b"".join(lines))

    def can_write_eof(self) -> bool:
        return False

    def __getattr__(self, name):   # close, abort, is_closing, get_extra_info, buffer limits ...
        return getattr(self._inner, name)


class _InflateProtocol:
    """Between the socket's transport and the session's StreamReaderProtocol: inflates what arrives.

    Inflates at most INFLATE_CHUNK bytes at a time and stops while the reader has paused the
    transport (its buffer is full), so a small compressed "bomb" cannot fill memory."""

    def __init__(self, inner, transport, loop) -> None:
        import zlib

        self._inner = inner
        self._transport = transport
        self._loop = loop
        self._z = zlib.decompressobj(-15)
        self._tail = b""
        self._waiting = False
        self.failed = None

    def data_received(self, data: bytes) -> None:
        self._tail += data
        self._inflate()

    def _inflate(self) -> None:
        import zlib

        self._waiting = False
        while self._tail:
            if not self._transport.is_reading():
                # the reader is full: go on once it has taken some (re-checked shortly)
                self._waiting = True
                self._loop.call_later(0.005, self._inflate)
                return
            try:
                out = self._z.decompress(self._tail, INFLATE_CHUNK)
            except zlib.error as e:
                self.failed = e
                self._tail = b""
                self._transport.abort()
                return
            self._tail = self._z.unconsumed_tail
            if out:
                self._inner.data_received(out)
            elif not self._tail:
                break

    def eof_received(self):
        return self._inner.eof_received()

    def connection_made(self, transport) -> None:   # not called: the connection exists already
        pass

    def connection_lost(self, exc) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def start_deflate(reader, writer, level: int = 6):
    """Switch a connection to COMPRESS=DEFLATE (RFC 4978) after the tagged OK has been written.

    Returns the StreamWriter to use from now on (it compresses); `reader` goes on giving the
    inflated bytes. The original writer still closes the connection."""
    import asyncio

    inner = writer.transport
    protocol = inner.get_protocol()
    loop = asyncio.get_running_loop()
    inner.set_protocol(_InflateProtocol(protocol, inner, loop))
    return asyncio.StreamWriter(_DeflateTransport(inner, level), protocol, reader, loop)


def oneline(text: str) -> str:
    """`text` with its line breaks and runs of white space as single spaces (for a response line)."""
    return " ".join(text.split())
