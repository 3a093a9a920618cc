"""RFC 5429: reject (refuse the message; conflicts with keep/fileinto/redirect). ereject: ereject.py."""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("reject", delivery_only=True)


@EXT.command("reject", args=("string",))
def reject(ctx, node) -> None:
    ctx.reject(ctx.expand(node[3][0]), ereject=False)
