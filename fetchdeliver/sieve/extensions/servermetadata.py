"""RFC 5490 section 4: servermetadata, the `servermetadata` and `servermetadataexists` tests
(the server's METADATA entries, read as mboxmetadata.py reads a mailbox's, with mailbox None)."""

from __future__ import annotations

from fetchdeliver.sieve.extensions.mboxmetadata import check_names, lookup
from fetchdeliver.sieve.matching import match
from fetchdeliver.sieve.registry import Extension

EXT = Extension("servermetadata", default=False)


def _check_metadata(v, node, out) -> None:
    if len(out[3]) == 2:
        check_names(v, [out[3][0]], node)


def _check_exists(v, node, out) -> None:
    if out[3]:
        check_names(v, out[3][0], node)


@EXT.test("servermetadata", args=("string", "strings"), groups=("comparator", "match"), check=_check_metadata)
def servermetadata(ctx, node) -> bool:
    value = lookup(ctx, None, ctx.expand(node[3][0]))
    if value is None:
        return False
    return match(ctx, node[2], [value], ctx.expand_list(node[3][1]))


@EXT.test("servermetadataexists", args=("strings",), check=_check_exists)
def servermetadataexists(ctx, node) -> bool:
    return all(lookup(ctx, None, n) is not None for n in ctx.expand_list(node[3][0]))
