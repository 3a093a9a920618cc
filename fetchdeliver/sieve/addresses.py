"""A lenient RFC 5322 address-list parser shaped after Pigeonhole's behaviour.

Measured against sieve-test: invalid members of a list are skipped; a complete
mailbox followed by junk keeps the mailbox; when nothing valid remains (or a
comment is not closed) the whole raw value counts as one address that has no
local part and no domain. Group names are not addresses; routes are dropped.
"""

from __future__ import annotations

_SPECIALS = '()<>[]:;@\\,."'


class Address:
    """One parsed address: local part (unquoted), domain (None when invalid), raw text if invalid."""

    __slots__ = ("local", "domain", "raw")

    def __init__(self, local: str | None, domain: str | None, raw: str | None = None) -> None:
        self.local = local
        self.domain = domain
        self.raw = raw

    def all(self) -> str:
        if self.raw is not None:
            return self.raw
        return quote_local(self.local or "") + "@" + (self.domain or "")

    def __repr__(self) -> str:
        return f"Address({self.all()!r})"


_ATEXT = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")


def quote_local(local: str) -> str:
    """The local part as it appears in an address: a dot-atom, or a quoted string."""
    if local and all(p and all(c in _ATEXT or ord(c) > 127 for c in p) for p in local.split(".")):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Unclosed(Exception):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value) pairs; kind is "atom", "quoted", "literal" or the special character itself."""
    out: list[tuple[str, str]] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c == "(":
            depth = 0
            while i < n:
                ch = text[i]
                if ch == "\\":
                    i += 2
                    continue
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            if i >= n:
                raise _Unclosed()
            i += 1
        elif c == '"':
            j = i + 1
            buf = []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(text[j])
                j += 1
            if j >= n:
                raise _Unclosed()
            out.append(("quoted", "".join(buf).replace("\r\n", "").replace("\n", "")))
            i = j + 1
        elif c == "[":
            j = text.find("]", i)
            if j < 0:
                raise _Unclosed()
            out.append(("literal", text[i:j + 1]))
            i = j + 1
        elif c in _SPECIALS:
            out.append((c, c))
            i += 1
        else:
            j = i
            while j < n and text[j] not in _SPECIALS and text[j] not in " \t\r\n":
                j += 1
            out.append(("atom", text[i:j]))
            i = j
    return out


def _addr_spec(toks: list, i: int, strict: bool = False) -> tuple[Address | None, int]:
    """Parse local@domain at toks[i]; return (address or None, next index). `strict`: the words
    of the local part must be joined by "." (RFC 5322 3.4.1; "more error@x" is no address),
    as an address given to redirect or vacation must be; headers are read leniently."""
    n = len(toks)
    local = []
    prev = None
    while i < n and toks[i][0] in ("atom", "quoted", "."):
        if strict and prev is not None and prev != "." and toks[i][0] != ".":
            return None, i
        prev = toks[i][0]
        local.append(toks[i][1])
        i += 1
    if not local or i >= n or toks[i][0] != "@":
        return None, i
    i += 1
    domain = []
    while i < n and toks[i][0] in ("atom", "literal", "."):
        domain.append(toks[i][1])
        i += 1
    if not domain or domain[0] == "." or domain[-1] == ".":
        return None, i
    return Address("".join(local), "".join(domain)), i


def _mailbox(toks: list, i: int, strict: bool = False) -> tuple[Address | None, int]:
    n = len(toks)
    # name-addr: [display name] "<" [route ":"] addr-spec ">"
    j = i
    while j < n and toks[j][0] in ("atom", "quoted", "."):
        j += 1
    if j < n and toks[j][0] == "<":
        k = j + 1
        # obsolete route: @a,@b:
        if k < n and toks[k][0] == "@":
            while k < n and toks[k][0] != ":" and toks[k][0] != ">":
                k += 1
            if k < n and toks[k][0] == ":":
                k += 1
        addr, k = _addr_spec(toks, k, strict)
        if addr is None or k >= n or toks[k][0] != ">":
            return None, k
        return addr, k + 1
    return _addr_spec(toks, i, strict)


def _skip_to(toks: list, i: int, stops: str) -> int:
    depth = 0
    while i < len(toks):
        kind = toks[i][0]
        if kind == "<":
            depth += 1
        elif kind == ">":
            depth = max(0, depth - 1)
        elif depth == 0 and kind in stops:
            return i
        i += 1
    return i


def parse_address_list(value: str) -> list[Address]:
    """Every address of a header value (see the module docstring for the lenient rules)."""
    try:
        toks = _tokens(value)
    except _Unclosed:
        return [Address(None, None, value)]
    out: list[Address] = []
    i = 0
    n = len(toks)
    in_group = False
    while i < n:
        kind = toks[i][0]
        if kind == ",":
            i += 1
            continue
        if kind == ";" and in_group:
            in_group = False
            i = _skip_to(toks, i + 1, ",")
            continue
        # a group: display-name ":" [mailbox-list] ";"
        j = i
        while j < n and toks[j][0] in ("atom", "quoted", "."):
            j += 1
        if j < n and toks[j][0] == ":" and not in_group:
            in_group = True
            i = j + 1
            continue
        addr, i = _mailbox(toks, i)
        if addr is not None:
            out.append(addr)
        i = _skip_to(toks, i, ",;" if in_group else ",")
    if not out:
        return [Address(None, None, value)]
    return out


def parse_envelope_address(value: str) -> Address | None:
    """An envelope address (MAIL FROM / RCPT TO): "" or "<>" is the null path."""
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    if value.startswith("@") and ":" in value:
        # A source route ("@relay1,@relay2:user@domain", RFC 5321 Appendix C): accepted, ignored.
        value = value.split(":", 1)[1]
    if not value:
        return None
    try:
        toks = _tokens(value)
    except _Unclosed:
        return Address(None, None, value)
    addr, i = _mailbox(toks, 0)
    if addr is None or i != len(toks):
        return Address(None, None, value)
    return addr


def valid_address(value: str) -> str | None:
    """None when `value` is one valid mailbox (as redirect and vacation :from need); else why not."""
    try:
        toks = _tokens(value)
    except _Unclosed:
        return "unclosed quoted string or comment"
    if not toks:
        return "empty address"
    addr, i = _mailbox(toks, 0, strict=True)
    if addr is None:
        if "@" not in value:
            return f"invalid or lonely local part '{value.strip()}' (expecting '@')"
        return "invalid address"
    if i != len(toks):
        return "junk after the address"
    if not f"{addr.local}@{addr.domain}".isascii():
        # RFC 5228 2.4.2.3: an address used outbound must follow [IMAIL] (RFC 2822: ASCII); the
        # relay gets it in RCPT TO, which without SMTPUTF8 cannot carry more.
        return "an outbound address must be ASCII (RFC 5228 section 2.4.2.3)"
    return None
