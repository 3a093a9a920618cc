"""Procmail's regular expressions (egrep dialect plus ^TO_, \\<, \\/, ^^) as Sieve :regex tests.

A header condition `^Name:rest` becomes `header :regex "name" "^rest"`: Sieve hands
the test the unfolded value without the leading whitespace, so the translated
pattern starts at the value. Body and variable conditions keep procmail's
multi-line meaning of ^ and $ ("a newline") by spelling them `(^|${hex:0A})` and
`(${hex:0D}?${hex:0A}|$)`: the newline is written with the encoded-character extension
(RFC 5228 2.4.2.4), because POSIX regular expressions have no escape for it (glibc and
the RE2 translation read `\\n` as the letter n).
"""

from __future__ import annotations

from fetchdeliver.errors import FetchdeliverError

# Placeholders for variables whose value is known only when the script runs:
# expansion puts chr(VAR_BASE + i) in the text, rendering turns it into ${name}.
VAR_BASE = 0xE000

LF, CR = "${hex:0A}", "${hex:0D}"  # a newline and a carriage return in a Sieve string (encoded-character)

MACROS = {"\x01": "TO_", "\x02": "TO", "\x03": "FROM_DAEMON", "\x04": "FROM_MAILER"}


class Untranslatable(FetchdeliverError):
    """This construct has no Sieve equivalent; the message says why."""


def _names(*groups: list[str]) -> list[str]:
    out = [""]
    for g in groups:
        out = [a + b for a in out for b in g]
    return out


TO_NAMES = _names(["", "Original-"], ["", "Resent-"], ["To", "Cc", "Bcc"]) + \
    ["X-Envelope-To", "Apparently-To", "Apparently-Resent-To"]
# What ^TO_ / ^TO allow between the colon and the address or word.
TO_PREFIX = {"TO_": "(.*[^-a-zA-Z0-9_.])?", "TO": "(.*[^a-zA-Z])?"}

_DAEMON_WORDS = {
    "FROM_DAEMON": "(Post(ma?(st(e?r)?|n)|office)|(send)?Mail(er)?|daemon|m(mdf|ajordomo)|n?uucp|"
                   "LIST(SERV|proc)|NETSERV|o(wner|ps)|r(e(quest|sponse)|oot)|b(ounce|bs\\.smtp)|echo|"
                   "mirror|s(erv(ices?|er)|mtp(error)?|ystem)|A(dmin(istrator)?|MMGR|utoanswer))",
    "FROM_MAILER": "(Post(ma(st(er)?|n)|office)|(send)?Mail(er)?|daemon|mmdf|n?uucp|ops|"
                   "r(esponse|oot)|(bbs\\.)?smtp(error)?|s(erv(ices?|er)|ystem)|A(dmin(istrator)?|MMGR))",
}
_SENDER_NAMES = ["From", "Sender", "Resent-From", "Resent-Sender", "X-Envelope-From"]


def sieve_str(s: str) -> str:
    """A Sieve quoted string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_breaks(pattern: str) -> tuple[str, bool]:
    """LF and CR in a pattern as encoded-character's ${hex:0A} / ${hex:0D}; True when any was."""
    if "\n" not in pattern and "\r" not in pattern:
        return pattern, False
    return pattern.replace("\r", "${hex:0D}").replace("\n", "${hex:0A}"), True


def sieve_list(items: list[str]) -> str:
    return sieve_str(items[0]) if len(items) == 1 else "[" + ", ".join(sieve_str(i) for i in items) + "]"


