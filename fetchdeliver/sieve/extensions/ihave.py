"""RFC 5463: ihave (decided at compile time, like Pigeonhole) and the error command."""

from __future__ import annotations

from fetchdeliver.sieve.registry import IMPLICIT, Enabled, Extension

EXT = Extension("ihave")

# Pigeonhole 0.5.19 cannot load these through ihave: `ihave "variables"` is false there.
NOT_BY_IHAVE = {"variables", "encoded-character"}


@EXT.test("ihave", args=("strings",))
def ihave(ctx, node) -> bool:
    enabled = Enabled(ctx.env.options.get("extensions"))
    return all(c in enabled and c not in IMPLICIT and c not in NOT_BY_IHAVE for c in node[3][0])


@EXT.command("error", args=("string",))
def error(ctx, node) -> None:
    ctx.fail(f"script reported error: {ctx.expand(node[3][0])}")
