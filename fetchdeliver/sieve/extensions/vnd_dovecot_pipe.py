"""vnd.dovecot.pipe (Pigeonhole's sieve_extprograms; vnd_dovecot_filter.py and vnd_dovecot_execute.py
use the helpers here).

Programs are plain names (no "/") in the configured bin dir (Pigeonhole's sieve_pipe_bin_dir).
`pipe` is an action the engine carries out after the script; `filter` and `execute`
run while the script runs, through the environment's run_program callback (the
interpreter itself does no I/O), because their output steers the rest of the script.
"""

from __future__ import annotations

from fetchdeliver.actions import Program
from fetchdeliver.sieve.registry import Extension

EXT = Extension("vnd.dovecot.pipe", default=False)


def valid_program(name: str) -> bool:
    """A program name is a plain name, valid as a Sieve script name (as in Pigeonhole)."""
    from fetchdeliver.sieve.extensions.include import valid_script_name

    return valid_script_name(name)


def check_program(v, node, out) -> None:
    """The compile-time check of pipe, filter and execute: a constant program name must be plain."""
    name = out[3][0] if out[3] else None
    if isinstance(name, str) and v.constant(name) and not valid_program(name):
        v.error(f"{node.name}: invalid program name '{name}' (a plain name, no '/')", node)
    if "input" in out[2] and "pipe" in out[2]:
        v.error(f"{node.name}: the :input and :pipe tags cannot be used together", node)


FORMS = (("string",), ("string", "strings"))


def program_and_args(ctx, node):
    """The program name and its arguments, expanded; a run-time error for a name that is not plain."""
    name = ctx.expand(node[3][0])
    if not valid_program(name):
        ctx.fail(f"{node[0]}: invalid program name '{name}'")
    args = ctx.expand_list(node[3][1]) if len(node[3]) == 2 else []
    return name, args


@EXT.command("pipe", args=FORMS, tags={"try": None}, check=check_program)
def pipe(ctx, node) -> None:
    name, args = program_and_args(ctx, node)
    copy = bool(node[2].get("copy"))
    ctx.add_action(Program(name, args, kind="pipe", copy=copy), cancels_keep=not copy)


EXT.tag("pipe", "copy", ext="copy")


def run_program(ctx, name: str, args: list[str], stdin: bytes) -> bytes | None:
    """The program's output, or None when it failed (the reason goes to the trace)."""
    from fetchdeliver.errors import FetchdeliverError

    try:
        return ctx.env.run_program(name, args, stdin)
    except FetchdeliverError as e:
        ctx.note(f"program {name!r} failed: {e}")
        return None