def daemon_tests(kind: str, comparator: str) -> list[str]:
    """The Sieve tests equivalent to ^FROM_DAEMON / ^FROM_MAILER (any of them)."""
    value = ("^([^>]*[^(.%@a-z0-9])?" + _DAEMON_WORDS[kind] +
             "(([^).!:a-z0-9][-_a-z0-9]*)?[%@>\t ][^<)]*(\\(.*\\).*)?)?$")
    envelope = ("^([^>]*[^(.%@a-z0-9])?" + _DAEMON_WORDS[kind] +
                "(([^).!:a-z0-9][-_a-z0-9]*)?([%@>\t ].*)?)?$")
    tests = [f"header :regex{comparator} {sieve_list(_SENDER_NAMES)} {sieve_str(value)}",
             f"envelope :all :regex{comparator} \"from\" {sieve_str(envelope)}"]
    if kind == "FROM_DAEMON":
        tests = ['exists "Mailing-List"',
                 f"header :regex{comparator} \"Precedence\" \"(junk|bulk|list)\"",
                 f"header :regex{comparator} \"To\" \"^Multiple recipients of \""] + tests
    return tests


# -- tokens ---------------------------------------------------------------------------

def tokenize(rx: str) -> list[tuple]:
    """Procmail regex text -> tokens ('lit', c) ('any',) ('class', neg, items) ('open',) ('close',)
    ('alt',) ('star',) ('plus',) ('q',) ('bol',) ('eol',) ('anchor',) ('wb', '<'|'>') ('split',)
    ('var', i) ('macro', name)."""
    # ^TO_ before ^TO: the longer macro wins, as in procmail.
    for name, marker in (("^TO_", "\x01"), ("^FROM_DAEMON", "\x03"), ("^FROM_MAILER", "\x04"), ("^TO", "\x02")):
        rx = rx.replace(name, marker)
    out: list[tuple] = []
    i, n = 0, len(rx)
    simple = {".": ("any",), "(": ("open",), ")": ("close",), "|": ("alt",), "*": ("star",),
              "+": ("plus",), "?": ("q",), "$": ("eol",)}
    while i < n:
        c = rx[i]
        if c in MACROS:
            out.append(("macro", MACROS[c]))
        elif ord(c) >= VAR_BASE and ord(c) < VAR_BASE + 4096:
            out.append(("var", ord(c) - VAR_BASE))
        elif c == "^":
            if rx.startswith("^^", i):
                out.append(("anchor",))
                i += 1
            else:
                out.append(("bol",))
        elif c in simple:
            out.append(simple[c])
        elif c == "\\":
            i += 1
            if i >= n:
                out.append(("lit", "\\"))
                break
            d = rx[i]
            if d in "<>":
                out.append(("wb", d))
            elif d == "/":
                out.append(("split",))
            else:
                out.append(("lit", d))
        elif c == "[":
            i, tok = _class(rx, i)
            out.append(tok)
        else:
            out.append(("lit", c))
        i += 1
    return out


def _class(rx: str, i: int) -> tuple[int, tuple]:
    j = i + 1
    neg = j < len(rx) and rx[j] == "^"
    if neg:
        j += 1
    items: list[str] = []
    first = True
    while j < len(rx):
        c = rx[j]
        if c == "]" and not first:
            return j, ("class", neg, items)
        if c == "\\" and j + 1 < len(rx):
            j += 1
            c = rx[j]
            items.append("\\" + c if c in "\\]-^[" else c)
        elif c == "[" and rx.startswith("[:", j):
            raise Untranslatable("POSIX character classes like [:alpha:] are not procmail syntax")
        else:
            items.append("\\" + c if c in "\\[]" else c)
        first = False
        j += 1
    raise Untranslatable(f"unterminated [ in regular expression {rx!r}")


_SPECIAL = set(".^*+?{}[]\\|()")


