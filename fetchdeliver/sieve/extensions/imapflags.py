"""imapflags, the deprecated draft before RFC 5232 (Pigeonhole still runs it, off by default).

setflag, addflag and removeflag work on the internal flag variable only (no variable
names), as imap4flags' one-argument forms; `mark` adds \\Flagged and `unmark` removes it.
It cannot be required together with imap4flags (its conflicts).
"""

from __future__ import annotations

from fetchdeliver.sieve.extensions import imap4flags
from fetchdeliver.sieve.registry import Extension

EXT = Extension("imapflags", default=False, conflicts={
    "imap4flags": "the (deprecated) imapflags extension cannot be used together with the imap4flags extension"})

for _name in ("setflag", "addflag", "removeflag"):
    EXT.command(_name, args=("strings",))(imap4flags.EXT.commands[_name].run)


@EXT.command("mark")
def mark(ctx, node) -> None:
    ctx.flags = imap4flags.parse_flags([" ".join(ctx.flags), "\\Flagged"])


@EXT.command("unmark")
def unmark(ctx, node) -> None:
    ctx.flags = [f for f in ctx.flags if f.lower() != "\\flagged"]
