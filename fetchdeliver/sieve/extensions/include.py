"""RFC 6609: include (:personal, :global, :once, :optional), return and global variables.

Included scripts are found and compiled with the including script (like
Pigeonhole: a missing script without :optional or a circular include is a
compile error); the run-time part only switches scope.
"""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension
from fetchdeliver.sieve.runtime import Return

EXT = Extension("include")
EXT.namespace("global")  # ${global.NAME} (RFC 6609 section 3.5)

MAX_NESTING = 10  # Pigeonhole's sieve_include_max_nesting_depth


def valid_script_name(name: str) -> bool:
    """A script name (RFC 6609 section 2 via RFC 5804 1.6): no "/", no control characters
    (U+0000-001F, U+007F-009F), no line or paragraph separator (U+2028, U+2029)."""
    if not name or "/" in name or name in (".", ".."):
        return False
    return not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in name)


def _check(v, node, out) -> None:
    tags = out[2]
    if "personal" in tags and "global" in tags:
        v.error("include: the :personal and :global tags cannot be used together", node)
    if not out[3]:
        return
    name = out[3][0]
    if "${" in name and "variables" in v.required:
        v.error("include: the script name must be a constant string", node)
        return
    if not valid_script_name(name):
        v.error(f"include: invalid script name '{name}'", node)
        return
    location = "global" if "global" in tags else "personal"
    if v.locate is not None and not tags.get("optional") and v.locate(location, name) is None:
        v.error(f"included {location} script '{name}' does not exist", node)
        return
    v.includes.append((location, name, bool(tags.get("optional")), node.line, node.column,
                       bool(tags.get("once"))))


@EXT.command("include", args=("string",), check=_check,
             tags={"personal": None, "global": None, "once": None, "optional": None})
def include(ctx, node) -> None:
    tags = node[2]
    name = node[3][0]
    location = "global" if tags.get("global") else "personal"
    key = f"{location}:{name}"
    entry = ctx.script.includes.get(key)
    if entry is None:
        ctx.note(f"include {key}: missing, :optional")
        return
    done = ctx.ext_state.setdefault("included", set())
    if tags.get("once") and key in done:
        return
    done.add(key)
    stack = ctx.ext_state.setdefault("include_stack", [])
    if key in stack:
        ctx.fail(f"include: circular include of {location} script '{name}'")
    if len(stack) >= MAX_NESTING:
        ctx.fail(f"include: nesting too deep (more than {MAX_NESTING} levels)")
    saved = (ctx.file, ctx.line, ctx.variables, ctx.requires, ctx.vars_enabled, ctx.match_vars_enabled,
             ctx.match_values, ctx.ext_state.get("globals", set()))
    stack.append(key)
    ctx.file = entry["name"]
    ctx.variables = {}
    ctx.requires = frozenset(entry["requires"])
    ctx.vars_enabled = ctx.match_vars_enabled = "variables" in ctx.requires
    ctx.match_values = []
    ctx.ext_state["globals"] = set()
    ctx.note(f"include {key}")
    try:
        ctx.run_block(entry["code"])
    except Return:
        pass
    finally:
        stack.pop()
        (ctx.file, ctx.line, ctx.variables, ctx.requires, ctx.vars_enabled, ctx.match_vars_enabled,
         ctx.match_values, ctx.ext_state["globals"]) = saved


@EXT.command("return")
def return_(ctx, node) -> None:
    ctx.note("return")
    raise Return()


def _check_global(v, node, out) -> None:
    if "variables" not in v.required:
        v.error("the global command requires the variables extension", node)
    from fetchdeliver.sieve.extensions.variables import valid_identifier

    for name in (out[3][0] if out[3] else []):
        if not valid_identifier(name):
            v.error(f"global: invalid variable name '{name}'", node)


@EXT.command("global", args=("strings",), check=_check_global)
def global_(ctx, node) -> None:
    names = ctx.ext_state.setdefault("globals", set())
    for name in node[3][0]:
        names.add(name.lower())
