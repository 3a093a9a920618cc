"""RFC 5703 section 7: extracttext (inside foreverypart: a variable set from the current part)."""

from __future__ import annotations

from fetchdeliver.sieve.extensions.mime import part_text
from fetchdeliver.sieve.registry import Extension

EXT = Extension("extracttext", needs=("foreverypart",))


def _check_extract(v, node, out) -> None:
    if "variables" not in v.required:
        v.error("the extracttext command requires the variables extension", node)
    if v.in_loop <= 0:
        v.error("the extracttext command is only valid inside a foreverypart loop", node)
    if out[3] and "variables" in v.required:
        from fetchdeliver.sieve.extensions.variables import check_assignable

        check_assignable(v, out[3][0], node, "extracttext")


def _extract_tags():
    from fetchdeliver.sieve.extensions.variables import MODIFIERS

    tags = {m: None for m in MODIFIERS}
    tags["first"] = "number"
    return tags


@EXT.command("extracttext", args=("string",), tags=_extract_tags(), check=_check_extract)
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
