"""ESEARCH (RFC 4731), SEARCHRES (RFC 5182) and ESORT (RFC 5267): SEARCH/SORT RETURN (...) and `$`.

The session keeps the saved result as a set of UIDs (an expunged message simply
drops out of it); `$` in a sequence set or as a search key stands for it.
"""

from __future__ import annotations

from fetchdeliver.imapserver.condstore import uid_set
from fetchdeliver.imapserver.protocol import ParseError, Parser

OPTIONS = ("MIN", "MAX", "ALL", "COUNT", "SAVE", "UPDATE")    # UPDATE: CONTEXT=SEARCH (context.py)


def parse_return(p: Parser) -> list[str] | None:
    """`RETURN (opts) ` at the start of the SEARCH arguments: the options (ALL for `()`), or None."""
    if not p.maybe(b"RETURN "):
        return None
    p.expect(b"(")
    opts: list[str] = []
    while not p.maybe(b")"):
        word = p.atom().upper()
        if word == "PARTIAL":     # CONTEXT=SEARCH (RFC 5267 4.4): PARTIAL lo:hi, positions in the result
            p.sp()
            lo = p.nz_number()
            p.expect(b":")
            hi = p.nz_number()
            lo, hi = min(lo, hi), max(lo, hi)
            opts = [o for o in opts if not o.startswith("PARTIAL ")] + [f"PARTIAL {lo}:{hi}"]
            p.maybe(b" ")
            continue
        if word not in OPTIONS:
            raise ParseError(f"unknown SEARCH RETURN option {word} (MIN, MAX, ALL, COUNT, SAVE or UPDATE)")
        if word not in opts:
            opts.append(word)
        p.maybe(b" ")
    p.sp()
    if "UPDATE" in opts and "SAVE" in opts:
        raise ParseError("UPDATE and SAVE cannot be combined (RFC 5267 4.2)")
    return opts or ["ALL"]


def saved_uids(opts: list[str], hits_uids: list[int]) -> set[int]:
    """What SAVE keeps (RFC 5182 2.1): MIN and/or MAX alone save just those, else every hit."""
    if not hits_uids:
        return set()
    partial = [o for o in opts if o.startswith("PARTIAL ")]
    if partial and not ({"ALL", "COUNT", "MIN", "MAX"} & set(opts)):
        lo, hi = (int(x) for x in partial[0][8:].split(":"))
        return set(sorted(hits_uids)[lo - 1:hi])
    if "ALL" in opts or "COUNT" in opts or not ({"MIN", "MAX"} & set(opts)):
        return set(hits_uids)
    out = set()
    if "MIN" in opts:
        out.add(min(hits_uids))
    if "MAX" in opts:
        out.add(max(hits_uids))
    return out


def ordered_set(nums: list[int]) -> str:
    """ESORT's ALL: the numbers in sorted order, ranges only for ascending runs ("5,3,1:2")."""
    out: list[str] = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}:{nums[j]}")
        i = j + 1
    return ",".join(out)


def response(tag: str, uid: bool, opts: list[str], hits: list[int], modseq: int | None,
             ordered: bool = False) -> bytes:
    """The `* ESEARCH` line (empty when SAVE is the only option, RFC 5182 2.1). With `ordered`
    (ESORT, RFC 5267 4.2) MIN and MAX are the first and last in sort order and ALL keeps the order."""
    if opts == ["SAVE"]:
        return b""
    opts = [o for o in opts if o != "UPDATE"]
    parts = [f'* ESEARCH (TAG "{tag}")']
    if uid:
        parts.append("UID")
    if hits:
        if "MIN" in opts:
            parts.append(f"MIN {hits[0] if ordered else min(hits)}")
        if "MAX" in opts:
            parts.append(f"MAX {hits[-1] if ordered else max(hits)}")
        if "ALL" in opts:
            parts.append(f"ALL {ordered_set(hits) if ordered else uid_set(hits)}")
    if "COUNT" in opts:
        parts.append(f"COUNT {len(hits)}")
    for o in opts:
        if o.startswith("PARTIAL "):
            lo, hi = (int(x) for x in o[8:].split(":"))
            got = (hits if ordered else sorted(hits))[lo - 1:hi]
            parts.append(f"PARTIAL ({lo}:{hi} {(ordered_set(got) if ordered else uid_set(got)) if got else 'NIL'})")
    if modseq is not None and hits:
        parts.append(f"MODSEQ {modseq}")
    return (" ".join(parts) + "\r\n").encode()


def resolve_saved(tree: tuple, saved: set[int]) -> tuple:
    """The search tree with every `$` key ("SAVED",) replaced by a UID set of the saved result."""
    kind = tree[0]
    if kind == "SAVED":
        return ("UID", [(u, u) for u in sorted(saved)])
    if kind == "AND":
        return ("AND", [resolve_saved(k, saved) for k in tree[1]])
    if kind == "NOT":
        return ("NOT", resolve_saved(tree[1], saved))
    if kind == "OR":
        return ("OR", resolve_saved(tree[1], saved), resolve_saved(tree[2], saved))
    return tree
