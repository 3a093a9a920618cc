"""RFC 5703 section 3: the foreverypart loop and break."""

from __future__ import annotations

from fetchdeliver.sieve.extensions.mime import message_tree, walk_parts
from fetchdeliver.sieve.registry import Extension
from fetchdeliver.sieve.runtime import Break

EXT = Extension("foreverypart")

MAX_LOOP_DEPTH = 4  # nested foreverypart loops (Pigeonhole's limit too)


def _check_loop(v, node, out) -> None:
    if v.in_loop >= MAX_LOOP_DEPTH:
        v.error(f"the nested foreverypart loop exceeds the nesting limit (max {MAX_LOOP_DEPTH} levels)", node)


@EXT.command("foreverypart", tags={"name": "string"}, block=True, check=_check_loop)
def foreverypart(ctx, node) -> None:
    name = node[2].get("name")
    outer = ctx.mime_part
    start = outer if outer is not None else message_tree(ctx)
    depth = ctx.ext_state.get("foreverypart_depth", 0)
    if depth >= MAX_LOOP_DEPTH:
        ctx.fail(f"foreverypart: nesting too deep (more than {MAX_LOOP_DEPTH} loops)")
    ctx.ext_state["foreverypart_depth"] = depth + 1
    if outer is None:
        ctx.ext_state["mime_root"] = start  # replace (RFC 5703) edits parts of this tree
    try:
        # At the top level Pigeonhole visits the message itself first; nested loops visit the children.
        parts = list(walk_parts(start))
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
        return
    name = out[2].get("name")
    if isinstance(name, str) and name not in v.loops:
        v.error(f"the break command is not valid outside a foreverypart loop named '{name}'", node)


@EXT.command("break", tags={"name": "string"}, check=_check_break)
def break_(ctx, node) -> None:
    raise Break(node[2].get("name"))
