"""SEARCH: the RFC 3501 search-key grammar, and matching keys against messages.

Text keys match case-insensitively as substrings of the decoded text: header
values with RFC 2047 words decoded, bodies with their Content-Transfer-Encoding
and charset decoded (as Dovecot does), falling back to the raw bytes.
"""

from __future__ import annotations

import calendar
import time

from fetchdeliver.errors import FetchdeliverError
from fetchdeliver.imapserver.protocol import ParseError, Parser

FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True), "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False), "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False), "UNSEEN": ("\\Seen", False),
}
HEADER_KEYS = {"BCC", "CC", "FROM", "SUBJECT", "TO"}
ADDRESS_FIELDS = {"bcc", "cc", "from", "to"}   # searched as parsed addresses
DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}
CHARSETS = {"UTF-8", "US-ASCII", "UTF8", "ASCII"}


class BadCharset(FetchdeliverError):
    """SEARCH CHARSET names one we do not support: answered NO [BADCHARSET]."""


def parse_search(p: Parser, utf8: bool = False) -> tuple:
    """`[CHARSET name] key *(SP key)` -> ("AND", [nodes]); the Parser is left at the end."""
    charset = "UTF-8"
    save = p.i
    if p.maybe(b"CHARSET "):
        charset = p.astring().decode("ascii", "replace").upper()
        if charset not in CHARSETS:
            raise BadCharset(charset)
        p.sp()
    elif p.at_end():
        p.i = save
    keys = [_key(p, charset)]
    while not p.at_end():
        p.sp()
        keys.append(_key(p, charset))
    return ("AND", keys)


def _text(p: Parser, charset: str) -> str:
    raw = p.astring()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("search text is not valid UTF-8") from None


