"""FETCH: attribute parsing, BODY[section]<partial>, ENVELOPE and BODYSTRUCTURE per RFC 3501 section 9;
BINARY[section]<partial> and BINARY.SIZE[section] (RFC 3516): a part's content-transfer-decoded bytes."""

from __future__ import annotations

from fetchdeliver.errors import FetchdeliverError
from fetchdeliver.imapserver.mime import Part, parse_addresses, parse_disposition, to_crlf
from fetchdeliver.imapserver.protocol import ParseError, Parser, format_internaldate, nstring

MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
SIMPLE = {"FLAGS", "UID", "MODSEQ", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822",
          "RFC822.HEADER", "RFC822.TEXT", "EMAILID", "THREADID", "PREVIEW"}   # the last three: objectid.py


class Section:
    """BODY[...] / BODY.PEEK[...] with an optional <partial>."""

    __slots__ = ("peek", "nums", "spec", "fields", "partial", "label", "binary")

    def __init__(self, peek, nums, spec, fields, partial, label, binary: str = "") -> None:
        self.peek = peek          # True for BODY.PEEK (does not set \Seen)
        self.nums = nums          # [1, 2] for "1.2"
        self.spec = spec          # "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"
        self.fields = fields      # header names (upper-case str) for HEADER.FIELDS[.NOT]
        self.partial = partial    # (offset, count) or None
        self.label = label        # the response item name, e.g. b"BODY[1.MIME]"
        self.binary = binary      # "" for BODY, "BINARY" or "SIZE" (BINARY.SIZE) for RFC 3516


