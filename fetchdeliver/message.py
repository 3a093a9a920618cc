"""Message: the received bytes, the envelope, and lazy views of headers and body.

The raw bytes are never changed: every deliverer writes `Message.raw` (plus the
headers the pipeline prepends with `prepend_header`). Header access here is a
small hand-written splitter so that the MDA does not pay for importing the
`email` package unless a rule needs MIME structure or RFC 2047 decoding.
"""

from __future__ import annotations


def _split_header_block(raw: bytes) -> tuple[bytes, int]:
    """Return (header block, offset of the body) for raw message bytes.

    The header block ends at the first empty line (LF LF, CRLF CRLF or a mix).
    A message that does not start with a header line has no headers at all.
    """
    if not raw or raw[:1] in (b"\n", b"\r"):
        # An empty first line: no headers, the body follows it.
        if raw.startswith(b"\r\n"):
            return b"", 2
        if raw.startswith(b"\n"):
            return b"", 1
        return b"", 0
    first = raw.split(b"\n", 1)[0]
    colon = first.find(b":")
    if colon <= 0 or any(c <= 32 or c == 127 for c in first[:colon].rstrip(b" \t")):
        # Not a header line ("From " separators and garbage alike): headerless.
        if not first.startswith(b"From "):
            return b"", 0
    pos = 0
    n = len(raw)
    while pos < n:
        nl = raw.find(b"\n", pos)
        if nl < 0:
            return raw, n
        line = raw[pos:nl]
        if line == b"" or line == b"\r":
            return raw[:pos], nl + 1
        pos = nl + 1
    return raw, n


def header_block(raw: bytes) -> bytes:
    """The header lines of raw message bytes, without the empty line that ends them."""
    return _split_header_block(raw)[0]


def envelope_sender(message: Message) -> str:
    """The envelope sender a stored or fetched message names in its first Return-Path header
    (without the angle brackets; "" when there is none)."""
    values = message.get_all("Return-Path", decode=False)
    if not values:
        return ""
    v = values[0].strip()
    if v.startswith("<") and ">" in v:
        v = v[1:v.index(">")]
    return v.strip()


def _parse_headers(block: bytes) -> list[tuple[str, str]]:
    """Split a header block into (name, unfolded raw value) pairs, in order."""
    headers: list[tuple[str, str]] = []
    if not block:
        return headers
    text = block.decode("utf-8", "surrogateescape")
    name: str | None = None
    value_parts: list[str] = []
    for line in text.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if line[:1] in (" ", "\t"):
            if name is not None:
                value_parts.append(line)
            continue
        if name is not None:
            headers.append((name, _unfold(value_parts)))
            name = None
        colon = line.find(":")
        if colon <= 0:
            continue  # mbox "From " line or garbage: not a header
        candidate = line[:colon].rstrip(" \t")
        if not candidate or any(ord(c) <= 32 or ord(c) == 127 for c in candidate):
            continue
        name = candidate
        value_parts = [line[colon + 1:]]
    if name is not None:
        headers.append((name, _unfold(value_parts)))
    return headers


def _unfold(parts: list[str]) -> str:
    # RFC 5322 unfolding: drop the CRLF, keep the whitespace; Sieve then strips
    # leading and trailing whitespace of the value (RFC 5228 section 5.7).
    # A continuation line's leading TAB reads as a space, as in Dovecot's
    # header parser (CLEAN_ONELINE), so "a\n\tb" matches "a b" in both.
    tail = [" " + p[1:] if p.startswith("\t") else p for p in parts[1:]]
    return (parts[0] + "".join(tail)).strip(" \t")


