"""vnd.dovecot.debug (Pigeonhole): `debug_log MESSAGE` writes a message to the script's log.

Here the message goes to the run's trace (`sieve test --trace`) and to the
module's logger at DEBUG level; it never changes what the script decides.
"""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("vnd.dovecot.debug", default=False)


@EXT.command("debug_log", args=("string",))
def debug_log(ctx, node) -> None:
    text = ctx.expand(node[3][0])
    ctx.note(f"debug_log: {text}")
    log = ctx.ext_state.get("debug_log")
    if log is not None:
        log(ctx, text)
    else:
        import logging

        logging.getLogger(__name__).debug("%s:%d: %s", ctx.file, ctx.line, text)