class Rendered:
    """A Python/POSIX pattern with the number of its capture groups and where MATCH is."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.groups = 0
        self.match_group: int | None = None
        self.match_blank = False
        self.approx = False

    def add(self, s: str, groups: int = 0) -> None:
        self.parts.append(s)
        self.groups += groups

    @property
    def text(self) -> str:
        return "".join(self.parts)


def render(tokens: list[tuple], mode: str, var_names: list[str], out: Rendered | None = None) -> Rendered:
    """Tokens -> pattern. mode "value": one header value; "text": a multi-line body or variable.

    Left of a `\\/` procmail matches as little as it can and right of it as much as it can
    (`^Subject:.*\\/[a-z]+` gives the first word). POSIX matching is leftmost-longest, so
    see split_for_match: the caller hands over a left side without quantifiers.
    """
    r = out or Rendered()
    depth = 0
    split_open = False
    split_at = next((k for k, t in enumerate(tokens) if t[0] == "split"), -1)
    last = len(tokens) - 1
    for k, tok in enumerate(tokens):
        kind = tok[0]
        if kind == "lit":
            c = tok[1]
            r.add("[$]" if c == "$" else ("\\" + c if c in _SPECIAL else c))
        elif kind == "any":
            r.add("." if mode == "value" else "[^" + LF + "]")
        elif kind == "class":
            neg, items = tok[1], tok[2]
            extra = LF if neg and mode == "text" else ""
            r.add("[" + ("^" if neg else "") + "".join(items) + extra + "]")
        elif kind == "open":
            depth += 1
            r.add("(", 1)
        elif kind == "close":
            depth -= 1
            r.add(")")
        elif kind in ("star", "plus", "q") and (
                k == 0 or tokens[k - 1][0] in ("open", "alt", "bol", "anchor", "star", "plus", "q", "split")):
            # Nothing to repeat: procmail reads the character literally (`a**` is `a*\*`).
            r.add("\\" + {"star": "*", "plus": "+", "q": "?"}[kind])
        elif kind in ("alt", "star", "plus", "q"):
            q = {"alt": "|", "star": "*", "plus": "+", "q": "?"}[kind]
            r.add(q)
        elif kind == "bol":
            if mode == "value":
                raise Untranslatable("a ^ inside a header pattern spans several header lines")
            if k > 0 and tokens[k - 1][0] == "eol":
                continue  # `$^` is one newline, already written
            r.add("(^|" + LF + ")", 1)
        elif kind == "eol":
            if mode == "value":
                r.add("$")
            elif k < last and tokens[k + 1][0] == "bol":
                r.add(CR + "?" + LF)
            else:
                r.add("(" + CR + "?" + LF + "|$)", 1)
        elif kind == "anchor":
            r.add("^" if k == 0 else "$")
        elif kind == "wb":
            # "merely a shorthand for [^a-zA-Z0-9_], but can also match newlines": in a header
            # value that is the blank before it or the newline after it; in a body or a
            # variable it needs a real character (`\\>` at the very end of a variable fails).
            if mode == "text":
                r.add("[^a-zA-Z0-9_]")
            else:
                r.add("(^|[^a-zA-Z0-9_])" if tok[1] == "<" else "([^a-zA-Z0-9_]|$)", 1)
        elif kind == "split":
            if depth or split_open:
                raise Untranslatable("\\/ inside a group")
            r.add("(", 1)
            r.match_group = r.groups
            split_open = True
        elif kind == "var":
            r.add("${" + var_names[tok[1]] + "}")
        elif kind == "macro":
            raise Untranslatable(f"^{tok[1]} is only translated at the start of a condition")
    if split_open:
        r.add(")")
        # Can MATCH hold a blank? (procmail splits an unquoted $MATCH in a folder name there)
        r.match_blank = any(
            t[0] in ("any", "var") or (t[0] == "lit" and t[1] in " \t") or
            (t[0] == "class" and (any(i in (" ", "\t", "\\t") for i in t[2]) != t[1]))
            for t in tokens[split_at + 1:])
    if r.match_group is not None and r.match_group > 9:
        raise Untranslatable("\\/ would be capture group %d; Sieve has only ${1}..${9}" % r.match_group)
    return r


def _closing(tokens: list[tuple], k: int) -> int:
    """The index of the `)` that closes the `(` at k (-1 if none)."""
    depth = 0
    for j in range(k, len(tokens)):
        if tokens[j][0] == "open":
            depth += 1
        elif tokens[j][0] == "close":
            depth -= 1
            if depth == 0:
                return j
    return -1


def split_alternatives(tokens: list[tuple]) -> list[list[tuple]]:
    alts: list[list[tuple]] = [[]]
    depth = 0
    for tok in tokens:
        if tok[0] == "open":
            depth += 1
        elif tok[0] == "close":
            depth -= 1
        if tok[0] == "alt" and depth == 0:
            alts.append([])
        else:
            alts[-1].append(tok)
    return alts


def _enumerate_names(tokens: list[tuple]) -> list[str]:
    """The finite set of header names a name pattern like (Resent-)?(From|Sender) matches."""
    pos = 0

    def seq() -> list[str]:
        nonlocal pos
        result = [""]
        while pos < len(tokens) and tokens[pos][0] not in ("alt", "close"):
            tok = tokens[pos]
            if tok[0] == "lit" and (tok[1].isalnum() or tok[1] in "-_."):
                atom = [tok[1]]
                pos += 1
            elif tok[0] == "open":
                pos += 1
                atom = seq()
                while pos < len(tokens) and tokens[pos][0] == "alt":
                    pos += 1
                    atom += seq()
                if pos >= len(tokens) or tokens[pos][0] != "close":
                    raise Untranslatable("unbalanced ( in a header name")
                pos += 1
            else:
                raise Untranslatable("the header name is not a fixed set of names")
            if pos < len(tokens) and tokens[pos][0] == "q":
                atom = [""] + atom
                pos += 1
            result = [a + b for a in result for b in atom]
            if len(result) > 64:
                raise Untranslatable("the header name pattern allows too many names")
        return result

    names = seq()
    if pos != len(tokens) or not all(names):
        raise Untranslatable("the header name is not a fixed set of names")
    return names


def _is_space(tok: tuple) -> bool:
    return (tok[0] == "lit" and tok[1] in " \t") or (
        tok[0] == "class" and not tok[1] and bool(tok[2]) and all(i in (" ", "\t", "\\t") for i in tok[2]))


def _starts_non_blank(tokens: list[tuple]) -> bool:
    """The pattern's first character cannot be a blank (`[^ ]`, `[a-z]`, a letter)."""
    if not tokens or (len(tokens) > 1 and tokens[1][0] in ("star", "q")):
        return False
    t = tokens[0]
    if t[0] == "lit":
        return t[1] not in " \t"
    if t[0] == "class":
        blank = any(i in (" ", "\t", "\\t") for i in t[2])
        return blank if t[1] else not blank
    return False


