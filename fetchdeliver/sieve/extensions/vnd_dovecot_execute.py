"""vnd.dovecot.execute (Pigeonhole's sieve_extprograms): run a program now; :output fills a
variable that later tests read."""

from __future__ import annotations

from fetchdeliver.sieve.extensions.vnd_dovecot_pipe import FORMS, check_program, program_and_args, run_program
from fetchdeliver.sieve.registry import Extension

EXT = Extension("vnd.dovecot.execute", default=False)

EXEC_TAGS = {"input": "string", "pipe": None}


def _check(v, node, out) -> None:
    check_program(v, node, out)
    name = out[2].get("output")
    if isinstance(name, str) and v.constant(name):
        from fetchdeliver.sieve.extensions.variables import check_assignable

        check_assignable(v, name, node, "execute :output")


def input_line_ends(data: bytes, eol: str) -> bytes:
    """The program's input with its line breaks as [sieve] execute_input_eol says: "crlf" (the
    default) or "lf", as Pigeonhole's sieve_execute_input_eol."""
    if not data:
        return data
    lf = data.replace(b"\r\n", b"\n")
    return lf if str(eol).lower() == "lf" else lf.replace(b"\n", b"\r\n")


def _execute(ctx, node) -> bool:
    # Runs now, as in Pigeonhole: :output fills a variable that later tests read.
    name, args = program_and_args(ctx, node)
    tags = node[2]
    if tags.get("pipe"):
        stdin = ctx.message.raw
    elif "input" in tags:
        stdin = ctx.expand(tags["input"]).encode("utf-8")
    else:
        stdin = b""
    stdin = input_line_ends(stdin, ctx.env.options.get("execute_input_eol", "crlf"))
    out = run_program(ctx, name, args, stdin)
    if out is None:
        return False
    if "output" in tags:
        from fetchdeliver.sieve.extensions.variables import assign

        assign(ctx, ctx.expand(tags["output"]), out.decode("utf-8", "replace"))
    ctx.note(f"executed {name!r}")
    return True


@EXT.command("execute", args=FORMS, tags=EXEC_TAGS, check=_check)
def execute(ctx, node) -> None:
    if not _execute(ctx, node):
        ctx.fail(f"execute: program {ctx.expand(node[3][0])!r} failed")


@EXT.test("execute", args=FORMS, tags=EXEC_TAGS, check=_check)
def execute_test(ctx, node) -> bool:
    return _execute(ctx, node)


# :output names a variable: there only with require "variables" (as in Pigeonhole).
EXT.tag("execute", "output", "string", ext="variables")
