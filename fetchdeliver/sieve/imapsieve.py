"""Run a Sieve script for an IMAP event (RFC 6785, Pigeonhole's imapsieve): the Sieve side.

The IMAP server calls this when a message is APPENDed, COPYed/MOVEd into a mailbox or its
flags change, and carries out the answer itself (this module does no I/O):

    script = compile_for_events("/path/report-spam.sieve", options)   # +imapsieve, RFC 6785 3.11
    event = ImapEvent("COPY", "Junk", user="alice", email="alice@example.org", flags=["\\\\Seen"])
    answer = run_event(script, message, event, SieveEnv(message, options=options))
    answer.keep          # the message stays where the event put it (APPEND/COPY: stored there)
    answer.flags         # its flags now (imap4flags; "\\\\Deleted" added when it is not kept)
    answer.copies        # [(mailbox, flags)]: fileinto, a new message each (transient edits included)
    answer.outgoing      # redirect, notify, vnd.dovecot.pipe ... actions for the outbound queue
    answer.errors        # what went wrong; on a run-time error keep is True and nothing else is done

The classic use: moving a message into Junk pipes it to `rspamc learn_spam`
(`require ["imapsieve", "environment", "vnd.dovecot.pipe"]; if environment "imap.cause" "COPY"
{ pipe :copy "learn-spam"; }`).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.message import Message
    from fetchdeliver.sieve import Script, SieveEnv

CAUSES = ("APPEND", "COPY", "FLAG")


class ImapEvent:
    """What happened: the cause, the mailbox the message is in (or is being stored into), the
    IMAP user and address, the flags that changed (FLAG) and the message's flags now."""

    __slots__ = ("cause", "mailbox", "user", "email", "changed_flags", "flags")

    def __init__(self, cause: str, mailbox: str, *, user: str = "", email: str = "",
                 changed_flags=(), flags=()) -> None:
        cause = cause.upper()
        if cause not in CAUSES:
            raise ValueError(f"imap.cause must be one of {', '.join(CAUSES)}, not {cause!r}")
        self.cause = cause
        self.mailbox = mailbox
        self.user = user
        self.email = email
        self.changed_flags = list(changed_flags) if cause == "FLAG" else []
        self.flags = list(flags)


class EventAnswer:
    """What the IMAP server does after the script (see the module docstring)."""

    __slots__ = ("keep", "flags", "copies", "outgoing", "errors", "result")

    def __init__(self, keep: bool, flags: list[str], copies: list, outgoing: list, errors: list[str],
                 result) -> None:
        self.keep = keep
        self.flags = flags
        self.copies = copies
        self.outgoing = outgoing
        self.errors = errors
        self.result = result  # the SieveResult, for a trace or a log

    def __repr__(self) -> str:
        return (f"EventAnswer(keep={self.keep}, flags={self.flags}, copies={self.copies}, "
                f"outgoing={[a.type for a in self.outgoing]}, errors={self.errors})")


def event_options(options: dict | None) -> dict:
    """The compile options of an event script: imapsieve enabled, the delivery-only extensions
    (reject, ereject, vacation) refused at compile time (RFC 6785 3.11)."""
    opts = dict(options or {})
    ext = opts.get("extensions")
    items = (ext.split() if isinstance(ext, str) else list(ext)) if ext else []
    if not any(i in ("imapsieve", "+imapsieve") for i in items):
        items.append("+imapsieve" if all(i[:1] in "+-" for i in items) else "imapsieve")
    opts["extensions"] = items
    opts["imap_events"] = True
    return opts


def compile_for_events(path: str, options: dict | None = None, **kw) -> "Script":
    """compile_file() for a script run on IMAP events (cached apart from delivery's)."""
    from fetchdeliver.sieve import compile_file

    return compile_file(path, options=event_options(options), **kw)


def compile_text_for_events(text: str, name: str = "imapsieve", options: dict | None = None) -> "Script":
    from fetchdeliver.sieve import compile_text

    return compile_text(text, name, options=event_options(options))


def run_event(script: "Script", message: "Message", event: ImapEvent, env: "SieveEnv | None" = None) -> EventAnswer:
    """Run `script` for `event` on `message` (RFC 6785 section 3: keep leaves the message as the
    event made it, fileinto makes a copy, redirect/notify/pipe go out, and a message that is not
    kept is marked \\Deleted)."""
    from fetchdeliver.actions import Store
    from fetchdeliver.sieve import SieveEnv, run

    if env is None:
        env = SieveEnv(message)
    env.event = event
    env.default_mailbox = event.mailbox
    result = run(script, message, env)
    keep = False
    kept_flags: list[str] | None = None
    copies: list = []
    outgoing: list = []
    for action in result.actions:
        if isinstance(action, Store):
            if action.type == "keep" or action.mailbox == event.mailbox:
                # RFC 6785 3.1/3.2: the message as it is (header edits are transient), its flags
                # as the script left them.
                keep = True
                kept_flags = list(action.flags)
            else:
                copies.append((action.mailbox, list(action.flags),
                               result.message_for(action).raw))
        elif action.type != "discard":
            outgoing.append(action)
    if keep:
        flags = kept_flags if kept_flags is not None else list(event.flags)
    else:
        flags = list(event.flags)
        if not any(f.lower() == "\\deleted" for f in flags):
            flags.append("\\Deleted")  # RFC 6785 2.2.4
    return EventAnswer(keep, flags, copies, outgoing, list(result.errors), result)