def _strip_leading_space(tokens: list[tuple]) -> list[tuple]:
    """Sieve drops the whitespace after the colon; so does the translated pattern.

    `^Subject: *x`, `^Subject:[ \t]+x` and `^Subject: x` all start at the value's first
    non-blank character (a header with no blank after the colon also matches; procmail's
    `^Subject: x` would not see it, a difference only a hand-made header shows).
    """
    k = 0
    while k < len(tokens):
        if _is_space(tokens[k]):
            k += 1
            if k < len(tokens) and tokens[k][0] in ("star", "plus", "q"):
                k += 1
        else:
            break
    return tokens[k:]


class Test:
    """One translated condition: Sieve test text, plus which ${N} holds procmail's MATCH."""

    def __init__(self, text: str, match_group: int | None = None) -> None:
        self.text = text
        self.match_group = match_group
        self.lost_space = False  # MATCH starts at the value: procmail's had the blanks after the colon
        self.match_blank = False  # MATCH may hold a blank
        self.approx = False       # MATCH may differ: see split_for_match


_QUANT = ("star", "plus", "q", "alt")


def split_for_match(tokens: list[tuple], mode: str) -> tuple[list[tuple], bool, bool]:
    """Procmail matches the left of `\\/` as short as possible, POSIX regular expressions (and
    RE2 in leftmost-longest mode) as long as possible. Exact where the left side has no
    repetition (`^Subject: *\\/...` after the blanks are gone, `^List-Id: <\\/...`), or is `.*`
    followed by such a fixed part (`^From:.*@\\/...`): then MATCH is the leftmost match of the
    fixed part and the right side, an unanchored search. Returns (tokens, anchored, approximate).
    """
    k = next((j for j, t in enumerate(tokens) if t[0] == "split"), -1)
    if k < 0:
        return tokens, True, False
    left = tokens[:k]
    if not any(t[0] in _QUANT for t in left):
        return tokens, True, False
    start = 1 if mode == "text" and left[:1] == [("bol",)] else 0
    if left[start:start + 2] == [("any",), ("star",)] and not any(t[0] in _QUANT for t in left[start + 2:]):
        return left[start + 2:] + tokens[k:], False, False
    return tokens, True, True


