"""draft-ietf-sieve-regex: the :regex match type (POSIX extended regular expressions).

Matching uses RE2 (the `google-re2` package), whose running time is linear in
the length of the value: a pattern such as "^(a+)+$" cannot backtrack
catastrophically on hostile mail, as it does with a backtracking engine.
Sieve's regular expressions are POSIX EREs (Pigeonhole hands them to the C
library's regcomp); `translate()` turns one into RE2's syntax. What RE2 cannot
do (back-references, \\< and \\> other than next to a word character, repetition
counts above 1000, multi-character collating elements) is refused with a reason:
a compile error when the pattern is a literal in the script, else a run-time
error (implicit keep).

RE2 is imported only when a script uses :regex (the MDA's start-up stays lean).
"""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("regex")
EXT.group_tag("match", "regex")

_CACHE: dict = {}
_CACHE_MAX = 256   # patterns built from variables must not grow the cache without bound

# The C library's names (glibc: regcomp(3) error strings), where a pattern is wrong as POSIX ERE.
_UNMATCHED_BRACKET = "unmatched [, [^, [:, [., or [="
_CLASSES = frozenset(("alnum", "alpha", "blank", "cntrl", "digit", "graph", "lower", "print",
                      "punct", "space", "upper", "xdigit"))
_META = frozenset(".[]()*+?{}|^$\\")
_RE2_MAX_REPEAT = 1000


class Untranslatable(ValueError):
    """The pattern is not a valid POSIX ERE, or uses what RE2 cannot match (the reason)."""


class Unsupported(Untranslatable):
    """A valid POSIX pattern RE2 cannot run (back-references, ...): the script cannot be decided,
    so a run-time one is a run-time error (implicit keep); an invalid pattern matches nothing."""


def _class_char(c: str) -> str:
    """One character inside an RE2 bracket expression."""
    if c in "\\]^-[":
        return "\\" + c
    return c


def _escape(c: str) -> str:
    """One literal character outside brackets."""
    if c.isascii() and not c.isalnum() and c.isprintable() and c != " ":
        return "\\" + c
    return c


def _bracket_item(p: str, j: int) -> tuple[str | None, str, int]:
    """One bracket item at p[j]: (kind, value, next index); kind "class" or None (a character)."""
    n = len(p)
    if p[j] == "[" and j + 1 < n and p[j + 1] in ":=.":
        kind = p[j + 1]
        end = p.find(kind + "]", j + 2)
        if end < 0:
            raise Untranslatable(_UNMATCHED_BRACKET)
        name = p[j + 2:end]
        if kind == ":":
            if name not in _CLASSES:
                raise Untranslatable(f"invalid character class name '{name}'")
            return "class", name, end + 2
        if len(name) != 1:
            raise Unsupported(f"collating element '[{kind}{name}{kind}]' is not supported "
                                 f"(only single characters)")
        return None, name, end + 2
    return None, p[j], j + 1


def _bracket(p: str, i: int) -> tuple[str, int]:
    """The bracket expression starting at p[i] == "[": (RE2 text, index after it)."""
    n = len(p)
    j = i + 1
    out = ["["]
    if j < n and p[j] == "^":
        out.append("^")
        j += 1
    first = True
    while True:
        if j >= n:
            raise Untranslatable(_UNMATCHED_BRACKET)
        if p[j] == "]" and not first:
            j += 1
            break
        first = False
        kind, lo, j = _bracket_item(p, j)
        if kind == "class":
            out.append(f"[:{lo}:]")
            continue
        if j + 1 < n and p[j] == "-" and p[j + 1] != "]":
            kind, hi, j = _bracket_item(p, j + 1)
            if kind == "class" or ord(hi) < ord(lo):
                raise Untranslatable("invalid range end")
            out.append(f"{_class_char(lo)}-{_class_char(hi)}")
        else:
            out.append(_class_char(lo))
    out.append("]")
    return "".join(out), j


def _interval(p: str, i: int) -> tuple[str, int]:
    """The interval "{m}", "{m,}", "{m,n}" or "{,n}" at p[i]: (RE2 text, next index).

    In an ERE "{" always opens an interval; regcomp refuses one that is not well formed.
    """
    end = p.find("}", i)
    if end < 0:
        raise Untranslatable("unmatched {")
    body = p[i + 1:end]
    lo, sep, hi = body.partition(",")
    if not lo and sep:
        lo = "0"  # the C library reads "{,n}" as "{0,n}" and "{,}" as "{0,}"
    if not (lo.isdigit() and lo.isascii()) or (hi and not (hi.isdigit() and hi.isascii())):
        raise Untranslatable(f"invalid content of {{{body}}}")
    if hi and int(hi) < int(lo):
        raise Untranslatable(f"invalid content of {{{body}}}")
    if int(lo) > _RE2_MAX_REPEAT or (hi and int(hi) > _RE2_MAX_REPEAT):
        raise Unsupported(f"repetition count in '{{{body}}}' is too large (at most {_RE2_MAX_REPEAT})")
    return "{" + lo + sep + hi + "}", end + 1


def _is_word_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


def _word_anchor_is_boundary(p: str, i: int, kind: str) -> bool:
    """Is the "\\<" or "\\>" at p[i] sure to sit next to a word character (so it equals \\b)?"""
    if kind == "<":
        j = i + 2
        if p[j:j + 2] == "\\w":
            j += 1
        elif not (j < len(p) and _is_word_char(p[j])):
            return False
        return p[j + 1:j + 2] not in ("*", "?", "{")   # the character must not be optional
    if i >= 2 and p[i - 2:i] == "\\w":
        return i < 3 or p[i - 3] != "\\"
    return i >= 1 and _is_word_char(p[i - 1]) and (i < 2 or p[i - 2] != "\\")


