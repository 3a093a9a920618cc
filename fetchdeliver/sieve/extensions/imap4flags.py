"""RFC 5232: imap4flags (setflag, addflag, removeflag, hasflag, :flags on keep and fileinto)."""

from __future__ import annotations

from fetchdeliver.sieve.matching import match
from fetchdeliver.sieve.registry import Extension

EXT = Extension("imap4flags")
EXT.tag("keep", "flags", "strings")
EXT.tag("fileinto", "flags", "strings")

SYSTEM = {"\\answered": "\\Answered", "\\flagged": "\\Flagged", "\\deleted": "\\Deleted",
          "\\seen": "\\Seen", "\\draft": "\\Draft"}
_ATOM_SPECIALS = set('(){ %*"\\]')


def _valid(flag: str) -> bool:
    if flag.startswith("\\"):
        return flag.lower() in SYSTEM
    return all(32 < ord(c) < 127 and c not in _ATOM_SPECIALS for c in flag)


@EXT.service("parse_flags")
def parse_flags(strings, canonical: bool = True) -> list[str]:
    """Split space-separated flag strings into a set (order kept, case-insensitive, invalid dropped).
    canonical: system flags in their canonical case (for stores); else as written (variables)."""
    out: list[str] = []
    seen: set[str] = set()
    for s in strings:
        for flag in s.split():
            key = flag.lower()
            if key in seen or not _valid(flag):
                continue
            seen.add(key)
            out.append(SYSTEM.get(key, flag) if canonical else flag)
    return out


def _current(ctx, varname: str | None) -> list[str]:
    if varname is None:
        return ctx.flags
    from fetchdeliver.sieve.extensions.variables import get

    return parse_flags([get(ctx, varname)], canonical=False)


def _store(ctx, varname: str | None, flags: list[str]) -> None:
    if varname is None:
        ctx.flags = flags
        return
    from fetchdeliver.sieve.extensions.variables import assign

    assign(ctx, varname, " ".join(flags))


def _args(ctx, node):
    args = node[3]
    if len(args) == 2:
        return args[0], ctx.expand_list(args[1])
    return None, ctx.expand_list(args[0])


def _check(v, node, out) -> None:
    if len(out[3]) == 2 and "variables" not in v.required:
        v.error(f"the {node.name} command takes a variable name only with require \"variables\"", node)


FORMS = (("strings",), ("string", "strings"))


@EXT.command("setflag", args=FORMS, check=_check)
def setflag(ctx, node) -> None:
    var, flags = _args(ctx, node)
    # A variable keeps the flags as written, duplicates removed (RFC 5232 section 3).
    _store(ctx, var, parse_flags(flags, canonical=var is None))


@EXT.command("addflag", args=FORMS, check=_check)
def addflag(ctx, node) -> None:
    var, flags = _args(ctx, node)
    _store(ctx, var, parse_flags([" ".join(_current(ctx, var))] + list(flags), canonical=var is None))


@EXT.command("removeflag", args=FORMS, check=_check)
def removeflag(ctx, node) -> None:
    var, flags = _args(ctx, node)
    drop = {f.lower() for f in parse_flags(flags, canonical=False)}
    _store(ctx, var, [f for f in _current(ctx, var) if f.lower() not in drop])


def _check_has(v, node, out) -> None:
    if len(out[3]) == 2 and "variables" not in v.required:
        v.error("the hasflag test takes variable names only with require \"variables\"", node)


@EXT.test("hasflag", args=(("strings",), ("strings", "strings")), groups=("comparator", "match"),
          check=_check_has)
def hasflag(ctx, node) -> bool:
    args = node[3]
    if len(args) == 2:
        values: list[str] = []
        for var in args[0]:
            values.extend(_current(ctx, var))
        keys = ctx.expand_list(args[1])
    else:
        values = list(ctx.flags)
        keys = ctx.expand_list(args[0])
    if node[2].get("match") != "count":
        # Keys are flag lists too: hasflag :is "b A" is true for flags "A B" (RFC 5232 section 4).
        keys = [k for key in keys for k in key.split()]
    return match(ctx, node[2], values, keys)
