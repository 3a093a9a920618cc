"""RFC 5235: spamtest (spamtestplus's :percent and virustest: their own modules), configured like Pigeonhole.

Options (SieveEnv.options): spamtest_header ("X-Spam-Score" or "NAME: REGEX"),
spamtest_status_type ("score", "strlen", "text"), spamtest_max (a number) or
spamtest_max_header, spamtest_text_values (list of 11 strings for "text");
the same with virustest_. Without a header configured the test yields 0.
"""

from __future__ import annotations

from fetchdeliver.sieve.matching import match
from fetchdeliver.sieve.registry import Extension

EXT = Extension("spamtest", default=False)


# The POSIX bracket classes a Pigeonhole-style pattern may hold ("[[:digit:]]"), as the contents of
# a Python bracket expression; the rest of the pattern is read as a Python regex (so \d works too).
POSIX_CLASSES = {"[:digit:]": "0-9", "[:alpha:]": "A-Za-z", "[:alnum:]": "A-Za-z0-9", "[:upper:]": "A-Z",
                 "[:lower:]": "a-z", "[:space:]": " \\t\\r\\n\\v\\f", "[:blank:]": " \\t",
                 "[:xdigit:]": "0-9A-Fa-f", "[:punct:]": "!-/:-@\\[-`{-~", "[:word:]": "A-Za-z0-9_"}


def _header_value(ctx, spec: str) -> str | None:
    name, _, rx = spec.partition(":")
    values = ctx.message.get_all(name.strip(), decode=False)
    if not values:
        return None
    value = values[0].strip()
    rx = rx.strip()
    if rx:
        import re

        for cls, chars in POSIX_CLASSES.items():  # Pigeonhole's setting is a POSIX regex
            rx = rx.replace(cls, chars)
        m = re.search(rx, value)
        if m is None:
            return None
        value = m.group(1) if m.groups() else m.group(0)
    return value


def score(ctx, prefix: str, percent: bool) -> str:
    """The normalised value: "0" (not tested), "1".."10", or 0..100 with :percent."""
    opts = ctx.env.options
    header = opts.get(prefix + "_header")
    if not header:
        return "0"
    value = _header_value(ctx, header)
    if value is None:
        return "0"
    kind = opts.get(prefix + "_type") or opts.get(prefix + "_status_type", "score")
    if kind == "text":
        texts = opts.get(prefix + "_text_values") or {}
        if isinstance(texts, (list, tuple)):
            texts = {str(i): t for i, t in enumerate(texts)}
        top = 5 if prefix == "virustest" else 10
        for level, t in texts.items():
            if t == value:
                ratio = max(int(level) - 1, 0) / (top - 1)
                if not percent and prefix == "spamtest":
                    return str(int(level))
                break
        else:
            return "0"
    else:
        if kind == "strlen":
            val = float(len(value))
        else:
            try:
                val = float(value)
            except ValueError:
                return "0"
        max_value = opts.get(prefix + "_max")
        if max_value is None and opts.get(prefix + "_max_header"):
            mv = _header_value(ctx, opts[prefix + "_max_header"])
            try:
                max_value = float(mv) if mv is not None else None
            except ValueError:
                max_value = None
        if not max_value:
            return "0"
        ratio = min(max(val / float(max_value), 0.0), 1.0)
    # Pigeonhole truncates: 1 + floor(9 * ratio), or floor(100 * ratio) with :percent.
    if percent:
        return str(int(ratio * 100 + 1e-9))
    return str(1 + int(ratio * 9 + 1e-9))


@EXT.test("spamtest", args=("string",), groups=("comparator", "match"))
def spamtest(ctx, node) -> bool:
    value = score(ctx, "spamtest", bool(node[2].get("percent")))
    return match(ctx, node[2], [value], [ctx.expand(node[3][0])])

