"""RFC 5703: mime (:mime/:anychild and :type/:subtype/:contenttype/:param on header, address,
exists), foreverypart/break and extracttext. Uses the stdlib `email` tree (imported when used)."""

from __future__ import annotations

from fetchdeliver.sieve.interpreter import Break
from fetchdeliver.sieve.registry import Extension

EXT = Extension("mime")

def _check_mime(v, node, out) -> None:
    tags = out[2]
    if "mime" not in tags:
        for t in ("anychild", "type", "subtype", "contenttype", "param"):
            if t in tags:
                v.error(f"the :{t} tag for the {node.name} test requires the :mime tag", node)
    if sum(1 for t in ("type", "subtype", "contenttype", "param") if t in tags) > 1:
        v.error(f"the {node.name} test takes only one of :type, :subtype, :contenttype and :param", node)


for _test in ("header", "address", "exists"):
    EXT.tag(_test, "mime", check=_check_mime)
    EXT.tag(_test, "anychild", check=_check_mime)
for _tag in ("type", "subtype", "contenttype"):
    EXT.tag("header", _tag, check=_check_mime)
EXT.tag("header", "param", "strings", check=_check_mime)


MAX_LOOP_DEPTH = 4  # nested foreverypart loops (Pigeonhole's limit too)


def _root(ctx):
    return ctx.message.as_email() if not ctx.edited else _parse(ctx.message.raw)


def _parse(raw: bytes):
    from email import policy
    from email.parser import BytesParser

    return BytesParser(policy=policy.compat32).parsebytes(raw)


def _parts(part):
    """`part` and all its descendants, depth first (message/rfc822 is entered; other
    message/* types such as delivery-status are leaves, as in Pigeonhole)."""
    yield part
    ctype = part.get_content_type().lower()
    if part.is_multipart() and (not ctype.startswith("message/") or ctype == "message/rfc822"):
        for sub in part.get_payload():
            yield from _parts(sub)


def part_header_values(ctx, tags, name: str, decode: bool = True) -> list[str]:
    from fetchdeliver.message import decode_rfc2047

    current = ctx.mime_part if ctx.mime_part is not None else _root(ctx)
    parts = list(_parts(current)) if tags.get("anychild") else [current]
    out: list[str] = []
    for p in parts:
        for v in p.get_all(name) or []:
            v = str(v).replace("\r", "").replace("\n", "").strip(" \t")
            out.append(decode_rfc2047(v) if decode else v)
    return out


def _split_ct(value: str) -> tuple[str, dict]:
    main, *params = value.split(";")
    pd = {}
    for p in params:
        k, sep, v = p.partition("=")
        if sep:
            v = v.strip()
            if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
                v = v[1:-1]
            pd[k.strip().lower()] = v
    return main.strip(), pd


def mime_values(ctx, tags, values: list[str]) -> list[str]:
    """Apply :type, :subtype, :contenttype or :param to Content-Type-like values."""
    if not any(t in tags for t in ("type", "subtype", "contenttype", "param")):
        return values
    out: list[str] = []
    for value in values:
        ctype, params = _split_ct(value)
        main, _, sub = ctype.partition("/")
        if "type" in tags:
            out.append(main)
        elif "subtype" in tags:
            out.append(sub)
        elif "contenttype" in tags:
            out.append(ctype)
        else:
            decoded = _decoded_params(value, params)
            for name in ctx.expand_list(tags["param"]):
                if name.lower() in decoded:
                    out.append(decoded[name.lower()])
    return out


def _decoded_params(value: str, simple: dict) -> dict:
    """Parameters with RFC 2231 continuations and charsets decoded (RFC 5703 4.2 :param)."""
    if "*" not in value:
        return simple
    from email.message import Message
    from email.utils import collapse_rfc2231_value

    m = Message()
    m["Content-Type"] = value
    out: dict = {}
    for k, v in (m.get_params(header="content-type") or [])[1:]:
        out[k.lower()] = collapse_rfc2231_value(v) if isinstance(v, tuple) else v
    return out


@EXT.command("foreverypart", tags={"name": "string"}, block=True, ext="foreverypart")
def foreverypart(ctx, node) -> None:
    name = node[2].get("name")
    outer = ctx.mime_part
    start = outer if outer is not None else _root(ctx)
    depth = ctx.ext_state.get("foreverypart_depth", 0)
    if depth >= MAX_LOOP_DEPTH:
        ctx.fail(f"foreverypart: nesting too deep (more than {MAX_LOOP_DEPTH} loops)")
    ctx.ext_state["foreverypart_depth"] = depth + 1
    if outer is None:
        ctx.ext_state["mime_root"] = start  # replace (RFC 5703) edits parts of this tree
    try:
        # At the top level Pigeonhole visits the message itself first; nested loops visit the children.
        parts = list(_parts(start))
        if outer is not None:
            parts = parts[1:]
        for p in parts:
            ctx.mime_part = p
            try:
                ctx.run_block(node[5])
            except Break as b:
                if b.name is None or b.name == name:
                    break
                raise
    finally:
        ctx.mime_part = outer
        ctx.ext_state["foreverypart_depth"] = depth


def _check_break(v, node, out) -> None:
    if v.in_loop <= 0:
        v.error("the break command is not valid outside a foreverypart loop", node)


@EXT.command("break", tags={"name": "string"}, check=_check_break, ext="foreverypart")
def break_(ctx, node) -> None:
    raise Break(node[2].get("name"))


def _check_extract(v, node, out) -> None:
    if "variables" not in v.required:
        v.error("the extracttext command requires the variables extension", node)
    if v.in_loop <= 0:
        v.error("the extracttext command is only valid inside a foreverypart loop", node)


def part_text(part, html_to_text: bool = False) -> str:
    """A text part's decoded content (text/html as plain text if asked)."""
    if part.is_multipart():
        return ""
    if part.get_content_maintype() != "text":
        return ""
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "us-ascii"
    try:
        text = payload.decode(charset, "replace")
    except LookupError:
        text = payload.decode("utf-8", "replace")
    if html_to_text and part.get_content_type().lower() == "text/html":
        from fetchdeliver.sieve.extensions.body import html_to_text as convert

        text = convert(text)
    if (part.get("content-transfer-encoding") or "").strip().lower() == "quoted-printable":
        # Pigeonhole's QP decoder writes its line breaks as CRLF.
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    return text


def _extract_tags():
    from fetchdeliver.sieve.extensions.variables import MODIFIERS

    tags = {m: None for m in MODIFIERS}
    tags["first"] = "number"
    return tags


@EXT.command("extracttext", args=("string",), tags=_extract_tags(), check=_check_extract, ext="extracttext")
def extracttext(ctx, node) -> None:
    from fetchdeliver.sieve.extensions.variables import MODIFIERS, apply_modifiers, assign

    tags = node[2]
    text = part_text(ctx.mime_part, html_to_text=True) if ctx.mime_part is not None else ""
    if "first" in tags:
        text = text[:tags["first"]]
    mods = [t for t in tags if t in MODIFIERS]
    if mods:
        text = apply_modifiers(text, mods)
    assign(ctx, node[3][0], text)
