"""Comparators and match types (RFC 5228 section 2.7, RFC 5231, RFC 5229 match variables).

Run-time code: no `re` (the regex extension imports it itself when used).

A comparator is an object with ``fold(s)`` (the key values are compared by),
``substring`` (whether :contains/:matches are allowed) and ``order(a, b)``
(-1/0/1 on folded values, for relational). A match type is a function
``fn(ctx, cmp, value, key, tags) -> captures | bool`` registered by name;
"is", "contains", "matches" live here, "value"/"count" in the relational
extension, "regex" in its own.
"""

from __future__ import annotations

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_LOWER = {ord(c): ord(c) + 32 for c in _UPPER}


def ascii_lower(s: str) -> str:
    return s.lower() if s.isascii() else s.translate(_ASCII_LOWER)


class Octet:
    name = "i;octet"
    substring = True

    @staticmethod
    def fold(s: str) -> str:
        return s

    @staticmethod
    def order(a, b) -> int:
        # i;octet orders by the UTF-8 bytes, which is code point order.
        return (a > b) - (a < b)


class Casemap(Octet):
    name = "i;ascii-casemap"
    fold = staticmethod(ascii_lower)


_INF = float("inf")


class Numeric(Octet):
    """i;ascii-numeric: the leading digits' value; no digits means positive infinity."""

    name = "i;ascii-numeric"
    substring = False

    @staticmethod
    def fold(s: str):
        i = 0
        n = len(s)
        while i < n and "0" <= s[i] <= "9":
            i += 1
        if i == 0:
            return _INF
        return int(s[:i])


# i;ascii-numeric is registered by its extension (extensions/comparator_i_ascii_numeric.py).
COMPARATORS = {"i;octet": Octet, "i;ascii-casemap": Casemap}


# -- :matches ----------------------------------------------------------------

def compile_glob(pattern: str) -> list:
    """Split a :matches key into items: ("*",), ("?",) or a literal string."""
    items: list = []
    lit: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            lit.append(pattern[i + 1])
            i += 2
            continue
        if c == "*" or c == "?":
            if lit:
                items.append("".join(lit))
                lit = []
            items.append((c,))
        else:
            lit.append(c)
        i += 1
    if lit:
        items.append("".join(lit))
    return items


def _segments(items: list, fold) -> list[list]:
    """The parts of a pattern between its "*"s: each a list of folded literals and None ("?")."""
    segs: list[list] = [[]]
    for it in items:
        if isinstance(it, str):
            segs[-1].append(fold(it))
        elif it[0] == "?":
            segs[-1].append(None)
        else:
            segs.append([])
    return segs


def _length(seg: list) -> int:
    return sum(1 if piece is None else len(piece) for piece in seg)


def _at(fv: str, q: int, seg: list) -> bool:
    """Does `seg` match `fv` at position q (the caller knows it fits)?"""
    for piece in seg:
        if piece is None:
            q += 1
        elif fv.startswith(piece, q):
            q += len(piece)
        else:
            return False
    return True


def _find(fv: str, seg: list, start: int, limit: int, tick) -> int:
    """The first q in [start, limit] where `seg` matches, or -1."""
    lead = 0
    literal = None
    for piece in seg:
        if piece is not None:
            literal = piece
            break
        lead += 1
    if literal is None:  # only "?"s: anywhere there is room
        return start if start <= limit else -1
    q = start
    while q <= limit:
        f = fv.find(literal, q + lead)
        if f < 0:
            return -1
        q = f - lead
        if q > limit:
            return -1
        if _at(fv, q, seg):
            return q
        q += 1
        if tick is not None:
            tick()
    return -1


def glob(value: str, pattern: str, fold, tick=None) -> list[str] | None:
    """Match `value` against a :matches pattern; return the wildcard captures or None.

    Each wildcard takes as few characters as possible (leftmost-shortest, as
    Pigeonhole does). The parts between the "*"s are fixed-length (literals and
    "?"), so each can be placed at its earliest position in turn: the next "*"
    absorbs whatever an earlier placement leaves, and only the last part is tied
    to the end of the value. That is O(value x pattern) with str.find doing the
    scanning, where trying every extent of every "*" was polynomial of a higher
    degree (seconds on a 2,000-character header with "*a*a*a*a*b"). `tick` (the
    run's time budget) is called at each failed candidate position.
    """
    items = compile_glob(pattern)
    fv = fold(value)
    n = len(fv)
    segs = _segments(items, fold)
    lens = [_length(seg) for seg in segs]
    if lens[0] > n or not _at(fv, 0, segs[0]):
        return None
    positions = [0]
    stars: list[tuple[int, int]] = []
    if len(segs) == 1:
        if lens[0] != n:
            return None
    else:
        pos = lens[0]
        room = sum(lens[1:])
        for k in range(1, len(segs) - 1):
            q = _find(fv, segs[k], pos, n - room, tick)
            if q < 0:
                return None
            stars.append((pos, q))
            positions.append(q)
            pos = q + lens[k]
            room -= lens[k]
        q = n - lens[-1]
        if q < pos or not _at(fv, q, segs[-1]):
            return None
        stars.append((pos, q))
        positions.append(q)
    caps: list[tuple[int, int]] = []
    for k, seg in enumerate(segs):
        if k:
            caps.append(stars[k - 1])
        q = positions[k]
        for piece in seg:
            if piece is None:
                caps.append((q, q + 1))
                q += 1
            else:
                q += len(piece)
    return [value[a:b] for a, b in caps]


def match_is(ctx, cmp, value: str, key: str, tags):
    if cmp is Numeric:
        return cmp.fold(value) == cmp.fold(key)
    return cmp.fold(value) == cmp.fold(key)


def match_contains(ctx, cmp, value: str, key: str, tags):
    return cmp.fold(key) in cmp.fold(value)


def match_matches(ctx, cmp, value: str, key: str, tags):
    caps = glob(value, key, cmp.fold, ctx.tick if ctx is not None else None)
    if caps is None:
        return False
    return [value] + caps


MATCH_TYPES = {"is": match_is, "contains": match_contains, "matches": match_matches}


def match(ctx, tags: dict, values, keys) -> bool:
    """The generic match of RFC 5228 2.7: does any value match any key? Sets ${0}.. on success."""
    mtype = tags.get("match", "is")
    cmp = ctx.comparator(tags.get("comparator", "i;ascii-casemap"))
    if mtype == "count":
        return ctx.match_fn("count")(ctx, cmp, values, keys, tags)
    fn = ctx.match_fn(mtype)
    for value in values:
        # The time budget: one step per value (a header's values times many keys, a big body).
        ctx.ticks -= 1
        if ctx.ticks <= 0:
            ctx.tick()
        for key in keys:
            r = fn(ctx, cmp, value, key, tags)
            if r:
                if r is not True and ctx.match_vars_enabled:
                    ctx.set_match_vars(r)
                return True
    return False
