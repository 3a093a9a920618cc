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


COMPARATORS = {"i;octet": Octet, "i;ascii-casemap": Casemap, "i;ascii-numeric": Numeric}


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


def glob(value: str, pattern: str, fold, tick=None) -> list[str] | None:
    """Match `value` against a :matches pattern; return the wildcard captures or None.

    Each wildcard takes as few characters as possible (leftmost-shortest, as
    Pigeonhole does); failed (item, position) pairs are remembered so that a
    pathological pattern stays polynomial. Polynomial can still be slow on a long
    value: `tick` (the run's time budget) is called at every step of a "*".
    """
    items = compile_glob(pattern)
    fv = fold(value)
    folded = [fold(it) if isinstance(it, str) else it for it in items]
    n = len(fv)
    m = len(folded)
    failed: set = set()
    caps: list[tuple[int, int]] = []

    def rec(pi: int, si: int) -> bool:
        if pi == m:
            return si == n
        key = (pi, si)
        if key in failed:
            return False
        it = folded[pi]
        if isinstance(it, str):
            if fv.startswith(it, si) and rec(pi + 1, si + len(it)):
                return True
        elif it[0] == "?":
            if si < n:
                caps.append((si, si + 1))
                if rec(pi + 1, si + 1):
                    return True
                caps.pop()
        else:
            # Trailing "*" takes the rest at once.
            if pi == m - 1:
                caps.append((si, n))
                return True
            nxt = folded[pi + 1]
            end = si
            while end <= n:
                if tick is not None:
                    tick()
                if isinstance(nxt, str):
                    end = fv.find(nxt, end)
                    if end < 0:
                        break
                caps.append((si, end))
                if rec(pi + 1, end):
                    return True
                caps.pop()
                end += 1
        failed.add(key)
        return False

    if rec(0, 0):
        return [value[a:b] for a, b in caps]
    return None


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
