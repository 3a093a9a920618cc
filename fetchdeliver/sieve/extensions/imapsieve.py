"""RFC 6785: imapsieve, the environment items of a script run for an IMAP event.

"imap.user", "imap.email", "imap.cause" (APPEND, COPY or FLAG), "imap.mailbox" and
"imap.changedflags" come from the event (SieveEnv.event, set by
fetchdeliver.sieve.imapsieve.run_event); in delivery they are empty strings, as the RFC
requires. The event also makes "location" "MS" and "phase" "post" (environment.py), starts
imap4flags' internal variable with the message's flags, and refuses reject, ereject,
vacation and the envelope test (the interpreter and those extensions check it).
"""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("imapsieve", default=False)  # on for the scripts run by fetchdeliver.sieve.imapsieve

ITEMS = ("imap.user", "imap.email", "imap.cause", "imap.mailbox", "imap.changedflags")


@EXT.service("environment:imap.")
def item(ctx, name: str) -> str | None:
    """An imap.* environment item, or None when `name` is not one."""
    if name not in ITEMS or "imapsieve" not in ctx.requires:
        return None
    event = ctx.env.event
    if event is None:
        return ""
    if name == "imap.changedflags":
        return " ".join(event.changed_flags)
    return str(getattr(event, name[5:]) or "")
