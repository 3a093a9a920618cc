"""POP3 UIDLs from a Dovecot-style `pop3_uidl_format`, so that a user moving between Dovecot's pop3d
and ours is not sent every message again.

Dovecot expands the format with its var_expand rules: `%[0][WIDTH][MODIFIERS]VAR`, where a leading
0 pads the value with zeros to WIDTH (without it, WIDTH keeps the first WIDTH characters) and the
modifier X turns a number into (lower-case) hexadecimal. The default `%08Xu%08Xv` is the UID and the
UIDVALIDITY, eight hex digits each. Variables:

    %u  the message's UID            %v  the mailbox's UIDVALIDITY
    %f  the Maildir file name up to ":2," (Dovecot's %f)
    %g  the same as %f (Dovecot's GUID of a Maildir message)     %%  a percent sign
"""

from __future__ import annotations

import re

from fetchdeliver.errors import ConfigError

_SPEC = re.compile(r"%(0?)(\d*)([LUX]*)(.)")
VARIABLES = "uvfg%"


def check_format(fmt: str) -> None:
    """ValueError naming the first part of `fmt` that cannot be expanded."""
    pos = 0
    for m in _SPEC.finditer(fmt):
        if "%" in fmt[pos:m.start()]:
            raise ValueError(f"incomplete % sequence in {fmt!r}")
        if m.group(4) not in VARIABLES:
            raise ValueError(f"unknown variable %{m.group(4)} in {fmt!r} (known: %u UID, %v UIDVALIDITY, "
                             "%f file name, %g the same, %% a percent sign)")
        pos = m.end()
    if "%" in fmt[pos:]:
        raise ValueError(f"incomplete % sequence at the end of {fmt!r}")
    if not any(m.group(4) in "ufg" for m in _SPEC.finditer(fmt)):
        raise ValueError(f"{fmt!r} names no variable that differs between messages (%u, %f or %g)")


def _file_name(msg) -> str:
    """The Maildir file name without ":2,flags" (",S=...,W=..." kept, as Dovecot does), or the UID
    where the store has no files."""
    name = getattr(getattr(msg, "handle", None), "name", None)
    if not isinstance(name, str):
        return str(msg.uid)
    return name.split(":", 1)[0]


def compile_format(fmt: str):
    """A function (msg, uidvalidity) -> UIDL string for the format (checked: ConfigError if bad)."""
    try:
        check_format(fmt)
    except ValueError as e:
        raise ConfigError(str(e), key="pop3.uidl_format") from None
    if fmt == "%08Xu%08Xv":   # the default, and the hot path of a 10,000-message UIDL
        return lambda msg, uidvalidity: "%08x%08x" % (msg.uid, uidvalidity)
    parts: list = []
    pos = 0
    for m in _SPEC.finditer(fmt):
        if m.start() > pos:
            parts.append(fmt[pos:m.start()])
        pos = m.end()
        zero, width, mods, var = m.group(1), m.group(2), m.group(3), m.group(4)
        if var == "%":
            parts.append("%")
            continue
        parts.append((var, bool(zero), int(width) if width else 0, mods))
    if pos < len(fmt):
        parts.append(fmt[pos:])

    def expand(msg, uidvalidity: int) -> str:
        out = []
        for p in parts:
            if isinstance(p, str):
                out.append(p)
                continue
            var, zero, width, mods = p
            value: int | str
            value = msg.uid if var == "u" else uidvalidity if var == "v" else _file_name(msg)
            if "X" in mods:
                try:
                    value = "%x" % int(value)
                except ValueError:
                    value = str(value).encode().hex()
            value = str(value)
            if "L" in mods:
                value = value.lower()
            if "U" in mods:
                value = value.upper()
            if width:
                value = value.rjust(width, "0") if zero else value[:width]
            out.append(value)
        return "".join(out)

    return expand
