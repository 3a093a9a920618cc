"""draft-ietf-sieve-regex: the :regex match type (POSIX extended regular expressions via `re`)."""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("regex")
EXT.group_tag("match", "regex")

_CACHE: dict = {}


def compile_regex(pattern: str, ignore_case: bool):
    import re

    key = (pattern, ignore_case)
    rx = _CACHE.get(key)
    if rx is None:
        rx = re.compile(pattern, (re.IGNORECASE | re.ASCII) if ignore_case else 0)
        _CACHE[key] = rx
    return rx


def check_pattern(pattern: str) -> str | None:
    """None if `pattern` compiles; else the reason."""
    import re

    try:
        re.compile(pattern)
    except re.error as e:
        return str(e)
    return None


def _check(v, node, out) -> None:
    if out[2].get("match") != "regex" or not out[3]:
        return
    for key in out[3][-1]:
        if isinstance(key, str) and v.constant(key):
            why = check_pattern(key)
            if why:
                v.error(f"invalid regular expression '{key}' for regex match: {why}", node)


check_keys = _check  # called by the validator for every test using :regex


@EXT.match_type("regex")
def match_regex(ctx, cmp, value: str, key: str, tags):
    import re

    try:
        rx = compile_regex(key, cmp.name == "i;ascii-casemap")
    except re.error as e:
        ctx.fail(f"invalid regular expression '{key}': {e}")
    m = rx.search(value)
    if m is None:
        return False
    return [m.group(0)] + [g or "" for g in m.groups()[:9]]