def parse_fetch_atts(p: Parser) -> list:
    """fetch-att list: returns a list of item names (str) and Section objects."""
    if p.peek() == 40:
        p.i += 1
        items = []
        while True:
            items.append(_fetch_att(p))
            if p.maybe(b")"):
                break
            p.sp()
        return items
    save = p.i
    word = p._run(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz").decode().upper()
    if word in MACROS and (p.at_end() or p.peek() == 32):
        return list(MACROS[word])
    p.i = save
    return [_fetch_att(p)]


def _fetch_att(p: Parser):
    name = p._run(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.").decode().upper()
    if name in ("BODY", "BODY.PEEK") and p.peek() == 91:
        return _section(p, name == "BODY.PEEK")
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE") and p.peek() == 91:
        return _binary_section(p, name)
    if name not in SIMPLE:
        raise ParseError(f"unknown FETCH item {name or p.b[p.i:p.i + 10]!r}")
    if name == "PREVIEW" and p.maybe(b" ("):     # RFC 8970: PREVIEW (LAZY): we always have it at hand
        while not p.maybe(b")"):
            if p.atom().upper() != "LAZY":
                raise ParseError("the PREVIEW modifier is LAZY")
            p.maybe(b" ")
    return name


def _section(p: Parser, peek: bool) -> Section:
    p.expect(b"[")
    start = p.i
    nums: list[int] = []
    spec = ""
    fields: list[str] = []
    while p.peek() is not None and 48 <= p.peek() <= 57:
        nums.append(p.nz_number())
        if not p.maybe(b"."):
            break
    else:
        pass
    if p.peek() != 93:
        word = p._run(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.").decode().upper()
        if word not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
            raise ParseError(f"unknown section text {word!r}")
        if word == "MIME" and not nums:
            raise ParseError("MIME needs a part number (e.g. BODY[1.MIME])")
        spec = word
        if word.startswith("HEADER.FIELDS"):
            p.sp()
            p.expect(b"(")
            while True:
                fields.append(p.astring().decode("ascii", "replace").upper())
                if p.maybe(b")"):
                    break
                p.sp()
    elif nums and p.b[p.i - 1:p.i] == b".":
        raise ParseError("a section part number ends in '.'")
    inner = p.b[start:p.i]
    p.expect(b"]")
    partial = None
    if p.maybe(b"<"):
        off = p.number()
        p.expect(b".")
        count = p.nz_number()
        p.expect(b">")
        partial = (off, count)
    return Section(peek, nums, spec, fields, partial, b"BODY[" + inner + b"]")


def parse_section(text: bytes) -> Section:
    """A section spec on its own ("1.MIME", "HEADER.FIELDS (From)", "" for the whole message), as an
    IMAP URL's ;SECTION= gives it (RFC 5092); ParseError when it is not one."""
    p = Parser(b"[" + text + b"]")
    sec = _section(p, True)
    p.end()
    return sec


def _binary_section(p: Parser, name: str) -> Section:
    """section-binary = "[" [section-part] "]" (RFC 3516 4.2); BINARY.SIZE takes no partial."""
    p.expect(b"[")
    start = p.i
    nums: list[int] = []
    if p.peek() != 93:
        while True:
            nums.append(p.nz_number())
            if not p.maybe(b"."):
                break
    inner = p.b[start:p.i]
    p.expect(b"]")
    partial = None
    if name != "BINARY.SIZE" and p.maybe(b"<"):
        off = p.number()
        p.expect(b".")
        count = p.nz_number()
        p.expect(b">")
        partial = (off, count)
    if name == "BINARY.SIZE":
        return Section(True, nums, "", [], None, b"BINARY.SIZE[" + inner + b"]", "SIZE")
    return Section(name == "BINARY.PEEK", nums, "", [], partial, b"BINARY[" + inner + b"]", "BINARY")


class UnknownCte(FetchdeliverError):
    """BINARY of a part whose Content-Transfer-Encoding the server cannot decode (NO [UNKNOWN-CTE])."""


def binary_bytes(parsed: Parsed, sec: Section) -> bytes | None:
    """The decoded content of a part (RFC 3516): base64 and quoted-printable are decoded, identity
    encodings (7bit, 8bit, binary, none) are returned as they are; the whole message as it is."""
    if not sec.nums:
        return parsed.raw
    node = _find_part(parsed.root, sec.nums)
    if node is None:
        return b""         # no such part: empty, as Dovecot answers
    data = node.body_bytes()
    if node.is_multipart() or node.message is not None:
        return data        # a multipart or message/rfc822 is never encoded (RFC 2045 6.4)
    cte = (node.header(b"content-transfer-encoding") or b"").strip().lower()
    if cte in (b"", b"7bit", b"8bit", b"binary"):
        return data
    if cte == b"base64":
        import binascii

        # leniently, as mail readers and Dovecot decode: characters outside the alphabet are
        # skipped, the data ends at the first "=", a dangling sixth of a byte is dropped
        clean = data.split(b"=", 1)[0].translate(None, _NOT_BASE64)
        if len(clean) % 4 == 1:
            clean = clean[:-1]
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    if cte == b"quoted-printable":
        return decode_qp(data)
    raise UnknownCte(f"unknown Content-Transfer-Encoding {cte.decode('ascii', 'replace')}")


_HEX = b"0123456789ABCDEFabcdef"
_NOT_BASE64 = bytes(c for c in range(256)
                    if c not in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def decode_qp(data: bytes) -> bytes:
    """Quoted-printable (RFC 2045 6.7) with CRLF line ends kept: trailing white space on a line is
    dropped, "=" at a line end joins it to the next, "=XX" is a byte; anything else is kept as is."""
    out = bytearray()
    lines = data.split(b"\r\n")
    for n, line in enumerate(lines):
        line = line.rstrip(b" \t")
        soft = line.endswith(b"=")
        if soft:
            line = line[:-1]
        i = 0
        while i < len(line):
            c = line[i]
            if c == 61 and i + 2 < len(line) and line[i + 1] in _HEX and line[i + 2] in _HEX:
                out.append(int(line[i + 1:i + 3], 16))
                i += 3
            else:
                out.append(c)
                i += 1
        if not soft and n < len(lines) - 1:
            out += b"\r\n"
    return bytes(out)


# -- message data ------------------------------------------------------------------------

class Parsed:
    """A message's CRLF bytes and its lazily built MIME tree."""

    __slots__ = ("raw", "_root")

    def __init__(self, raw: bytes) -> None:
        # A CRLF message with NUL bytes is binary content (an APPEND of a literal8, RFC 3516): the
        # line ends inside that content are part of it and stay as they are.
        self.raw = raw if b"\0" in raw and _crlf_header(raw) else to_crlf(raw)
        self._root: Part | None = None

    @property
    def root(self) -> Part:
        if self._root is None:
            self._root = Part(self.raw, 0, len(self.raw))
        return self._root


def _crlf_header(raw: bytes) -> bool:
    """Whether the first line ends in CRLF (so the message came over the wire, not as a Unix file)."""
    nl = raw.find(b"\n")
    return nl > 0 and raw[nl - 1] == 13


def _find_part(root: Part, nums: list[int]) -> Part | None:
    node = root
    entered = False
    for n in nums:
        if entered and node.message is None and not node.is_multipart():
            return None   # a leaf part has no sub-parts (BODY[1.1] of a text/plain message)
        target = node.message if (entered and node.message is not None) else node
        if target.is_multipart():
            if n > len(target.children):
                return None
            node = target.children[n - 1]
        elif n == 1:
            # A non-multipart message (top level or encapsulated) has one part: its body.
            node = target
        else:
            return None
        entered = True
    return node


def section_bytes(parsed: Parsed, sec: Section) -> bytes | None:
    if not sec.nums and sec.spec == "":
        return parsed.raw    # BODY[]: the whole message, no MIME parse needed
    root = parsed.root
    if not sec.nums:
        node = root
    else:
        node = _find_part(root, sec.nums)
        if node is None:
            return None
    spec = sec.spec
    if spec == "":
        data = parsed.raw if not sec.nums else node.body_bytes()
        if sec.nums and b"\0" in data and not node.is_multipart() and node.message is None:
            # binary content (APPENDed as literal8) cannot go out in a BODY literal: base64 it, as the
            # RFC 3516 client reads it with BINARY[] anyway
            import base64

            data = base64.encodebytes(data).replace(b"\n", b"\r\n")
    elif spec == "MIME":
        data = node.header_bytes()
    else:
        msg = node if not sec.nums else node.message
        if msg is None:
            return b""  # HEADER/TEXT of a part that is not message/rfc822: nothing, as Dovecot
        if spec == "TEXT":
            data = msg.body_bytes()
        elif spec == "HEADER":
            data = msg.header_bytes()
        else:
            want = {f.lower() for f in sec.fields}
            keep = spec == "HEADER.FIELDS"
            data = b"".join(raw for n, raw in msg.fields() if (n in want) == keep) + b"\r\n"
    return data


def apply_partial(data: bytes, sec: Section) -> tuple[bytes, bytes]:
    """(response label, bytes) with <partial> applied."""
    if sec.partial is None:
        return sec.label, data
    off, count = sec.partial
    return sec.label + b"<%d>" % off, data[off:off + count]


# -- ENVELOPE ----------------------------------------------------------------------------

def _addr_list(part: Part, name: bytes, fallback: bytes | None = None) -> bytes:
    value = part.header(name)
    if value is None:
        return b"NIL" if fallback is None else fallback
    addrs = parse_addresses(value)
    if not addrs:
        # RFC 3501 7.4.2: an empty Sender or Reply-To (no address at all) takes From's value too
        return b"NIL" if fallback is None else fallback
    return b"(" + b"".join(b"(" + b" ".join(nstring(x) for x in a) + b")" for a in addrs) + b")"


def _nolf(value: bytes | None) -> bytes | None:
    """CR and LF dropped, a space where the next line does not start with blank (Dovecot's
    imap_append_nstring_nolf), so a bare CR in a Subject reads as a word break."""
    if value is None or (b"\r" not in value and b"\n" not in value):
        return value
    out = bytearray()
    n = len(value)
    for i, c in enumerate(value):
        if c in (13, 10):
            if i + 1 >= n or value[i + 1] not in b" \t\r\n":
                out.append(32)
        else:
            out.append(c)
    return bytes(out)


def envelope(part: Part) -> bytes:
    def h(name):
        return nstring(_nolf(part.header(name)))

    frm = _addr_list(part, b"from")   # Sender and Reply-To default to From: render it once
    return b"(" + b" ".join([
        h(b"date"), h(b"subject"), frm, _addr_list(part, b"sender", frm), _addr_list(part, b"reply-to", frm),
        _addr_list(part, b"to"), _addr_list(part, b"cc"), _addr_list(part, b"bcc"),
        h(b"in-reply-to"), h(b"message-id"),
    ]) + b")"


# -- BODYSTRUCTURE -----------------------------------------------------------------------

def _params(params) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(nstring(k) + b" " + nstring(v) for k, v in params) + b")"


def _lines(data: bytes) -> int:
    """body-fld-lines: the line ends in the body, as Dovecot and Cyrus count them (a last line
    without CRLF, such as a part's last line before its boundary, is not counted)."""
    return data.count(b"\n")


def _disposition(part: Part) -> bytes:
    v = part.header(b"content-disposition")
    d = parse_disposition(v) if v is not None else None
    if d is None:
        return b"NIL"
    return b"(" + nstring(d[0]) + b" " + _params(d[1]) + b")"


def _language(part: Part) -> bytes:
    v = part.header(b"content-language")
    if v is None:
        return b"NIL"
    langs = [x.strip() for x in v.replace(b" ", b"").split(b",") if x.strip()]
    if not langs:
        return b"NIL"
    if len(langs) == 1:
        return nstring(langs[0])
    return b"(" + b" ".join(nstring(x) for x in langs) + b")"


def bodystructure(part: Part, extended: bool = True) -> bytes:
    if part.is_multipart():
        kids = part.children
        if kids:
            inner = b"".join(bodystructure(k, extended) for k in kids)
        else:
            # RFC 3501 needs at least one part: an empty text/plain, as Dovecot gives.
            inner = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0' + \
                (b" NIL NIL NIL NIL)" if extended else b")")
        out = inner + b" " + nstring(part.subtype)
        if extended:
            out += b" " + b" ".join([_params(part.params), _disposition(part), _language(part),
                                     nstring(part.header(b"content-location"))])
        return b"(" + out + b")"
    body = part.body_bytes()
    enc = part.header(b"content-transfer-encoding")
    fields = [nstring(part.ctype), nstring(part.subtype), _params(part.params),
              nstring(part.header(b"content-id")), nstring(part.header(b"content-description")),
              nstring(enc.strip() if enc else b"7bit"), str(len(body)).encode()]
    if part.message is not None:
        fields += [envelope(part.message), bodystructure(part.message, extended),
                   str(_lines(body)).encode()]
    elif part.ctype.lower() == "text":
        fields.append(str(_lines(body)).encode())
    if extended:
        fields += [nstring(part.header(b"content-md5")), _disposition(part), _language(part),
                   nstring(part.header(b"content-location"))]
    return b"(" + b" ".join(fields) + b")"


# -- the FETCH response item list -------------------------------------------------------------

def sets_seen(items: list) -> bool:
    for it in items:
        if isinstance(it, Section):
            if not it.peek:
                return True
        elif it in ("RFC822", "RFC822.TEXT"):
            return True
    return False


def needs_body(items: list) -> bool:
    return any(isinstance(it, Section) or it in ("ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822",
                                                  "RFC822.HEADER", "RFC822.TEXT", "EMAILID", "THREADID",
                                                  "PREVIEW") for it in items)


# FETCH items that depend on the message's content only and may be kept in the server's cache.
CACHED_ITEMS = ("ENVELOPE", "BODYSTRUCTURE", "BODY", "EMAILID", "THREADID", "PREVIEW")
CACHEABLE = frozenset(CACHED_ITEMS + ("UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"))


def cached_only(items: list, memo: dict | None) -> bool:
    """Whether every content item of `items` is in `memo` (then the message need not be read)."""
    return memo is not None and all(not isinstance(it, Section) and it in CACHEABLE and
                                    (it not in CACHED_ITEMS or it in memo) for it in items)


def _memo(memo: dict | None, key: str, make) -> bytes:
    if memo is None:
        return make()
    value = memo.get(key)
    if value is None:
        value = memo[key] = make()
    return value


def render(items: list, msg, mailbox, flags_text: bytes, parsed: Parsed | None, uid_first: bool,
           memo: dict | None = None) -> bytes:
    """The parenthesized FETCH data of one message; `memo` caches what depends on content only."""
    out = []
    if uid_first:
        out.append(b"UID %d" % msg.uid)
    for it in items:
        if isinstance(it, Section) and it.binary:
            data = binary_bytes(parsed, it)
            if it.binary == "SIZE":
                out.append(it.label + b" %d" % (len(data) if data is not None else 0))
            elif data is None:
                out.append(apply_partial(b"", it)[0] + b" NIL")
            else:
                label, data = apply_partial(data, it)
                out.append(label + b" " + (b"~" + _lit(data) if b"\0" in data else _lit(data)))
        elif isinstance(it, Section):
            data = section_bytes(parsed, it)
            if data is None:
                out.append(apply_partial(b"", it)[0] + b" NIL")
            else:
                label, data = apply_partial(data, it)
                out.append(label + b" " + _lit(data))
        elif it == "FLAGS":
            out.append(b"FLAGS " + flags_text)
        elif it == "UID":
            if not uid_first:
                out.append(b"UID %d" % msg.uid)
        elif it == "MODSEQ":
            out.append(b"MODSEQ (%d)" % max(msg.modseq, 1))
        elif it == "INTERNALDATE":
            out.append(b"INTERNALDATE " + format_internaldate(msg.internaldate).encode())
        elif it == "RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % (len(parsed.raw) if parsed is not None else mailbox.size(msg)))
        elif it == "ENVELOPE":
            out.append(b"ENVELOPE " + _memo(memo, it, lambda: envelope(parsed.root)))
        elif it == "BODYSTRUCTURE":
            out.append(b"BODYSTRUCTURE " + _memo(memo, it, lambda: bodystructure(parsed.root, True)))
        elif it == "BODY":
            out.append(b"BODY " + _memo(memo, it, lambda: bodystructure(parsed.root, False)))
        elif it in ("EMAILID", "THREADID", "PREVIEW"):
            out.append(it.encode() + b" " + _memo(memo, it, lambda it=it: _object_item(it, parsed)))
        elif it == "RFC822":
            out.append(b"RFC822 " + _lit(parsed.raw))
        elif it == "RFC822.HEADER":
            out.append(b"RFC822.HEADER " + _lit(parsed.root.header_bytes()))
        elif it == "RFC822.TEXT":
            out.append(b"RFC822.TEXT " + _lit(parsed.root.body_bytes()))
    return b"(" + b" ".join(out) + b")"


def _object_item(item: str, parsed: Parsed | None) -> bytes:
    """EMAILID/THREADID (RFC 8474) and PREVIEW (RFC 8970) of the message, as sent."""
    from fetchdeliver.imapserver import objectid

    raw = parsed.raw if parsed is not None else b""
    if item == "EMAILID":
        return b"(" + objectid.email_id(raw).encode() + b")"
    if item == "THREADID":
        return b"(" + objectid.thread_id(raw).encode() + b")"
    return objectid.render_preview(raw)


def _lit(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data
