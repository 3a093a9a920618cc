"""RFC 5233: the :user and :detail address parts (separator "+", as Pigeonhole's default).

`recipient_delimiter` may hold several characters: each one is a separator and the
first one found splits the local part (as Dovecot's setting of that name).
"""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("subaddress")
EXT.group_tag("address-part", "user")
EXT.group_tag("address-part", "detail")

SEPARATOR = "+"


def _split(ctx, address) -> tuple[str, str | None]:
    local = address.local or ""
    seps = str(ctx.env.options.get("recipient_delimiter", SEPARATOR)) or SEPARATOR
    positions = [i for i in (local.find(c) for c in seps) if i >= 0]
    if not positions:
        return local, None
    i = min(positions)
    return local[:i], local[i + 1:]


@EXT.address_part("user")
def user(ctx, address) -> str | None:
    return _split(ctx, address)[0]


@EXT.address_part("detail")
def detail(ctx, address) -> str | None:
    return _split(ctx, address)[1]
