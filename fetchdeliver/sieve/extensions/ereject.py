"""RFC 5429: ereject (refuse the message at the protocol level where possible; off by default,
as in Pigeonhole)."""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("ereject", default=False, delivery_only=True)


@EXT.command("ereject", args=("string",))
def ereject(ctx, node) -> None:
    ctx.reject(ctx.expand(node[3][0]), ereject=True)