_NOTHING = "[^\\x00-\\x{10FFFF}]"   # one character that no character is


def translate(pattern: str, ignore_case: bool = False) -> str:
    """A POSIX ERE (with the GNU escapes Pigeonhole's regcomp takes) in RE2's syntax.

    ignore_case (i;ascii-casemap, regcomp's REG_ICASE): glibc then folds the value but not an
    escaped lower-case letter, so "\\d" or "\\n" matches nothing at all; so it does here.
    """
    out: list[str] = []
    i = 0
    n = len(pattern)
    depth = 0
    # What came last: "start" (nothing, "(" or "|"), "assert" (^ $ \\b \\B \\` \\') or "atom".
    # Like regcomp, a repetition needs an atom before it.
    last = "start"
    while i < n:
        c = pattern[i]
        if c in "*+?{":
            if last != "atom":
                raise Untranslatable("invalid preceding regular expression")
        elif c in "^$":
            last = "assert"
        elif c in "(|":
            last = "start"
        elif c == "\\" and i + 1 < n and pattern[i + 1] in "bB`'<>":
            last = "assert"
        else:
            last = "atom"
        if c == "\\":
            if i + 1 >= n:
                raise Untranslatable("trailing backslash")
            d = pattern[i + 1]
            i += 2
            if d in _META:
                out.append("\\" + d)
            elif d in "wWsSbB":
                out.append("\\" + d)
            elif d == "`":
                out.append("\\A")
            elif d == "'":
                out.append("\\z")
            elif d in "<>":
                # RE2 has \\b but not GNU's start/end-of-word; \\b is the same where a word
                # character certainly follows "\\<" (or precedes "\\>").
                if not _word_anchor_is_boundary(pattern, i - 2, d):
                    raise Unsupported(f"the word anchor \\{d} is supported only next to a word character "
                                         f"(\\<word\\>); use \\b")
                out.append("\\b")
            elif "1" <= d <= "9":
                raise Unsupported(f"back-references (\\{d}) are not supported")
            elif ignore_case and "a" <= d <= "z":
                out.append(_NOTHING)
            else:
                out.append(_escape(d))  # the C library takes \d, \n, ... as the plain letter
        elif c == "[":
            text, i = _bracket(pattern, i)
            out.append(text)
        elif c == "(":
            depth += 1
            out.append(c)
            i += 1
        elif c == ")":
            if depth:
                depth -= 1
                out.append(c)
            else:
                out.append("\\)")  # an unmatched ")" is an ordinary character in ERE
            i += 1
        elif c == "{":
            text, i = _interval(pattern, i)
            out.append(text)
        elif c in "}]":
            out.append("\\" + c)
            i += 1
        else:
            out.append(c)
            i += 1
    if depth:
        raise Untranslatable("unmatched ( or \\(")
    return "".join(out)


def _options(ignore_case: bool):
    import re2

    o = re2.Options()
    o.posix_syntax = True     # POSIX egrep syntax ...
    o.longest_match = True    # ... and leftmost-longest matching, as regexec()
    o.perl_classes = True     # \w \W \s \S (GNU extensions the C library has)
    o.word_boundary = True    # \b \B
    o.one_line = True         # ^ and $ at the ends of the value only (no REG_NEWLINE)
    o.dot_nl = True
    o.case_sensitive = not ignore_case
    o.log_errors = False
    return o


def compile_regex(pattern: str, ignore_case: bool):
    """The compiled RE2 object; raises Untranslatable (with the reason) when it cannot be."""
    key = (pattern, ignore_case)
    rx = _CACHE.get(key)
    if rx is None:
        try:
            import re2
        except ImportError:
            raise Unsupported("the regex extension needs the google-re2 package "
                                 "(pip install google-re2)") from None

        translated = translate(pattern, ignore_case)
        try:
            rx = re2.compile(translated, _options(ignore_case))
        except re2.error as e:
            why = e.args[0] if e.args else str(e)
            if isinstance(why, bytes):
                why = why.decode("utf-8", "replace")
            raise Unsupported(str(why)) from None
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[key] = rx
    return rx


def check_pattern(pattern: str, ignore_case: bool = False) -> str | None:
    """None if `pattern` compiles; else the reason."""
    try:
        compile_regex(pattern, ignore_case)
    except Untranslatable as e:
        return str(e)
    return None


def _check(v, node, out) -> None:
    if out[2].get("match") != "regex" or not out[3]:
        return
    where = node.args[-1] if node.args and node.args[-1].kind in ("string", "strings") else node
    ignore_case = out[2].get("comparator") == "i;ascii-casemap"
    for key in out[3][-1]:
        if isinstance(key, str) and v.constant(key):
            why = check_pattern(key, ignore_case)
            if why:
                v.error(f"invalid regular expression '{key}' for regex match: {why}", where)


check_keys = _check  # called by the validator for every test using :regex


@EXT.match_type("regex")
def match_regex(ctx, cmp, value: str, key: str, tags):
    try:
        rx = compile_regex(key, cmp.name == "i;ascii-casemap")
    except Unsupported as e:
        ctx.fail(f"invalid regular expression '{key}' for regex match: {e}")
    except Untranslatable as e:
        # Not a regular expression at all: as Pigeonhole (and regcomp), the error is logged and
        # this key matches nothing; the script goes on.
        ctx.log_error(f"invalid regular expression '{key}' for regex match: {e}")
        return False
    m = rx.search(value)
    if m is None:
        return False
    return [m.group(0)] + [g or "" for g in m.groups()[:9]]
