"""vnd.dovecot.pipe, vnd.dovecot.filter, vnd.dovecot.execute (Pigeonhole's sieve_extprograms).

Programs are plain names (no "/") in the configured bin dir (Pigeonhole's sieve_pipe_bin_dir).
`pipe` is an action the engine carries out after the script; `filter` and `execute`
run while the script runs, through the environment's run_program callback (the
interpreter itself does no I/O), because their output steers the rest of the script.
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


def _run(ctx, name: str, args: list[str], stdin: bytes) -> bytes | None:
    """The program's output, or None when it failed (the reason goes to the trace)."""
    from fetchdeliver.errors import FetchdeliverError

    try:
        return ctx.env.run_program(name, args, stdin)
    except FetchdeliverError as e:
        ctx.note(f"program {name!r} failed: {e}")
        return None


def _filter(ctx, node) -> bool:
    # Runs now, as in Pigeonhole: the filtered message is what later tests and actions see.
    name, args = _program(ctx, node)
    out = _run(ctx, name, args, ctx.message.raw)
    if out is None:
        return False
    ctx.message = ctx.message.with_raw(out)
    ctx.edited = True
    ctx.note(f"filtered through {name!r}")
    return True


@EXT.command("filter", args=FORMS, check=_check, ext="vnd.dovecot.filter")
def filter_(ctx, node) -> None:
    if not _filter(ctx, node):
        ctx.fail(f"filter: program {ctx.expand(node[3][0])!r} failed")


@EXT.test("filter", args=FORMS, check=_check, ext="vnd.dovecot.filter")
def filter_test(ctx, node) -> bool:
    return _filter(ctx, node)


EXEC_TAGS = {"input": "string", "pipe": None, "output": "string"}


def _execute(ctx, node) -> bool:
    # Runs now, as in Pigeonhole: :output fills a variable that later tests read.
    name, args = _program(ctx, node)
    tags = node[2]
    if tags.get("pipe"):
        stdin = ctx.message.raw
    elif "input" in tags:
        stdin = ctx.expand(tags["input"]).encode("utf-8")
    else:
        stdin = b""
    out = _run(ctx, name, args, stdin)
    if out is None:
        return False
    if "output" in tags:
        from fetchdeliver.sieve.extensions.variables import assign

        assign(ctx, ctx.expand(tags["output"]), out.decode("utf-8", "replace"))
    ctx.note(f"executed {name!r}")
    return True


@EXT.command("execute", args=FORMS, tags=EXEC_TAGS, check=_check, ext="vnd.dovecot.execute")
def execute(ctx, node) -> None:
    if not _execute(ctx, node):
        ctx.fail(f"execute: program {ctx.expand(node[3][0])!r} failed")


@EXT.test("execute", args=FORMS, tags=EXEC_TAGS, check=_check, ext="vnd.dovecot.execute")
def execute_test(ctx, node) -> bool:
    return _execute(ctx, node)
