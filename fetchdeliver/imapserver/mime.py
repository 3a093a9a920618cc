"""MIME structure with byte offsets: what FETCH sections, BODYSTRUCTURE and ENVELOPE are made of.

The stdlib email parser does not keep offsets, and `BODY[1.2.MIME]<0.100>`
must return the exact bytes of a part, so the message (already in CRLF form)
is split here: header / body boundaries, multipart boundaries, and embedded
message/rfc822 parts, all as offsets into one buffer.
"""

from __future__ import annotations

import re

def to_crlf(raw: bytes) -> bytes:
    """Every bare LF becomes CRLF (IMAP speaks CRLF; Maildir files usually hold LF)."""
    if b"\n" not in raw:
        return raw
    if b"\r" not in raw:
        return raw.replace(b"\n", b"\r\n")   # the usual Maildir file: much faster than the regex
    if raw.count(b"\n") == raw.count(b"\r\n"):
        return raw
    # CRLF -> LF -> CRLF turns exactly the LFs without a CR before them into CRLF.
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class Part:
    """A MIME entity: header at [start, body_start), body at [body_start, end)."""

    __slots__ = ("buf", "start", "body_start", "end", "_fields", "ctype", "subtype", "params",
                 "children", "message")

    def __init__(self, buf: bytes, start: int, end: int, default: tuple[str, str] = ("text", "plain"),
                 depth: int = 0) -> None:
        self.buf = buf
        self.start = start
        self.end = end
        self.children: list[Part] = []
        self.message: Part | None = None
        if buf.startswith(b"\r\n", start) and start + 2 <= end:
            self.body_start = start + 2
        else:
            idx = buf.find(b"\r\n\r\n", start, end)
            self.body_start = end if idx < 0 else idx + 4
        self._fields: list[tuple[str, bytes]] | None = None
        ct = self.header(b"content-type")
        self.ctype, self.subtype, self.params = default[0], default[1], []
        if default == ("text", "plain"):
            self.params = [(b"charset", b"us-ascii")]
        if ct is not None:
            parsed = parse_content_type(ct)
            if parsed is not None:
                self.ctype, self.subtype, self.params = parsed
                if not self.params and self.ctype.lower() == "text":
                    # RFC 2046 4.1.2: text without a charset is US-ASCII; Dovecot says so explicitly.
                    self.params = [(b"charset", b"us-ascii")]
        if depth > 50:
            return  # a bomb of nested parts: stop descending (Dovecot stops at 100)
        if self.ctype.lower() == "multipart":
            boundary = self.param(b"boundary")
            if boundary:
                child_default = ("message", "rfc822") if self.subtype.lower() == "digest" else ("text", "plain")
                for s, e in split_multipart(buf, self.body_start, end, boundary):
                    self.children.append(Part(buf, s, e, child_default, depth + 1))
        elif self.ctype.lower() == "message" and self.subtype.lower() in ("rfc822", "global"):
            self.message = Part(buf, self.body_start, end, depth=depth + 1)

    def is_multipart(self) -> bool:
        return self.ctype.lower() == "multipart"

    def fields(self) -> list[tuple[str, bytes]]:
        """[(lower-case name, raw field bytes incl. its CRLF)] in order."""
        if self._fields is None:
            self._fields = split_fields(self.buf[self.start:self.body_start])
        return self._fields

    def header(self, name: bytes) -> bytes | None:
        """The unfolded value of the first field `name` (lower-case bytes), or None."""
        key = name.decode()
        for n, raw in self.fields():
            if n == key:
                return unfold(raw.split(b":", 1)[1])
        return None

    def param(self, name: bytes) -> bytes | None:
        for k, v in self.params:
            if k.lower() == name:
                return v
        return None

    def header_bytes(self) -> bytes:
        return self.buf[self.start:self.body_start]

    def body_bytes(self) -> bytes:
        return self.buf[self.body_start:self.end]


def unfold(value: bytes) -> bytes:
    return re.sub(rb"\r?\n(?=[ \t])", b"", value).strip(b" \t\r\n")


def split_fields(header: bytes) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for line in header.split(b"\r\n")[:-1] if header.endswith(b"\r\n") else header.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and out:
            n, raw = out[-1]
            out[-1] = (n, raw + line + b"\r\n")
            continue
        name = line.split(b":", 1)[0].strip().lower() if b":" in line else b""
        out.append((name.decode("latin-1"), line + b"\r\n"))
    return out


