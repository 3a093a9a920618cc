"""RFC 5228 section 5.4: the envelope test (from, to; Pigeonhole adds auth and orig_to)."""

from __future__ import annotations

from fetchdeliver.sieve.addresses import parse_envelope_address
from fetchdeliver.sieve.matching import match
from fetchdeliver.sieve.registry import Extension
from fetchdeliver.sieve.runtime import address_values

EXT = Extension("envelope")

PARTS = ("from", "to", "auth", "orig_to")


def _check(v, node, out) -> None:
    for part in (out[3][0] if out[3] else []):
        if v.constant(part) and part.lower() not in PARTS:
            v.error(f"specified envelope part '{part}' is not supported by the envelope test", node)


def envelope_addresses(ctx, part: str) -> list:
    env = ctx.env
    part = part.lower()
    if part == "from":
        value = env.envelope_from
    elif part == "to":
        value = env.envelope_to
    elif part == "orig_to":
        value = env.original_to
    elif part == "auth":
        value = env.auth_user
        if not value:
            return []
    else:
        return []
    addr = parse_envelope_address(value or "")
    if addr is None:
        # RFC 5228 5.4: the null reverse-path "is matched against as the empty string,
        # regardless of the ADDRESS-PART argument specified".
        return [None] if part != "from" else ["<>"]
    return [addr]


@EXT.test("envelope", args=("strings", "strings"), groups=("comparator", "match", "address-part"),
          check=_check)
def envelope(ctx, node) -> bool:
    ctx.not_for_imap_events("the envelope test")
    tags = node[2]
    part = tags.get("part", "all")
    values: list[str] = []
    for name in ctx.expand_list(node[3][0]):
        for a in envelope_addresses(ctx, name):
            if a == "<>":
                values.append("")
                continue
            if a is not None:
                values.extend(address_values(ctx, [a], part))
    return match(ctx, tags, values, ctx.expand_list(node[3][1]))
