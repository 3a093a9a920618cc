"""RFC 5173: the body test with :raw, :content and :text transforms."""

from __future__ import annotations

from fetchdeliver.sieve.html_text import html_to_text
from fetchdeliver.sieve.matching import match
from fetchdeliver.sieve.registry import Extension

EXT = Extension("body")


def _check(v, node, out) -> None:
    tags = out[2]
    if sum(1 for t in ("raw", "content", "text") if t in tags) > 1:
        v.error("the body test takes only one of :raw, :content and :text", node)


def _type_matches(ctype: str, wanted: str) -> bool:
    wanted = wanted.lower()
    if not wanted:
        return True
    if "/" in wanted:
        return ctype == wanted
    return ctype.split("/", 1)[0] == wanted


def body_values(ctx, tags) -> list[str]:
    msg = ctx.message
    if "raw" in tags:
        return [msg.body.decode("utf-8", "replace")]
    from fetchdeliver.sieve.extensions.mime import message_tree, part_text, walk_parts

    root = message_tree(ctx)
    wanted = ctx.expand_list(tags["content"]) if "content" in tags else ["text"]
    out: list[str] = []
    for part in walk_parts(root):
        ctype = part.get_content_type().lower()
        if not any(_type_matches(ctype, w) for w in wanted):
            continue
        if ctype.startswith("message/") and "content" in tags:
            # RFC 5173 5.2: only the nested message's header is searched, as one string.
            payload = part.get_payload()
            if isinstance(payload, list):
                for p in payload:
                    text = p.as_string().replace("\r\n", "\n")
                    head = text.split("\n\n", 1)[0] + "\n"
                    out.append(head.replace("\n", "\r\n"))
            else:
                out.append(str(payload))
            continue
        if part.is_multipart():
            if "content" in tags:
                # For multipart types only the prologue and epilogue are tested.
                out.append((part.preamble or "") + (part.epilogue or ""))
            continue
        text = part_text(part) if ctype.startswith("text/") else \
            (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
        if ctype == "text/html" and "content" not in tags:
            text = html_to_text(text)
        out.append(text)
    return out


@EXT.test("body", args=("strings",), groups=("comparator", "match"),
          tags={"raw": None, "content": "strings", "text": None}, check=_check)
def body(ctx, node) -> bool:
    tags = node[2]
    if not has_body(ctx.message):
        # RFC 5173 5: a header without the empty line after it has no body: every body test is false.
        return False
    # RFC 5173 6: wildcards in a body test MUST NOT set match variables (the old ones stay).
    saved = ctx.match_vars_enabled
    ctx.match_vars_enabled = False
    try:
        return match(ctx, tags, body_values(ctx, tags), ctx.expand_list(node[3][0]))
    finally:
        ctx.match_vars_enabled = saved


def has_body(message) -> bool:
    """False when the message is a header only, with no empty line after it."""
    offset = message.body_offset
    if offset < len(message.raw):
        return True
    block = message.raw[:offset]
    return block in (b"\n", b"\r\n") or block.endswith((b"\n\n", b"\r\n\r\n"))
