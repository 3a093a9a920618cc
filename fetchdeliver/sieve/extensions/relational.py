"""RFC 5231: the :value and :count match types."""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("relational")
EXT.group_tag("match", "value", "string")
EXT.group_tag("match", "count", "string")


def compare(cmp, a: str, b: str, relation: str) -> bool:
    """a RELATION b under the comparator (folded values, ascii-numeric: no digits = infinity)."""
    fa = cmp.fold(a)
    fb = cmp.fold(b)
    c = (fa > fb) - (fa < fb)
    if relation == "gt":
        return c > 0
    if relation == "ge":
        return c >= 0
    if relation == "lt":
        return c < 0
    if relation == "le":
        return c <= 0
    if relation == "eq":
        return c == 0
    return c != 0


@EXT.match_type("value")
def match_value(ctx, cmp, value: str, key: str, tags) -> bool:
    return compare(cmp, value, key, tags.get("relation", "eq"))


@EXT.match_type("count")
def match_count(ctx, cmp, values, keys, tags) -> bool:
    count = str(len(values))
    relation = tags.get("relation", "eq")
    return any(compare(cmp, count, key, relation) for key in keys)