def header_tests(rx: str, comparator: str, var_names: list[str]) -> list[Test]:
    """A header condition -> tests of which any must hold."""
    tests: list[Test] = []
    tokens = tokenize(rx)
    # `(^TO_alice|^From:.*bob)`: a group around the whole condition only groups its alternatives.
    while len(tokens) > 2 and tokens[0][0] == "open" and _closing(tokens, 0) == len(tokens) - 1 and \
            not any(t[0] == "split" for t in tokens):
        tokens = tokens[1:-1]
    for alt in split_alternatives(tokens):
        lost_space = approx = False
        if len(alt) == 1 and alt[0][0] == "macro" and alt[0][1] in _DAEMON_WORDS:
            tests += [Test(t) for t in daemon_tests(alt[0][1], comparator)]
            continue
        r = Rendered()
        if alt and alt[0][0] == "macro" and alt[0][1] in TO_PREFIX:
            names = TO_NAMES
            rest = alt[1:]
            r.add("^")
            r.add(TO_PREFIX[alt[0][1]], 1)
            if any(t[0] == "split" for t in rest):
                approx = True
        else:
            if not alt or alt[0][0] != "bol":
                raise Untranslatable("a header condition must start with ^Name: (Sieve tests one header "
                                     "at a time, it cannot search the whole header)")
            colon = next((k for k, t in enumerate(alt) if t == ("lit", ":")), None)
            if colon is None:
                raise Untranslatable("a header condition must start with ^Name: (no colon found)")
            names = _enumerate_names(alt[1:colon])
            rest = _strip_leading_space(alt[colon + 1:])
            if rest and rest[0][0] == "split" and not _starts_non_blank(rest[1:]):
                # `^Subject: *\/.*`: procmail's MATCH keeps the blanks after the colon,
                # Sieve's value has none; one space is what nearly every header has.
                rest = [rest[0]] + _strip_leading_space(rest[1:])
                lost_space = True
            if not rest:
                tests.append(Test(f"exists {sieve_list(names)}"))
                continue
            if rest[0][0] in ("star", "plus", "q") and len(_strip_leading_space(alt[colon + 1:])) == len(
                    alt) - colon - 1:
                raise Untranslatable("a repeated colon (`^Name:*`): Sieve's value starts after the colon")
            rest, anchored, approx = split_for_match(rest, "value")
            if rest[0][0] != "anchor" and anchored:
                r.add("^")
        render(rest, "value", var_names, r)
        t = Test(f"header :regex{comparator} {sieve_list(names)} {sieve_str(r.text)}", r.match_group)
        t.lost_space = lost_space
        t.approx = approx
        t.match_blank = r.match_blank or lost_space
        tests.append(t)
    return tests


def text_pattern(rx: str, var_names: list[str]) -> Rendered:
    """A body or variable condition -> one pattern over the whole multi-line text."""
    tokens = tokenize(rx)
    if any(t[0] == "macro" for t in tokens):
        raise Untranslatable("^TO_, ^TO, ^FROM_DAEMON and ^FROM_MAILER only work on the header")
    tokens, _, approx = split_for_match(tokens, "text")
    r = render(tokens, "text", var_names)
    r.approx = approx
    return r
