"""RFC 5435 enotify with the mailto method (RFC 5436): notify, valid_notify_method,
notify_method_capability; :encodeurl for set lives in the variables extension."""

from __future__ import annotations

from fetchdeliver.actions import Notify
from fetchdeliver.sieve.addresses import valid_address
from fetchdeliver.sieve.matching import match
from fetchdeliver.sieve.registry import Extension

EXT = Extension("enotify")


def _unquote(s: str) -> str:
    if "%" not in s:
        return s
    from urllib.parse import unquote

    return unquote(s)


_QCHAR = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$'()*+,;:@%")


def _qchars(s: str) -> bool:
    """RFC 6068 2: hfname and hfvalue are *qchar (unreserved, some-delims, %XX)."""
    if not set(s) <= _QCHAR:
        return False
    i = s.find("%")
    while i >= 0:
        if not all(c in "0123456789abcdefABCDEF" for c in s[i + 1:i + 3]) or len(s) < i + 3:
            return False
        i = s.find("%", i + 3)
    return True


def option_error(option: str) -> str | None:
    """Why a :options item is not "<optionname>=<value>" (RFC 5435 3.3), or None."""
    if not option:
        return "empty option specified"
    name, sep, value = option.partition("=")
    if not sep or not name or not name[0].isascii() or not name[0].isalnum() or \
            not all(c.isascii() and (c.isalnum() or c in ".-_") for c in name):
        return f"invalid option name specified in option '{option}'"
    if "\r" in value or "\n" in value:
        return f"invalid option value specified in option '{option}'"
    return None


def mailto_error(uri: str) -> str | None:
    """None when `uri` is a valid mailto: URI with at least one recipient; else why not."""
    scheme, sep, rest = uri.partition(":")
    if not sep:
        return "not a URI"
    if scheme.lower() != "mailto":
        return f"unsupported notification method '{scheme}'"
    to, _, query = rest.partition("?")
    if "," in to:
        return "a literal ',' in the recipients (write %2C)"
    recipients = [r for r in (x.strip() for x in _unquote(to).split(",")) if r]
    for pair in query.split("&") if query else []:
        hname, _, hvalue = pair.partition("=")
        if not _qchars(hname) or not _qchars(hvalue):
            return f"invalid character in header field '{pair}'"
        field = _unquote(hname)
        if not field or not all(33 <= ord(c) <= 126 and c != ":" for c in field):
            # RFC 6068 2: hfname is a header field name (RFC 5322 3.6.8: printable, no colon)
            return f"invalid header field name '{field}'"
        if field.lower() == "to":
            recipients.extend(r for r in (_unquote(x).strip() for x in hvalue.split(",")) if r)
    if not recipients:
        return "no recipients"
    for r in recipients:
        if valid_address(r):
            return f"invalid recipient '{r}'"
    return None


def _check(v, node, out) -> None:
    tags = out[2]
    imp = tags.get("importance")
    if isinstance(imp, str) and v.constant(imp) and imp not in ("1", "2", "3"):
        v.error(f"notify: invalid :importance '{imp}' (expected \"1\", \"2\" or \"3\")", node)
    method = out[3][0] if out[3] else None
    if isinstance(method, str) and v.constant(method):
        why = mailto_error(method)
        if why:
            v.error(f"notify command: invalid method '{method}': {why}", node)
    frm = tags.get("from")
    if isinstance(frm, str) and v.constant(frm) and valid_address(frm):
        v.error(f"notify command: invalid :from address '{frm}'", node)
    for option in tags.get("options") or []:
        why = option_error(option) if v.constant(option) else None
        if why:
            v.error(f"notify command: {why}", node)


@EXT.command("notify", args=("string",), check=_check,
             tags={"from": "string", "importance": "string", "options": "strings", "message": "string"})
def notify(ctx, node) -> None:
    tags = node[2]
    method = ctx.expand(node[3][0])
    why = mailto_error(method)
    if why:
        ctx.fail(f"notify action: invalid method '{method}': {why}")
    action = Notify(method, from_=ctx.expand(tags["from"]) if "from" in tags else None,
                    importance=ctx.expand(tags["importance"]) if "importance" in tags else None,
                    options=ctx.expand_list(tags.get("options", [])),
                    message=ctx.expand(tags["message"]) if "message" in tags else None)
    if "fcc" in tags:
        from fetchdeliver.sieve.extensions.fcc import attach

        attach(ctx, action, tags)
    ctx.add_action(action)


@EXT.test("valid_notify_method", args=("strings",))
def valid_notify_method(ctx, node) -> bool:
    return all(mailto_error(u) is None for u in ctx.expand_list(node[3][0]))


@EXT.test("notify_method_capability", args=("string", "string", "strings"), groups=("comparator", "match"))
def notify_method_capability(ctx, node) -> bool:
    uri, cap, keys = node[3]
    if mailto_error(ctx.expand(uri)) is not None:
        return False
    if ctx.expand(cap).lower() != "online":
        return False
    return match(ctx, node[2], ["maybe"], ctx.expand_list(keys))