def _key(p: Parser, charset: str, depth: int = 0) -> tuple:
    if depth > 100:
        raise ParseError("search keys nested too deeply")
    c = p.peek()
    if c == 40:
        p.i += 1
        keys = [_key(p, charset, depth + 1)]
        while not p.maybe(b")"):
            p.sp()
            keys.append(_key(p, charset, depth + 1))
        return ("AND", keys)
    if c is not None and (48 <= c <= 57 or c == 42):
        return ("SEQ", p.sequence_set())
    if c == 36:         # `$`: the saved search result (RFC 5182), resolved by the session
        p.i += 1
        return ("SAVED",)
    word = p._run(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.").decode().upper()
    if not word:
        raise p.error("a search key")
    if word == "ALL":
        return ("ALL",)
    if word in FLAG_KEYS:
        flag, on = FLAG_KEYS[word]
        return ("FLAG", flag, on)
    if word in ("NEW", "OLD", "RECENT"):
        return (word,)
    if word in ("KEYWORD", "UNKEYWORD"):
        p.sp()
        return ("FLAG", p.flag(), word == "KEYWORD")
    if word in HEADER_KEYS:
        p.sp()
        return ("HEADER", word.lower(), _text(p, charset))
    if word == "HEADER":
        p.sp()
        name = p.astring().decode("ascii", "replace").lower()
        p.sp()
        return ("HEADER", name, _text(p, charset))
    if word in ("BODY", "TEXT"):
        p.sp()
        return (word, _text(p, charset))
    if word in DATE_KEYS:
        p.sp()
        y, m, d = p.date()
        return ("DATE", word, (y, m, d))
    if word in ("LARGER", "SMALLER"):
        p.sp()
        return (word, p.number())
    if word == "NOT":
        p.sp()
        return ("NOT", _key(p, charset, depth + 1))
    if word == "OR":
        p.sp()
        a = _key(p, charset, depth + 1)
        p.sp()
        return ("OR", a, _key(p, charset, depth + 1))
    if word == "UID":
        p.sp()
        if p.maybe(b"$"):
            return ("SAVED",)
        return ("UID", p.sequence_set())
    if word in ("EMAILID", "THREADID"):    # RFC 8474 4.4
        p.sp()
        return (word, p.astring().decode("ascii", "replace"))
    if word == "MODSEQ":     # RFC 7162: MODSEQ ["/flags/\\seen" priv|shared|all] n
        from fetchdeliver.imapserver.condstore import modseq_number

        p.sp()
        if p.peek() == 34:
            p.quoted()
            p.sp()
            kind = p.atom().lower()
            if kind not in ("priv", "shared", "all"):
                raise ParseError(f"unknown MODSEQ entry type {kind!r} (priv, shared or all)")
            p.sp()
        return ("MODSEQ", modseq_number(p, nonzero=False))
    raise ParseError(f"unknown search key {word!r}")


# -- matching ---------------------------------------------------------------------------

class Candidate:
    """What the matcher may ask about one message; the text is loaded only when a key needs it."""

    __slots__ = ("seq", "uid", "flags", "recent", "size_fn", "internaldate", "raw_fn", "_parsed", "_body",
                 "_headers", "memo", "modseq")

    def __init__(self, seq, uid, flags, recent, size_fn, internaldate, raw_fn, memo: dict | None = None,
                 modseq: int = 0) -> None:
        self.modseq = modseq
        self.seq = seq
        self.uid = uid
        self.flags = flags
        self.recent = recent
        self.size_fn = size_fn
        self.internaldate = internaldate
        self.raw_fn = raw_fn
        self._parsed = None
        self._body = None
        self.memo = memo        # the server's cache entry of this message (content-derived only)
        self._headers = memo.get("headers") if memo is not None else None

    def email(self):
        if self._parsed is None:
            from email import message_from_bytes, policy

            self._parsed = message_from_bytes(self.raw_fn(), policy=policy.compat32)
        return self._parsed

    def header_values(self, name: str) -> list[str]:
        """The field's values, unfolded and RFC 2047-decoded."""
        from fetchdeliver.message import decode_rfc2047

        return [decode_rfc2047(v.decode("utf-8", "replace")) for v in self.raw_header_values(name)]

    def raw_header_values(self, name: str) -> list[bytes]:
        """The field's values as in the message, unfolded."""
        if self._headers is None and self.memo is not None:
            # A store's index answers one field for the whole mailbox (storage/index.py Memo).
            field = getattr(self.memo, "header_field", None)
            values = field(name) if field is not None else None
            if values is not None:
                return list(values)
        if self._headers is None:
            from fetchdeliver.imapserver.mime import split_fields, unfold

            raw = self.raw_fn()
            end = raw.find(b"\n\n")
            end2 = raw.find(b"\r\n\r\n")
            cut = min(x for x in (end, end2, len(raw)) if x >= 0)
            hdr = raw[:cut].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
            self._headers = {}
            for n, field in split_fields(hdr):
                v = unfold(field.split(b":", 1)[1]) if b":" in field else b""
                self._headers.setdefault(n, []).append(v)
            if self.memo is not None:
                self.memo["headers"] = self._headers
        return list(self._headers.get(name, []))

    def header_blocks(self) -> list[str]:
        """The raw header text of the message and of each of its parts."""
        raw = self.raw_fn()
        end = raw.find(b"\n\n")
        blocks = [raw[:end if end >= 0 else len(raw)].decode("utf-8", "replace")]
        try:
            for part in list(self.email().walk())[1:]:
                blocks.append("".join(f"{k}: {v}\n" for k, v in part.items()))
        except Exception:  # a message the parser chokes on: its top header is all there is
            pass
        return blocks

    def body_text(self) -> str:
        if self._body is None:
            simple = _single_text_body(self.raw_fn())
            if simple is not None:
                self._body = simple.casefold()
                return self._body
            parts = []
            try:
                for part in self.email().walk():
                    if part.is_multipart():
                        continue
                    payload = part.get_payload(decode=True) or b""
                    if part.get_content_maintype() in ("text", "message") or not part.get_content_type():
                        cs = part.get_content_charset() or "utf-8"
                        try:
                            parts.append(payload.decode(cs, "replace"))
                        except LookupError:
                            parts.append(payload.decode("utf-8", "replace"))
            except Exception:  # a message the parser chokes on: search its raw body instead
                raw = self.raw_fn()
                body_at = raw.find(b"\n\n")
                parts = [raw[body_at + 2:].decode("utf-8", "replace") if body_at >= 0 else ""]
            self._body = "\n".join(parts).casefold()
        return self._body


_PLAIN_ENCODINGS = (b"7bit", b"8bit", b"binary")


def _field(head: bytes, name: bytes) -> bytes | None:
    """The unfolded value of the first `name:` field of a lower-cased header block, or None."""
    at = head.find(b"\n" + name + b":")
    if at < 0:
        if not head.startswith(name + b":"):
            return None
        at = -1
    start = at + 1 + len(name) + 1
    end = head.find(b"\n", start)
    while end >= 0 and head[end + 1:end + 2] in (b" ", b"\t"):
        end = head.find(b"\n", end + 1)
    return head[start:end if end >= 0 else len(head)].replace(b"\r", b"").replace(b"\n", b"").strip()


def _single_text_body(raw: bytes) -> str | None:
    """The body of a message that is one text part without transfer encoding (most mail), decoded
    by its charset; None for anything else (multipart, base64, quoted-printable, ...): the email
    package then takes it apart. Saves the full MIME parse on the common case."""
    sep = raw.find(b"\n\n")
    sep2 = raw.find(b"\r\n\r\n")
    if sep < 0 and sep2 < 0:
        return None
    if sep2 >= 0 and (sep < 0 or sep2 < sep):
        head, body = raw[:sep2 + 2], raw[sep2 + 4:]
    else:
        head, body = raw[:sep + 1], raw[sep + 2:]
    head = head.lower()
    cte = _field(head, b"content-transfer-encoding")
    if cte is not None and cte not in _PLAIN_ENCODINGS:
        return None
    charset = "utf-8"
    ctype = _field(head, b"content-type")
    if ctype is not None:
        if not ctype.startswith(b"text/"):
            return None
        for param in ctype.split(b";")[1:]:
            k, _, v = param.strip().partition(b"=")
            if k.strip() == b"charset":
                charset = v.strip().strip(b'"').decode("ascii", "replace") or "utf-8"
    try:
        return body.decode(charset, "replace")
    except LookupError:
        return body.decode("utf-8", "replace")


def prefilter(tree: tuple, mailbox) -> list[tuple[set, set]]:
    """For each HEADER key of the top-level AND whose field the store keeps for the whole mailbox
    (`Mailbox.cached_fields`): (UIDs that match, UIDs whose fields are known). A message known
    not to match is skipped without reading or building anything; one whose fields are not kept
    is tested as usual."""
    if tree[0] != "AND":
        return []
    fields = getattr(mailbox, "cached_fields", None)
    if fields is None:
        return []
    fields_like = getattr(mailbox, "cached_fields_like", None)
    from fetchdeliver.message import decode_rfc2047

    out = []
    for node in tree[1]:
        if node[0] != "HEADER":
            continue
        address = node[1] in ADDRESS_FIELDS
        # The store may narrow a plain substring search; an address field matches its parsed
        # addresses (comments, routes, groups dropped), which the raw value need not contain.
        got = fields(node[1]) if fields_like is None or address else fields_like(node[1], node[2])
        if got is None:
            continue
        known, values = got
        needle = node[2].casefold()
        ok = set()
        for uid, vals in values.items():
            if not needle or (address_match(needle, vals) if address else
                              any(needle in decode_rfc2047(v.decode("utf-8", "replace")).casefold()
                                  for v in vals)):
                ok.add(uid)
        out.append((ok, known))
    return out


def _in_set(n: int, ranges, star: int) -> bool:
    for a, b in ranges:
        a = star if a is None else a
        b = star if b is None else b
        if a > b:
            a, b = b, a
        if a <= n <= b:
            return True
    return False


def _sent_date(c: Candidate) -> tuple[int, int, int] | None:
    from email.utils import parsedate_tz

    vals = c.header_values("date")
    if not vals:
        return None
    t = parsedate_tz(vals[0])
    if t is None:
        return None
    return t[0], t[1], t[2]


def _internal_date(c: Candidate) -> tuple[int, int, int]:
    tm = time.localtime(c.internaldate)
    return tm.tm_year, tm.tm_mon, tm.tm_mday


def matches(node: tuple, c: Candidate, max_seq: int, max_uid: int) -> bool:
    kind = node[0]
    if kind == "AND":
        return all(matches(k, c, max_seq, max_uid) for k in node[1])
    if kind == "ALL":
        return True
    if kind == "FLAG":
        flag = node[1]
        has = flag in c.flags if flag.startswith("\\") else flag.lower() in {f.lower() for f in c.flags}
        return has == node[2]
    if kind == "NEW":
        return c.recent and "\\Seen" not in c.flags
    if kind == "OLD":
        return not c.recent
    if kind == "RECENT":
        return c.recent
    if kind == "SEQ":
        return _in_set(c.seq, node[1], max_seq)
    if kind == "UID":
        return _in_set(c.uid, node[1], max_uid)
    if kind == "MODSEQ":
        return c.modseq >= node[1]
    if kind in ("EMAILID", "THREADID"):
        return _object_id(c, kind) == node[1]
    if kind == "NOT":
        return not matches(node[1], c, max_seq, max_uid)
    if kind == "OR":
        return matches(node[1], c, max_seq, max_uid) or matches(node[2], c, max_seq, max_uid)
    if kind == "LARGER":
        return c.size_fn() > node[1]
    if kind == "SMALLER":
        return c.size_fn() < node[1]
    if kind == "HEADER":
        needle = node[2].casefold()
        if node[1] in ADDRESS_FIELDS:
            raw = c.raw_header_values(node[1])
            return bool(raw) if not needle else address_match(needle, raw)
        vals = c.header_values(node[1])
        if not needle:
            return bool(vals)
        return any(needle in v.casefold() for v in vals)
    if kind == "BODY":
        return node[1].casefold() in c.body_text()
    if kind == "TEXT":
        needle = node[1].casefold()
        if needle in c.body_text():
            return True
        from fetchdeliver.message import decode_rfc2047

        # TEXT covers every header: the message's, its MIME parts' and encapsulated messages'.
        return any(needle in head.casefold() or needle in decode_rfc2047(head).casefold()
                   for head in c.header_blocks())
    if kind == "DATE":
        which, want = node[1], node[2]
        got = _sent_date(c) if which.startswith("SENT") else _internal_date(c)
        if got is None:
            return False
        base = which[4:] if which.startswith("SENT") else which
        g, w = calendar.timegm(got + (0, 0, 0)), calendar.timegm(want + (0, 0, 0))
        return g < w if base == "BEFORE" else g == w if base == "ON" else g >= w
    raise ValueError(f"unknown search node {kind}")


def _object_id(c: Candidate, kind: str) -> str:
    """The message's EMAILID or THREADID (RFC 8474), from the cache when it is there."""
    memo = c.memo
    cached = memo.get(kind) if memo is not None else None
    if cached is None:
        from fetchdeliver.imapserver import fetch, objectid

        raw = fetch.Parsed(c.raw_fn()).raw
        value = objectid.email_id(raw) if kind == "EMAILID" else objectid.thread_id(raw)
        if memo is not None:
            memo[kind] = b"(" + value.encode() + b")"
        return value
    return bytes(cached).decode("ascii").strip("()")


class Hit:
    """A matching message of a search answered from flags alone: its sequence number (what the
    commands take of a Candidate; `memo` None says no content was looked at)."""

    __slots__ = ("seq",)
    memo = None

    def __init__(self, seq: int) -> None:
        self.seq = seq


def EVERY(seq, m, flags, recent) -> bool:
    """flag_predicate's answer for a search every message matches."""
    return True


def flags_alone(node: tuple) -> bool:
    """Whether `node` asks for nothing but flags (system flags and keywords)."""
    kind = node[0]
    if kind == "AND":
        return all(flags_alone(k) for k in node[1])
    if kind == "NOT":
        return flags_alone(node[1])
    if kind == "OR":
        return flags_alone(node[1]) and flags_alone(node[2])
    return kind in ("FLAG", "ALL")


def flag_predicate(node: tuple, max_seq: int, max_uid: int):
    """`node` as a function (seq, MessageInfo, flags, recent) -> bool when it asks only for what a
    view holds in memory (flags, \\Recent, sequence numbers, UIDs, MODSEQ), with exactly `matches`'s
    answers; EVERY when every message matches; None when a key needs more (the caller then
    builds a Candidate per message)."""
    kind = node[0]
    if kind == "ALL":
        return EVERY
    if kind == "AND":
        parts = [flag_predicate(k, max_seq, max_uid) for k in node[1]]
        if any(p is None for p in parts):
            return None
        parts = [p for p in parts if p is not EVERY]
        if not parts:
            return EVERY
        if len(parts) == 1:
            return parts[0]
        return lambda seq, m, flags, recent: all(p(seq, m, flags, recent) for p in parts)
    if kind == "FLAG":
        flag, on = node[1], node[2]
        if flag.startswith("\\"):
            return (lambda seq, m, flags, recent: flag in flags) if on else \
                (lambda seq, m, flags, recent: flag not in flags)
        low = flag.lower()
        return lambda seq, m, flags, recent: (low in {f.lower() for f in flags}) == on
    if kind == "NEW":
        return lambda seq, m, flags, recent: recent and "\\Seen" not in flags
    if kind == "OLD":
        return lambda seq, m, flags, recent: not recent
    if kind == "RECENT":
        return lambda seq, m, flags, recent: recent
    if kind == "SEQ":
        ranges = node[1]
        return lambda seq, m, flags, recent: _in_set(seq, ranges, max_seq)
    if kind == "UID":
        ranges = node[1]
        return lambda seq, m, flags, recent: _in_set(m.uid, ranges, max_uid)
    if kind == "MODSEQ":
        least = node[1]
        return lambda seq, m, flags, recent: m.modseq >= least
    if kind == "NOT":
        p = flag_predicate(node[1], max_seq, max_uid)
        if p is None:
            return None
        return lambda seq, m, flags, recent: not p(seq, m, flags, recent)
    if kind == "OR":
        a = flag_predicate(node[1], max_seq, max_uid)
        b = flag_predicate(node[2], max_seq, max_uid)
        if a is None or b is None:
            return None
        if a is EVERY or b is EVERY:
            return EVERY
        return lambda seq, m, flags, recent: a(seq, m, flags, recent) or b(seq, m, flags, recent)
    return None


def address_text(raw: bytes) -> str:
    """An address field as it is searched (as Dovecot does): each address parsed and written out again,
    `Name <user@host>` or `user@host` (a source route kept: `<@r1,@r2:user@host>`), groups as
    `group: a@b, c@d;`; comments and the original's spacing are gone, RFC 2047 names decoded."""
    from fetchdeliver.imapserver.mime import parse_addresses
    from fetchdeliver.message import decode_rfc2047

    out: list[str] = []
    group = first_in_group = False
    for name, adl, mailbox, host in parse_addresses(raw):
        if mailbox is None:                 # end of a group
            out.append(";")
            group = False
            continue
        if host is None:                    # start of a group
            out.append((", " if out else "") + mailbox.decode("utf-8", "replace") + ":")
            group = True
            first_in_group = True
            continue
        addr = mailbox.decode("utf-8", "replace")
        if host != b"MISSING_DOMAIN":
            addr += "@" + host.decode("utf-8", "replace")
        if adl:                             # a source route stays, as Dovecot writes it
            addr = adl.decode("utf-8", "replace") + ":" + addr
        if name:
            text = f"{decode_rfc2047(name.decode('utf-8', 'replace'))} <{addr}>"
        else:
            text = f"<{addr}>" if adl else addr
        if group and first_in_group:
            out.append(" " + text)
            first_in_group = False
        else:
            out.append((", " if out else "") + text)
    return "".join(out)


def address_match(needle: str, raw_values: list[bytes]) -> bool:
    """SEARCH FROM/TO/CC/BCC (and HEADER with those names): `needle` (casefolded) in the parsed addresses."""
    return any(needle in address_text(v).casefold() for v in raw_values)


def needs_text(node: tuple) -> bool:
    kind = node[0]
    if kind == "AND":
        return any(needs_text(k) for k in node[1])
    if kind == "NOT":
        return needs_text(node[1])
    if kind == "OR":
        return needs_text(node[1]) or needs_text(node[2])
    return kind in ("HEADER", "BODY", "TEXT", "DATE", "EMAILID", "THREADID") and (kind != "DATE" or node[1].startswith("SENT"))


def uses_modseq(node: tuple) -> bool:
    """Whether a MODSEQ key occurs (the answer then carries the highest MODSEQ, RFC 7162 3.1.5)."""
    kind = node[0]
    if kind == "AND":
        return any(uses_modseq(k) for k in node[1])
    if kind == "NOT":
        return uses_modseq(node[1])
    if kind == "OR":
        return uses_modseq(node[1]) or uses_modseq(node[2])
    return kind == "MODSEQ"
