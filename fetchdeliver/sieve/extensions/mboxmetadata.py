"""RFC 5490 section 3: mboxmetadata, the `metadata` and `metadataexists` tests.

They read a mailbox's IMAP METADATA (RFC 5464) entries through the environment's
`metadata(mailbox, name) -> value or None` callback (SieveEnv.metadata; without one, no entry
exists). An entry name must be "/private/..." or "/shared/..." (RFC 5464 section 3.2); an
invalid name or mailbox name is a warning at compile time and makes the test false when it runs.
"""

from __future__ import annotations

from fetchdeliver.sieve.matching import match
from fetchdeliver.sieve.registry import Extension

EXT = Extension("mboxmetadata", default=False)  # off by default, as in Pigeonhole


def valid_entry_name(name: str) -> bool:
    """An RFC 5464 entry name under /private or /shared: no "//", no trailing "/", no "*" or "%",
    printable ASCII."""
    low = name.lower()
    if not (low.startswith("/private/") or low.startswith("/shared/")):
        return False
    if "//" in name or name.endswith("/"):
        return False
    return all(32 < ord(c) < 127 and c not in "*%" for c in name)


def lookup(ctx, mailbox: str | None, name: str) -> str | None:
    """The entry's value, or None when it (or the mailbox name) is invalid or not set."""
    if not valid_entry_name(name):
        return None
    if mailbox is not None:
        from fetchdeliver.sieve.mailbox_names import mailbox_name_problem

        if mailbox_name_problem(mailbox):
            return None
    source = ctx.env.metadata
    return None if source is None else source(mailbox, name)


def check_names(v, names, node, mailbox: str | None = None) -> None:
    """Compile-time warnings (as Pigeonhole's) for constant invalid entry and mailbox names."""
    for name in names:
        if v.constant(name) and not valid_entry_name(name):
            v.warning(f"{node.name}: invalid metadata entry name '{name}'", node)
    if mailbox is not None and v.constant(mailbox):
        from fetchdeliver.sieve.mailbox_names import mailbox_name_problem

        why = mailbox_name_problem(mailbox)
        if why:
            v.warning(f"{node.name}: invalid mailbox name '{mailbox}': {why}", node)


def _check_metadata(v, node, out) -> None:
    if len(out[3]) == 3:
        check_names(v, [out[3][1]], node, out[3][0])


def _check_exists(v, node, out) -> None:
    if len(out[3]) == 2:
        check_names(v, out[3][1], node, out[3][0])


@EXT.test("metadata", args=("string", "string", "strings"), groups=("comparator", "match"),
          check=_check_metadata)
def metadata(ctx, node) -> bool:
    mailbox, name, keys = node[3]
    value = lookup(ctx, ctx.expand(mailbox), ctx.expand(name))
    if value is None:
        return False
    return match(ctx, node[2], [value], ctx.expand_list(keys))


@EXT.test("metadataexists", args=("string", "strings"), check=_check_exists)
def metadataexists(ctx, node) -> bool:
    mailbox = ctx.expand(node[3][0])
    return all(lookup(ctx, mailbox, n) is not None for n in ctx.expand_list(node[3][1]))
