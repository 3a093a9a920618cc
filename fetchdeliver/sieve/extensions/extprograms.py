"""vnd.dovecot.pipe, vnd.dovecot.filter, vnd.dovecot.execute (Pigeonhole's sieve_extprograms).

Programs are plain names (no "/"); the engine runs them from the configured bin dir.
"""

from __future__ import annotations

from fetchdeliver.actions import Program
from fetchdeliver.sieve.registry import Extension

EXT = Extension("vnd.dovecot.pipe")


def valid_program(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..") and \
        all(ord(c) >= 32 for c in name)


def _check(v, node, out) -> None:
    name = out[3][0] if out[3] else None
    if isinstance(name, str) and v.constant(name) and not valid_program(name):
        v.error(f"{node.name}: invalid program name '{name}' (a plain name, no '/')", node)
    if "input" in out[2] and "pipe" in out[2]:
        v.error(f"{node.name}: the :input and :pipe tags cannot be used together", node)


FORMS = (("string",), ("string", "strings"))


def _program(ctx, node):
    name = ctx.expand(node[3][0])
    if not valid_program(name):
        ctx.fail(f"{node[0]}: invalid program name '{name}'")
    args = ctx.expand_list(node[3][1]) if len(node[3]) == 2 else []
    return name, args


@EXT.command("pipe", args=FORMS, tags={"try": None}, check=_check)
def pipe(ctx, node) -> None:
    name, args = _program(ctx, node)
    copy = bool(node[2].get("copy"))
    ctx.add_action(Program(name, args, kind="pipe", copy=copy), cancels_keep=not copy)


EXT.tag("pipe", "copy", ext="copy")


@EXT.command("filter", args=FORMS, check=_check, ext="vnd.dovecot.filter")
def filter_(ctx, node) -> None:
    name, args = _program(ctx, node)
    ctx.add_action(Program(name, args, kind="filter"))


@EXT.test("filter", args=FORMS, check=_check, ext="vnd.dovecot.filter")
def filter_test(ctx, node) -> bool:
    filter_(ctx, node)
    return True


@EXT.command("execute", args=FORMS, tags={"input": "string", "pipe": None, "output": "string"},
             check=_check, ext="vnd.dovecot.execute")
def execute(ctx, node) -> None:
    name, args = _program(ctx, node)
    ctx.add_action(Program(name, args, kind="execute"))


@EXT.test("execute", args=FORMS, tags={"input": "string", "pipe": None, "output": "string"},
          check=_check, ext="vnd.dovecot.execute")
def execute_test(ctx, node) -> bool:
    execute(ctx, node)
    return True
