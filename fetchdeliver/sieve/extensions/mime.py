"""RFC 5703 section 4: mime (:mime/:anychild and :type/:subtype/:contenttype/:param on header,
address, exists), and the MIME tree the other RFC 5703 extensions walk (foreverypart.py,
extracttext.py, replace.py, enclose.py). Uses the stdlib `email` tree (imported when used)."""

from __future__ import annotations

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


def message_tree(ctx):
    """The message as a stdlib email tree (re-parsed once a script edited it)."""
    return ctx.message.as_email() if not ctx.edited else _parse(ctx.message.raw)


def _parse(raw: bytes):
    from email import policy
    from email.parser import BytesParser

    return BytesParser(policy=policy.compat32).parsebytes(raw)


def walk_parts(part):
    """`part` and all its descendants, depth first (message/rfc822 is entered; other
    message/* types such as delivery-status are leaves, as in Pigeonhole)."""
    yield part
    ctype = part.get_content_type().lower()
    if part.is_multipart() and (not ctype.startswith("message/") or ctype == "message/rfc822"):
        for sub in part.get_payload():
            yield from walk_parts(sub)


@EXT.service("part_header_values")
def part_header_values(ctx, tags, name: str, decode: bool = True) -> list[str]:
    from fetchdeliver.message import decode_rfc2047

    current = ctx.mime_part if ctx.mime_part is not None else message_tree(ctx)
    parts = list(walk_parts(current)) if tags.get("anychild") else [current]
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


@EXT.service("mime_values")
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
        from fetchdeliver.sieve.html_text import html_to_text as convert

        text = convert(text)
    if (part.get("content-transfer-encoding") or "").strip().lower() == "quoted-printable":
        # Pigeonhole's QP decoder writes its line breaks as CRLF.
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    return text
