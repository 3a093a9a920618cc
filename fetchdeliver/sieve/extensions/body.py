"""RFC 5173: the body test with :raw, :content and :text transforms."""

from __future__ import annotations

from fetchdeliver.sieve.matching import match
from fetchdeliver.sieve.registry import Extension

EXT = Extension("body")


def _check(v, node, out) -> None:
    tags = out[2]
    if sum(1 for t in ("raw", "content", "text") if t in tags) > 1:
        v.error("the body test takes only one of :raw, :content and :text", node)
    if tags.get("match") == "count":
        v.error("the body test does not support the :count match type", node)


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


def _drop_scripts(html: str) -> str:
    """Each <script ...>...</script > and <style ...>...</style> block as one space.

    What re.sub(r"(?is)<(script|style)\\b.*?</\\1\\s*>", " ", html) does, in linear time: that
    regex rescans to the end for every opening tag without a closing one (minutes on a few
    hundred kilobytes of "<script>" from a hostile sender, in one call that holds the GIL).
    """
    from fetchdeliver.sieve.matching import ascii_lower

    low = ascii_lower(html)
    n = len(low)
    out: list[str] = []
    pos = 0      # html[pos:] is not yet written
    scan = 0     # where to look for the next opening tag
    dead: set[str] = set()   # names with no closing tag left: later openings cannot match either
    while True:
        best = -1
        name = ""
        for cand in ("script", "style"):
            if cand in dead:
                continue
            i = low.find("<" + cand, scan)
            while i >= 0 and i + 1 + len(cand) < n and _is_word(low[i + 1 + len(cand)]):
                i = low.find("<" + cand, i + 1)
            if i >= 0 and (best < 0 or i < best):
                best, name = i, cand
        if best < 0:
            break
        closing = "</" + name
        j = low.find(closing, best + 1 + len(name))
        end = -1
        while j >= 0:
            k = j + len(closing)
            while k < n and low[k].isspace():
                k += 1
            if k < n and low[k] == ">":
                end = k + 1
                break
            j = low.find(closing, j + 1)
        if end < 0:
            dead.add(name)
            scan = best + 1
            continue
        out.append(html[pos:best])
        out.append(" ")
        pos = scan = end
    out.append(html[pos:])
    return "".join(out)


def _drop_tags(html: str) -> str:
    """Each <...> as one space: re.sub(r"(?s)<[^>]*>", " ", html) in linear time."""
    out: list[str] = []
    pos = 0
    while True:
        i = html.find("<", pos)
        if i < 0:
            break
        j = html.find(">", i + 1)
        if j < 0:
            break    # no ">" after this "<": no tag can start here or later
        out.append(html[pos:i])
        out.append(" ")
        pos = j + 1
    out.append(html[pos:])
    return "".join(out)


def html_to_text(html: str) -> str:
    import html as h

    return h.unescape(_drop_tags(_drop_scripts(html)))


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
    from fetchdeliver.sieve.extensions.mime import _parts, _root, part_text

    root = _root(ctx)
    wanted = ctx.expand_list(tags["content"]) if "content" in tags else ["text"]
    out: list[str] = []
    for part in _parts(root):
        ctype = part.get_content_type().lower()
        if not any(_type_matches(ctype, w) for w in wanted):
            continue
        if ctype.startswith("message/") and "content" in tags:
            payload = part.get_payload()
            if isinstance(payload, list):
                out.append("\r\n".join(p.as_string() for p in payload))
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
    return match(ctx, tags, body_values(ctx, tags), ctx.expand_list(node[3][0]))
