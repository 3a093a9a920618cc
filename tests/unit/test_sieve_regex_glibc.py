"""Sieve :regex (RE2 after translation) against the C library's regcomp/regexec, the engine Pigeonhole
hands :regex to: the same patterns accepted, the same match and the same ${0}..${9} on random POSIX
EREs and values (hypothesis). The C library is called through ctypes; 64-bit glibc only."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fetchdeliver.sieve.extensions.regex import Untranslatable, compile_regex

if platform.libc_ver()[0] != "glibc" or ctypes.sizeof(ctypes.c_void_p) != 8:
    pytest.skip("needs 64-bit glibc (its regex_t layout)", allow_module_level=True)

_libc = ctypes.CDLL(ctypes.util.find_library("c"))
REG_EXTENDED, REG_ICASE = 1, 2
_RE_NSUB_OFFSET = 48   # struct re_pattern_buffer: buffer, allocated, used, syntax, fastmap, translate, re_nsub


class _Match(ctypes.Structure):
    _fields_ = [("rm_so", ctypes.c_int), ("rm_eo", ctypes.c_int)]   # glibc's regoff_t is int


def glibc(pattern: str, value: str, ignore_case: bool):
    """("error", message) | None (no match) | [${0}, ${1}, ...] as regexec reports them."""
    buf = ctypes.create_string_buffer(256)
    flags = REG_EXTENDED | (REG_ICASE if ignore_case else 0)
    rc = _libc.regcomp(buf, pattern.encode(), flags)
    if rc:
        err = ctypes.create_string_buffer(200)
        _libc.regerror(rc, buf, err, 200)
        return ("error", err.value.decode())
    try:
        nsub = ctypes.c_size_t.from_buffer(buf, _RE_NSUB_OFFSET).value
        groups = (_Match * 10)()
        data = value.encode()
        if _libc.regexec(buf, data, 10, groups, 0):
            return None
        return [data[g.rm_so:g.rm_eo].decode() if g.rm_so >= 0 else "" for g in groups[:min(nsub, 9) + 1]]
    finally:
        _libc.regfree(buf)


def ours(pattern: str, value: str, ignore_case: bool):
    try:
        rx = compile_regex(pattern, ignore_case)
    except Untranslatable as e:
        return ("error", str(e))
    m = rx.search(value)
    if m is None:
        return None
    return [m.group(0)] + [g or "" for g in m.groups()[:9]]


def test_the_ctypes_bridge_reads_glibc():
    assert glibc("(a|ab)(c|bcd)(d*)", "abcd", False) == ["abcd", "a", "bcd", ""]
    assert glibc("\\d", "d", True) is None
    assert glibc("a{x", "a", False)[0] == "error"


ATOMS = ["a", "b", "A", "B", ".", "[ab]", "[^a]", "[[:alpha:]]", "[[:upper:]]", "[^[:space:]]", "[]a]", "[a-]",
         "\\.", "\\w", "\\W", "\\s", "\\b", "\\B", "\\d", "\\D", "(a|ab)", "(b*)", "((a|b)*c?)", "(a(b)?)+",
         "(()|a)", "a{2}", "a{1,2}", "b{,1}", "(a)", "^", "$", "x?", "{", "}", ")", "|", "*", "+", "?",
         "\\<a", "b\\>", "\\<ab\\>", "\\<\\w+\\>"]
EMPTY_GROUPS = ("(()|a)", "(b*)", "((a|b)*c?)")   # atoms whose group can match the empty string
PATTERN = st.lists(st.sampled_from(ATOMS), min_size=1, max_size=7).map("".join)
VALUE = st.text(alphabet="aAbB d.c", max_size=10)


@settings(max_examples=int(os.environ.get("FD_FUZZ_EXAMPLES", "300")), deadline=None,
          derandomize=not os.environ.get("FD_FUZZ_EXAMPLES"),   # CI: the same examples every run
          suppress_health_check=[HealthCheck.too_slow])
@given(PATTERN, VALUE, st.booleans())
def test_regex_agrees_with_glibc(pattern, value, ignore_case):
    theirs = glibc(pattern, value, ignore_case)
    mine = ours(pattern, value, ignore_case)
    if isinstance(mine, tuple) and "word anchor" in mine[1]:
        return   # \\< or \\> where RE2's \\b would not be the same: refused on purpose
    if isinstance(theirs, tuple) or isinstance(mine, tuple):
        # Both refuse the pattern (the reasons are worded alike, not the same).
        assert isinstance(theirs, tuple) and isinstance(mine, tuple), (pattern, theirs, mine)
        return
    if mine is None or theirs is None:
        assert mine is theirs, (pattern, value, ignore_case, theirs, mine)
        return
    assert mine[0] == theirs[0], (pattern, value, ignore_case)   # ${0}: leftmost-longest, as regexec
    if not re.search(r"\)[*+?{]", pattern) and not any(g in pattern for g in EMPTY_GROUPS):
        # A group that can repeat gets glibc's own, non-POSIX submatch answers (e.g. "((a|b)*c?)*+" on
        # "a": ${1} is ""); a group that can match empty is placed by RE2's leftmost-first rule, not
        # POSIX's longest-subexpression rule (e.g. "a(()|a)\\B(()|a)\\B" on "AAA": glibc gives ${1} "A",
        # RE2 ${3}). ${0} agrees always (checked above); elsewhere the submatches agree too.
        assert mine == theirs, (pattern, value, ignore_case)
