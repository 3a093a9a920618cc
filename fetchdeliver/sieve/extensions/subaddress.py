"""RFC 5233: the :user and :detail address parts (separator "+", as Pigeonhole's default)."""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("subaddress")
EXT.group_tag("address-part", "user")
EXT.group_tag("address-part", "detail")

SEPARATOR = "+"


@EXT.address_part("user")
def user(ctx, address) -> str | None:
    local = address.local or ""
    sep = ctx.env.options.get("recipient_delimiter", SEPARATOR)
    i = local.find(sep)
    return local if i < 0 else local[:i]


@EXT.address_part("detail")
def detail(ctx, address) -> str | None:
    local = address.local or ""
    sep = ctx.env.options.get("recipient_delimiter", SEPARATOR)
    i = local.find(sep)
    return None if i < 0 else local[i + len(sep):]
