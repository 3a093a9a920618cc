"""Property-based fuzzing (hypothesis) of the Sieve parser, compiler and interpreter, and of the :regex
translation: whatever the input, the only exceptions are the project's own Sieve errors, and a script
that compiles runs to a decision (at least one action) on a message."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fetchdeliver.sieve import compile_text
from fetchdeliver.sieve.errors import SieveSyntaxError
from fetchdeliver.sieve.extensions.regex import Untranslatable, compile_regex
from fetchdeliver.sieve.matching import compile_glob

from sieve_helpers import result

# A modest count keeps the suite fast; FD_FUZZ_EXAMPLES=5000 for a longer hunt.
FUZZ = settings(max_examples=int(os.environ.get("FD_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])

WORDS = ["require", "if", "elsif", "else", "stop", "keep", "discard", "redirect", "fileinto", "reject",
         "header", "address", "envelope", "exists", "size", "allof", "anyof", "not", "true", "false",
         "set", "string", "body", "date", "currentdate", "include", "return", "global", "foreverypart",
         "break", "addflag", "hasflag", "vacation", "notify", "duplicate", "mailboxexists", "ihave",
         "error", "x", "Subject"]
TAGS = [":is", ":contains", ":matches", ":regex", ":over", ":under", ":all", ":domain", ":localpart",
        ":comparator", ":count", ":value", ":copy", ":flags", ":create", ":days", ":raw", ":text",
        ":lower", ":upper", ":length", ":quotewildcard", ":personal", ":global", ":once", ":optional", ":x"]
CAPS = ['"fileinto"', '"regex"', '"variables"', '"imap4flags"', '"relational"', '"body"', '"include"',
        '"vacation"', '"copy"', '"mailbox"', '"date"', '"envelope"', '"foreverypart"', '"mime"',
        '"comparator-i;ascii-numeric"', '"ihave"', '"duplicate"', '"enotify"', '"nope"']
STRINGS = ['"a"', '""', '"Subject"', '"*a*?"', '"^(a+)+$"', '"([a-"', '"\\\\1"', '"${1}"', '"${x}"',
           '"INBOX"', '"u@example.com"', '"i;octet"', '"gt"', '"\\"q\\""', '"1k"', '"[a-z]{2,3}"',
           '"${unicode:2764}"', "text:\r\nline\r\n..dot\r\n.\r\n"]
PUNCT = ["{", "}", "(", ")", "[", "]", ",", ";"]
OTHER = ["0", "1", "10K", "99999999999999999999999", "# c\n", "/* c */", "\n", "\\", ":", '"', "/*",
         "text:", "é", "\x00", "\ufeff"]

token = st.one_of(st.sampled_from(WORDS), st.sampled_from(TAGS), st.sampled_from(STRINGS),
                  st.sampled_from(PUNCT), st.sampled_from(OTHER), st.sampled_from(CAPS))


def _compile_or_own_error(text: str):
    try:
        return compile_text(text, "fuzz.sieve", options={"extensions": ["+editheader"]})
    except SieveSyntaxError as e:  # SieveCompileError included
        assert e.file == "fuzz.sieve"
        return None


def _runs_to_a_decision(text: str) -> None:
    script = _compile_or_own_error(text)
    if script is None:
        return
    r = result(text, options={"extensions": ["+editheader"]})
    assert r.actions, text


@FUZZ
@given(st.lists(token, max_size=40).map(" ".join))
def test_token_soup(text):
    _runs_to_a_decision(text)


@FUZZ
@given(st.lists(token, max_size=30).map(" ".join))
def test_token_soup_after_a_require(text):
    _runs_to_a_decision("require [" + ", ".join(CAPS[:-1]) + "];\n" + text)


# Scripts that are well formed more often: nested commands and tests from a small grammar.
_test = st.deferred(lambda: st.one_of(
    st.sampled_from(["true", "false", 'exists "x"', 'header :contains "subject" "a"',
                     'header :regex "subject" "^(a|b)+$"', 'address :domain :is "from" "example.com"',
                     'size :over 1', 'header :matches "subject" "*a*?"', 'string :count "gt" "a" "1"']),
    _test.map(lambda t: f"not {t}"),
    st.lists(_test, min_size=1, max_size=3).map(lambda ts: f"anyof({', '.join(ts)})"),
    st.lists(_test, min_size=1, max_size=3).map(lambda ts: f"allof({', '.join(ts)})"),
))
_command = st.deferred(lambda: st.one_of(
    st.sampled_from(["keep;", "discard;", "stop;", 'fileinto "F";', 'redirect "r@example.com";',
                     'set "x" "${1}";', 'addflag "\\\\Seen";', "foo;"]),
    st.tuples(_test, st.lists(_command, max_size=3)).map(lambda a: f"if {a[0]} {{ {' '.join(a[1])} }}"),
))


@FUZZ
@given(st.lists(_command, max_size=6).map(" ".join))
def test_generated_scripts(text):
    _runs_to_a_decision('require ["fileinto", "regex", "variables", "imap4flags", "relational"];\n' + text)


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    _compile_or_own_error(text)


ERE = st.lists(st.sampled_from(list("ab.^$*+?|(){}[]-\\:=,019 ") + ["[:alpha:]", "[.a.]", "[=a=]", "\\<",
                                                                      "{2,3}", "{1001}", "é"]),
               max_size=25).map("".join)


@FUZZ
@given(ERE, st.booleans())
def test_regex_translation_never_raises_anything_else(pattern, ignore_case):
    try:
        rx = compile_regex(pattern, ignore_case)
    except Untranslatable:
        return
    rx.search("aab" * 20 + "!")


HTML = st.lists(st.sampled_from(["<script>", "<SCRIPT a=1>", "</script>", "</script >", "</scriptx>", "<style>",
                                 "</style\n>", "<scripts>", "<", ">", "a", " ", "<b>", "&amp;", "</", "\n", "é",
                                 "<script", "</style"]), max_size=14).map("".join)


@FUZZ
@given(HTML)
def test_linear_html_to_text_does_what_the_regexes_did(html):
    import html as h
    import re

    from fetchdeliver.sieve.extensions.body import html_to_text

    ref = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", html)
    ref = h.unescape(re.sub(r"(?s)<[^>]*>", " ", ref))
    assert html_to_text(html) == ref


# The :matches algorithm before issue 19 (depth-first over every extent of every "*", polynomial of a
# high degree on long values), kept as the reference the linear one must agree with.
def reference_glob(value: str, pattern: str, fold) -> list[str] | None:
    """Match `value` against a :matches pattern; return the wildcard captures or None.

    Each wildcard takes as few characters as possible (leftmost-shortest, as
    Pigeonhole does); failed (item, position) pairs are remembered so that a
    pathological pattern stays polynomial.
    """
    items = compile_glob(pattern)
    fv = fold(value)
    folded = [fold(it) if isinstance(it, str) else it for it in items]
    n = len(fv)
    m = len(folded)
    failed: set = set()
    caps: list[tuple[int, int]] = []

    def rec(pi: int, si: int) -> bool:
        if pi == m:
            return si == n
        key = (pi, si)
        if key in failed:
            return False
        it = folded[pi]
        if isinstance(it, str):
            if fv.startswith(it, si) and rec(pi + 1, si + len(it)):
                return True
        elif it[0] == "?":
            if si < n:
                caps.append((si, si + 1))
                if rec(pi + 1, si + 1):
                    return True
                caps.pop()
        else:
            # Trailing "*" takes the rest at once.
            if pi == m - 1:
                caps.append((si, n))
                return True
            nxt = folded[pi + 1]
            end = si
            while end <= n:
                if isinstance(nxt, str):
                    end = fv.find(nxt, end)
                    if end < 0:
                        break
                caps.append((si, end))
                if rec(pi + 1, end):
                    return True
                caps.pop()
                end += 1
        failed.add(key)
        return False

    if rec(0, 0):
        return [value[a:b] for a, b in caps]
    return None


GLOB_PATTERN = st.lists(st.sampled_from(["*", "?", "a", "b", "ab", "\\*", "\\?", "A", "é"]), max_size=8).map("".join)
GLOB_VALUE = st.text(alphabet="abAé*?", max_size=12)


@FUZZ
@given(GLOB_PATTERN, GLOB_VALUE, st.booleans())
def test_matches_agrees_with_the_reference_algorithm(pattern, value, casemap):
    from fetchdeliver.sieve.matching import ascii_lower, glob

    fold = ascii_lower if casemap else (lambda s: s)
    assert glob(value, pattern, fold) == reference_glob(value, pattern, fold), (pattern, value)


RICH = ('require ["fileinto", "regex", "variables", "body", "mime", "foreverypart", "envelope", "relational",\n'
        '         "imap4flags", "date", "subaddress", "editheader", "comparator-i;ascii-numeric"];\n'
        'if header :regex "subject" "^(re|fwd?): *(.*)$" { set "s" "${2}"; }\n'
        'if address :detail :matches "to" "*" { fileinto "d-${1}"; }\n'
        'if body :text :contains "x" { addflag "\\\\Seen"; }\n'
        'if header :mime :type "content-type" "text" { fileinto "text"; }\n'
        'foreverypart { if header :mime :param "filename" :matches "content-disposition" "*.exe" '
        '{ fileinto "exe"; break; } }\n'
        'if date :value "ge" :originalzone "date" "year" "2000" { fileinto "new"; }\n'
        'if header :count "ge" :comparator "i;ascii-numeric" "received" "3" { fileinto "hops"; }\n'
        'if envelope :domain "from" "example.com" { deleteheader "x-a"; addheader "X-B" "${s}"; }\n')
MESSAGE_PIECES = st.sampled_from([
    b"Subject: re: hi\r\n", b"To: a+tag@example.com\r\n", b"From: <x@example.com>\r\n", b"Received: x\r\n",
    b"Date: Mon, 3 Jun 2024 10:00:00 +0200\r\n", b"Date: garbage\r\n", b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: text/html\r\n", b"Content-Disposition: attachment; filename=a.exe\r\n", b"\r\n", b"--b\r\n",
    b"--b--\r\n", b"=?utf-8?q?x?=\r\n", b"<script>x\r\n", b" folded\r\n", b"X-A: 1\r\n", b"\xff\xfe\r\n", b"body x\r\n",
    b"Subject: =?utf-8?b?////?=\r\n", b"To: \"unterminated <a@\r\n", b":\r\n"])


@FUZZ
@given(st.lists(MESSAGE_PIECES, max_size=30).map(b"".join))
def test_any_message_through_a_rich_script_gets_a_decision(raw):
    r = result(RICH, raw, options={"extensions": ["+editheader"]})
    assert r.actions
