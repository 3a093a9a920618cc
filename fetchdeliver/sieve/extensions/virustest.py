"""RFC 5235: the virustest test (1..5), from the virustest_* options as spamtest.py reads its own."""

from __future__ import annotations

from fetchdeliver.sieve.extensions.spamtest import score
from fetchdeliver.sieve.matching import match
from fetchdeliver.sieve.registry import Extension

EXT = Extension("virustest", default=False)


@EXT.test("virustest", args=("string",), groups=("comparator", "match"))
def virustest(ctx, node) -> bool:
    value = score(ctx, "virustest", False)
    if value != "0":
        value = str(min(5, max(1, (int(value) + 1) // 2)))
    return match(ctx, node[2], [value], [ctx.expand(node[3][0])])
