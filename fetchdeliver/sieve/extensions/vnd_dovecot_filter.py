"""vnd.dovecot.filter (Pigeonhole's sieve_extprograms): the message through a program, now: the
filtered message is what later tests and actions see."""

from __future__ import annotations

from fetchdeliver.sieve.extensions.vnd_dovecot_pipe import FORMS, check_program, program_and_args, run_program
from fetchdeliver.sieve.registry import Extension

EXT = Extension("vnd.dovecot.filter", default=False)


def _filter(ctx, node) -> bool:
    # Runs now, as in Pigeonhole: the filtered message is what later tests and actions see.
    name, args = program_and_args(ctx, node)
    out = run_program(ctx, name, args, ctx.message.raw)
    if out is None:
        return False
    ctx.message = ctx.message.with_raw(out)
    ctx.edited = True
    ctx.note(f"filtered through {name!r}")
    return True


@EXT.command("filter", args=FORMS, check=check_program)
def filter_(ctx, node) -> None:
    if not _filter(ctx, node):
        ctx.fail(f"filter: program {ctx.expand(node[3][0])!r} failed")


@EXT.test("filter", args=FORMS, check=check_program)
def filter_test(ctx, node) -> bool:
    return _filter(ctx, node)