def _to_text(value: str) -> str:
    """Turn surrogate-escaped 8-bit bytes into text the way mail clients do."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogateescape")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")


def decode_rfc2047(value: str) -> str:
    """Decode RFC 2047 encoded-words; returns the value unchanged if there are none."""
    value = _to_text(value)
    if "=?" not in value:
        return value
    from email.header import decode_header  # lazy: only for encoded headers

    try:
        parts = decode_header(value)
    except Exception:  # malformed encoded-words: keep the text as it came
        return value
    out: list[str] = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            out.append(chunk)
            continue
        for cs in (charset or "ascii", "utf-8", "latin-1"):
            try:
                out.append(chunk.decode(cs, "strict"))
                break
            except (LookupError, UnicodeDecodeError):
                continue
    return "".join(out)


class Message:
    """One message: raw bytes exactly as received, plus its envelope.

    `sender` is the envelope sender ("" for the null sender <>), `recipients`
    the envelope recipients; `original_recipient` is the address before any
    aliasing, when known; `origin` names the source (account, LMTP peer, stdin).
    """

    __slots__ = ("raw", "sender", "recipients", "original_recipient", "origin",
                 "_headers", "_body_offset", "_email", "_added")

    def __init__(self, raw: bytes, sender: str = "", recipients: list[str] | None = None,
                 original_recipient: str | None = None, origin: str = "stdin") -> None:
        self.raw = raw
        self.sender = sender
        self.recipients = list(recipients or [])
        self.original_recipient = original_recipient
        self.origin = origin
        self._headers: list[tuple[str, str]] | None = None
        self._body_offset: int | None = None
        self._email = None
        # Header values a Sieve addheader wrote: {value as written: value as given}.
        # Tests see the given value, not an RFC 2047 decoding of it (as Pigeonhole).
        self._added: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Message({len(self.raw)} bytes, sender={self.sender!r}, recipients={self.recipients!r})"

    # -- headers -------------------------------------------------------------
    def _ensure_headers(self) -> None:
        if self._headers is None:
            block, offset = _split_header_block(self.raw)
            self._headers = _parse_headers(block)
            self._body_offset = offset

    @property
    def header_items(self) -> list[tuple[str, str]]:
        """All (name, raw unfolded value) pairs in message order."""
        self._ensure_headers()
        assert self._headers is not None
        return self._headers

    def get_all(self, name: str, decode: bool = True) -> list[str]:
        """Every value of header `name` (case-insensitive), RFC 2047-decoded by default."""
        lname = name.lower()
        values = [v for (n, v) in self.header_items if n.lower() == lname]
        if decode:
            added = self._added
            return [added[v] if v in added else decode_rfc2047(v) for v in values]
        return [_to_text(v) for v in values]

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.get_all(name)
        return values[0] if values else default

    # -- body ----------------------------------------------------------------
    @property
    def body_offset(self) -> int:
        self._ensure_headers()
        assert self._body_offset is not None
        return self._body_offset

    @property
    def body(self) -> bytes:
        """The raw body (everything after the header block's empty line)."""
        return self.raw[self.body_offset:]

    @property
    def size(self) -> int:
        return len(self.raw)

    def as_email(self):
        """The message parsed by the stdlib `email` package (imported on first use)."""
        if self._email is None:
            from email import policy
            from email.parser import BytesParser

            self._email = BytesParser(policy=policy.compat32).parsebytes(self.raw)
        return self._email

    # -- changes -------------------------------------------------------------
    def with_raw(self, raw: bytes) -> "Message":
        """A copy of this message with other bytes (used by editheader)."""
        copy = Message(raw=raw, sender=self.sender, recipients=list(self.recipients),
                       original_recipient=self.original_recipient, origin=self.origin)
        copy._added = self._added
        return copy

    def with_added_header(self, raw: bytes, written: str, given: str) -> "Message":
        """A copy with other bytes in which a header value `given` was written as `written`."""
        copy = self.with_raw(raw)
        copy._added = {**self._added, written: given}
        return copy

    def prepend_header(self, name: str, value: str) -> "Message":
        """A copy with one header added at the very top, in the message's own line ending."""
        eol = b"\r\n" if b"\r\n" in self.raw[:4096] else b"\n"
        line = f"{name}: {value}".encode("utf-8") + eol
        return self.with_raw(line + self.raw)