def split_multipart(buf: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """Part extents between "--boundary" lines; the CRLF before a delimiter belongs to it."""
    delim = b"--" + boundary
    parts = []
    pos = start
    cur = None
    while True:
        idx = buf.find(delim, pos, end)
        if idx < 0:
            break
        at_line_start = idx == start or buf[idx - 2:idx] == b"\r\n"
        line_end = buf.find(b"\r\n", idx, end)
        line_end = end if line_end < 0 else line_end
        rest = buf[idx + len(delim):line_end]
        if not at_line_start or rest.strip(b" \t") not in (b"", b"--"):
            pos = idx + len(delim)
            continue
        if cur is not None:
            pend = idx - 2 if idx - 2 >= cur else cur
            parts.append((cur, pend))
        if rest.strip(b" \t") == b"--":
            cur = None
            break
        cur = min(line_end + 2, end)
        pos = cur
    if cur is not None:
        parts.append((cur, end))
    return parts


# -- header value tokenizing (RFC 2045 / 5322) -------------------------------------------------

_TSPECIALS = b'()<>@,;:\\"/[]?='


def _skip_cfws(v: bytes, i: int) -> int:
    n = len(v)
    while i < n:
        c = v[i]
        if c in b" \t\r\n":
            i += 1
        elif c == 40:  # comment, nested
            depth = 0
            while i < n:
                c = v[i]
                if c == 92:
                    i += 2
                    continue
                if c == 40:
                    depth += 1
                elif c == 41:
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        else:
            break
    return i


def _quoted(v: bytes, i: int) -> tuple[bytes, int]:
    out = bytearray()
    i += 1
    n = len(v)
    while i < n:
        c = v[i]
        if c == 92 and i + 1 < n:
            out.append(v[i + 1])
            i += 2
            continue
        if c == 34:
            return bytes(out), i + 1
        out.append(c)
        i += 1
    return bytes(out), i


def _token(v: bytes, i: int, specials: bytes = _TSPECIALS) -> tuple[bytes, int]:
    start = i
    n = len(v)
    while i < n and v[i] not in specials and v[i] not in b" \t\r\n":
        i += 1
    return v[start:i], i


def parse_content_type(value: bytes):
    """(type, subtype, [(name, value)]) or None when the value is unusable (then the default applies)."""
    i = _skip_cfws(value, 0)
    t, i = _token(value, i)
    i = _skip_cfws(value, i)
    if not t:
        # An empty Content-Type: Dovecot answers ("" "" NIL ...), a part of no type; so do we.
        return ("", "", []) if i >= len(value) else None
    if i >= len(value) or value[i] != 47:
        # "Content-Type: text": Dovecot keeps the type it could read, with an empty subtype and no
        # parameters (so the part stays text, as its other flags say); we answer the same.
        return t.decode("latin-1"), "", []
    i = _skip_cfws(value, i + 1)
    s, i = _token(value, i)
    if not s:
        return None
    params = parse_params(value, i)
    return t.decode("latin-1"), s.decode("latin-1"), params


def parse_params(value: bytes, i: int) -> list[tuple[bytes, bytes]]:
    """The `; name=value` parameters from value[i:].

    As Dovecot answers: junk up to the next ';' and a name without '=' are skipped; a value whose
    quoted string never ends is dropped (it runs to the end of the field)."""
    params = []
    n = len(value)
    while True:
        i = _skip_cfws(value, i)
        if i >= n:
            break
        if value[i] != 59:  # ';'
            # junk: skip to the next ';'
            j = value.find(b";", i)
            if j < 0:
                break
            i = j
            continue
        i = _skip_cfws(value, i + 1)
        name, i = _token(value, i)
        i = _skip_cfws(value, i)
        if not name or i >= n or value[i] != 61:
            continue
        i = _skip_cfws(value, i + 1)
        if i < n and value[i] == 34:
            if not _terminated_quote(value, i):
                break
            val, i = _quoted(value, i)
        else:
            val, i = _token(value, i, b';')
        params.append((name, val))
    return params


def _terminated_quote(v: bytes, i: int) -> bool:
    i += 1
    while i < len(v):
        if v[i] == 92:
            i += 2
            continue
        if v[i] == 34:
            return True
        i += 1
    return False


def parse_disposition(value: bytes):
    i = _skip_cfws(value, 0)
    t, i = _token(value, i)
    if not t:
        return None
    return t, parse_params(value, i)


# -- addresses -----------------------------------------------------------------------------

_ADDR_SPECIALS = b'()<>@,;:\\".[]'


def _comment(v: bytes, i: int) -> tuple[bytes, int]:
    """The text of the (nested) comment at v[i] == "(", unescaped, and the index after it."""
    out = bytearray()
    depth, n = 0, len(v)
    while i < n:
        c = v[i]
        if c == 92 and i + 1 < n:
            out.append(v[i + 1])
            i += 2
            continue
        if c == 40:
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif c == 41:
            depth -= 1
            if depth == 0:
                return bytes(out), i + 1
        out.append(c)
        i += 1
    return bytes(out), i


def _addr_tokens(v: bytes) -> list[tuple[str, bytes]]:
    """[(kind, text)] with kind "w" (atom), "q" (quoted string), "s" (special), "c" (comment text)."""
    out = []
    i, n = 0, len(v)
    while True:
        while i < n and v[i] in b" \t\r\n":
            i += 1
        if i >= n:
            return out
        c = v[i]
        if c == 40:
            text, i = _comment(v, i)
            out.append(("c", b" ".join(text.split())))
        elif c == 34:
            q, i = _quoted(v, i)
            out.append(("q", q))
        elif c == 91:  # domain literal
            j = v.find(b"]", i)
            j = n if j < 0 else j + 1
            out.append(("w", v[i:j]))
            i = j
        elif c in _ADDR_SPECIALS:
            out.append(("s", bytes([c])))
            i += 1
        else:
            w, i = _token(v, i, _ADDR_SPECIALS)
            if not w:
                i += 1
                continue
            out.append(("w", w))


def parse_addresses(value: bytes) -> list[tuple]:
    """Envelope addresses: (name, adl, mailbox, host) tuples; groups as (None, None, name, None) ...
    (None, None, None, None), as RFC 3501 section 7.4.2 describes."""
    all_toks = _addr_tokens(value)
    toks = [t for t in all_toks if t[0] != "c"]
    # Comments only matter as the personal name of a bare addr-spec (no <>):
    # "user@domain (Real Name)" names "Real Name", as Dovecot does; "<a@b> (x)" has no name.
    # comment_after[k]: the last comment before plain token k+1, i.e. belonging to token k's address.
    comment_after: dict[int, bytes] = {}
    k = -1
    for kind, text in all_toks:
        if kind == "c":
            if text:
                comment_after[k] = text
        else:
            k += 1
    out: list[tuple] = []
    i, n = 0, len(toks)
    in_group = False

    def phrase(ws):
        parts = [t for _, t in ws]
        return b" ".join(parts) if parts else None

    while i < n:
        before = i
        words = []
        while i < n and not (toks[i][0] == "s" and toks[i][1] in b"<@:,;"):
            words.append(toks[i])
            i += 1
        if i < n and toks[i][1] == b":" and not in_group:
            out.append((None, None, phrase(words) or b"", None))
            in_group = True
            i += 1
            continue
        if i < n and toks[i][1] == b"<":
            i += 1
            route = []
            if i < n and toks[i][1] == b"@":
                while i < n and toks[i][1] != b":" and toks[i][1] != b">":
                    route.append(toks[i][1])
                    i += 1
                if i < n and toks[i][1] == b":":
                    i += 1
                else:
                    route = []
            local = []
            while i < n and toks[i][1] not in (b"@", b">") or (i < n and toks[i][0] == "q"):
                local.append(toks[i][1])
                i += 1
            host = []
            if i < n and toks[i][1] == b"@":
                i += 1
                while i < n and not (toks[i][0] == "s" and toks[i][1] == b">"):
                    host.append(toks[i][1])
                    i += 1
            if i < n and toks[i][1] == b">":
                i += 1
            out.append((phrase(words), b"".join(route) or None,
                        b"".join(local) or b"MISSING_MAILBOX", b"".join(host) or b"MISSING_DOMAIN"))
        elif i < n and toks[i][1] == b"@":
            i += 1
            host = []
            while i < n and not (toks[i][0] == "s" and toks[i][1] in b",;"):
                host.append(toks[i][1])
                i += 1
            local = b"".join(t for _, t in words)
            out.append((comment_after.get(i - 1), None, local or b"MISSING_MAILBOX",
                        b"".join(host) or b"MISSING_DOMAIN"))
        elif words:
            out.append((None, None, b"".join(t for _, t in words), b"MISSING_DOMAIN"))
        while i < n and toks[i][0] == "s" and toks[i][1] in b",;>":
            if toks[i][1] == b";" and in_group:
                out.append((None, None, None, None))
                in_group = False
            i += 1
        if i == before:
            i += 1  # a stray special: skip it so that we always advance
    if in_group:
        out.append((None, None, None, None))
    return out
