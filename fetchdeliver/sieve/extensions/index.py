"""RFC 5260 section 6: :index and :last on header, address and date tests."""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("index")


def _check(v, node, out) -> None:
    tags = out[2]
    if "last" in tags and "index" not in tags:
        v.error(f"the :last tag for the {node.name} test requires the :index tag", node)
    if "index" in tags and tags["index"] < 1:
        v.error(f"the :index tag for the {node.name} test must be 1 or more", node)


for _test in ("header", "address", "date"):
    EXT.tag(_test, "index", "number", check=_check)
    EXT.tag(_test, "last", check=_check)


@EXT.service("pick_index")
def pick(values: list, tags: dict) -> list:
    """The :index'th value (counted from the end with :last), or all values."""
    idx = tags.get("index")
    if not idx:
        return values
    if tags.get("last"):
        idx = len(values) - idx + 1
    if 1 <= idx <= len(values):
        return [values[idx - 1]]
    return []
