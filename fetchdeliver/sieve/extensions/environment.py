"""RFC 5183: the environment test."""

from __future__ import annotations

import os

from fetchdeliver.sieve.matching import match
from fetchdeliver.sieve.registry import Extension

EXT = Extension("environment")


def item(ctx, name: str) -> str | None:
    """The value of environment item `name`, or None when it is unknown."""
    env = ctx.env
    extra = env.options.get("environment") or {}
    name = name.lower()
    if name in extra:
        return str(extra[name])
    host = env.hostname or os.uname().nodename
    if name == "domain":
        return host.split(".", 1)[1] if "." in host else host
    if name == "host":
        return host
    if name == "location":  # RFC 6785 4.1: a script run for an IMAP event runs in the message store
        return "MDA" if env.event is None else "MS"
    if name == "phase":
        return "during" if env.event is None else "post"
    if name == "name":
        return "fetchdeliver"
    for key, provider in ctx.services.items():
        # Other extensions' items ("vnd.dovecot.*", "imap.*"): the service "environment:PREFIX".
        if key.startswith("environment:") and name.startswith(key[12:]):
            value = provider(ctx, name)
            if value is not None:
                return value
    if name == "version":
        from fetchdeliver import __version__ as v  # type: ignore[attr-defined]

        return str(v)
    return None


@EXT.test("environment", args=("string", "strings"), groups=("comparator", "match"))
def environment(ctx, node) -> bool:
    value = item(ctx, ctx.expand(node[3][0]))
    if value is None:
        return False
    return match(ctx, node[2], [value], ctx.expand_list(node[3][1]))
