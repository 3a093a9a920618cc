"""RFC 5293: addheader and deleteheader (the edited message is the run's result message).

As in Pigeonhole, Received and Auto-Submitted cannot be deleted (a warning, then ignored).
"""

from __future__ import annotations

from fetchdeliver.sieve.matching import match
from fetchdeliver.sieve.registry import Extension
from fetchdeliver.sieve.runtime import valid_header_name

EXT = Extension("editheader", default=False)

PROTECTED = ("received", "auto-submitted")


MAX_HEADER_SIZE = 2048      # Pigeonhole's sieve_editheader_max_header_size default
MIN_MAX_HEADER_SIZE = 1024  # and the smallest it accepts


def max_header_size(options: dict) -> int:
    """[sieve] editheader_max_header_size (bytes of an added value); below 1024 is ignored."""
    try:
        size = int(options.get("editheader_max_header_size") or MAX_HEADER_SIZE)
    except (TypeError, ValueError):
        return MAX_HEADER_SIZE
    return size if size >= MIN_MAX_HEADER_SIZE else MAX_HEADER_SIZE


def value_problem(value: str, options: dict) -> str | None:
    """Why `value` cannot be added (a NUL, or over the size limit), or None."""
    if "\0" in value:
        return f"specified value `{value[:80]}' is invalid (contains NUL character)"
    size = len(value.encode("utf-8", "surrogateescape"))
    if size > max_header_size(options):
        return f"specified header value `{value[:80]}' is too large ({size} bytes)"
    return None


def _check_add(v, node, out) -> None:
    if out[3]:
        name = out[3][0]
        if v.constant(name) and not valid_header_name(name):
            v.error(f"addheader command: specified field name `{name}' is invalid", node)
    if len(out[3]) == 2 and v.constant(out[3][1]):
        why = value_problem(out[3][1], v.options)
        if why:
            v.error(f"addheader command: {why}", node)


def _check_delete(v, node, out) -> None:
    tags = out[2]
    if "last" in tags and "index" not in tags:
        v.error("deleteheader: the :last tag requires the :index tag", node)
    if out[3]:
        name = out[3][0]
        if v.constant(name) and not valid_header_name(name):
            v.error(f"deleteheader command: specified field name `{name}' is invalid", node)


def _split_fields(raw: bytes):
    """(list of (name, raw field bytes), body offset) of a message's header block."""
    msg_offset = 0
    fields: list[tuple[str, bytes]] = []
    pos = 0
    n = len(raw)
    while pos < n:
        nl = raw.find(b"\n", pos)
        end = n if nl < 0 else nl + 1
        line = raw[pos:end]
        if line in (b"\n", b"\r\n"):
            return fields, pos
        if line[:1] in (b" ", b"\t") and fields:
            name, data = fields[-1]
            fields[-1] = (name, data + line)
        else:
            colon = line.find(b":")
            if colon <= 0:
                return fields, pos
            fields.append((line[:colon].decode("utf-8", "replace").strip(), line))
        pos = end
    return fields, n if msg_offset == 0 else msg_offset


def _eol(raw: bytes) -> bytes:
    return b"\r\n" if b"\r\n" in raw[:4096] else b"\n"


def unfold(value: str) -> str:
    """The value as one line: a line break before white space is folding (RFC 5322 2.2.3) and
    goes; any other line break becomes a space."""
    if "\n" not in value and "\r" not in value:
        return value
    import re

    value = re.sub(r"\r?\n(?=[ \t])", "", value)
    return re.sub(r"\r?\n|\r", " ", value)


def _encode_value(value: str) -> str:
    value = unfold(value)
    if value.isascii():
        return value
    from email.header import Header

    return Header(value, "utf-8").encode()


def _configured(ctx, key: str) -> set[str]:
    value = ctx.env.options.get(key) or ""
    names = (value if isinstance(value, str) else " ".join(value)).split()
    return {n.lower() for n in names if valid_header_name(n)}


def forbidden(ctx, name: str, op: str) -> bool:
    """Whether `op` ("add" or "delete") on header `name` is refused: Received and Auto-Submitted
    cannot be deleted (RFC 5293 section 4.1); the options editheader_protected,
    editheader_forbid_add and editheader_forbid_delete (Pigeonhole's settings of those names)
    add more. Subject can never be protected, as in Pigeonhole."""
    n = name.lower()
    if n == "subject":
        return False
    if op == "delete" and n in PROTECTED:
        return True
    return n in _configured(ctx, "editheader_protected") or n in _configured(ctx, f"editheader_forbid_{op}")


@EXT.command("addheader", args=("string", "string"), tags={"last": None}, check=_check_add)
def addheader(ctx, node) -> None:
    name = ctx.expand(node[3][0])
    if not valid_header_name(name):
        ctx.fail(f"addheader action: specified field name `{name}' is invalid")
    if forbidden(ctx, name, "add"):
        ctx.note(f"warning: adding header field `{name}' is forbidden; ignored")
        return
    given = ctx.expand(node[3][1])
    why = value_problem(given, ctx.env.options)
    if why:
        ctx.fail(f"addheader action: {why}")
    given = unfold(given)
    value = _encode_value(given)
    raw = ctx.message.raw
    eol = _eol(raw)
    line = f"{name}: {value}".encode("utf-8") + eol
    if node[2].get("last"):
        fields, body = _split_fields(raw)
        new = raw[:body] + line + raw[body:] if fields else line + raw
    else:
        new = line + raw
    ctx.message = ctx.message.with_added_header(new, value, given)
    ctx.edited = True
    ctx.note(f"addheader {name}")


@EXT.command("deleteheader", args=(("string",), ("string", "strings")), groups=("comparator", "match"),
             tags={"index": "number", "last": None}, check=_check_delete)
def deleteheader(ctx, node) -> None:
    from fetchdeliver.message import decode_rfc2047

    tags = node[2]
    name = ctx.expand(node[3][0])
    if forbidden(ctx, name, "delete"):
        ctx.note(f"warning: deleting header field `{name}' is forbidden; ignored")
        return
    patterns = ctx.expand_list(node[3][1]) if len(node[3]) == 2 else None
    raw = ctx.message.raw
    fields, body = _split_fields(raw)
    lname = name.lower()
    positions = [i for i, (n, _) in enumerate(fields) if n.lower() == lname]
    if "index" in tags:
        idx = tags["index"]
        if tags.get("last"):
            idx = len(positions) - idx + 1
        positions = [positions[idx - 1]] if 1 <= idx <= len(positions) else []
    drop = set()
    for i in positions:
        if patterns is None:
            drop.add(i)
            continue
        data = fields[i][1].decode("utf-8", "surrogateescape")
        value = data.split(":", 1)[1].replace("\r", "").replace("\n", "").strip(" \t")
        if match(ctx, tags, [decode_rfc2047(value)], patterns):
            drop.add(i)
    if not drop:
        return
    head = b"".join(data for i, (_, data) in enumerate(fields) if i not in drop)
    ctx.message = ctx.message.with_raw(head + raw[body:])
    ctx.edited = True
    ctx.note(f"deleteheader {name}: {len(drop)} removed")
