"""RFC 5230 vacation and RFC 6131 vacation-seconds.

The interpreter decides whether a reply is due (RFC 5230 section 4.5 and
Pigeonhole's checks); the engine keeps the memory of replies sent, keyed by
the action's handle and the sender. No Vacation action is returned when:
the envelope sender is null or a system address (MAILER-DAEMON, LISTSERV,
majordomo, owner-*, *-request, ...), the message is Auto-Submitted, a list
or bulk message (List-* headers, Precedence bulk/list/junk), or none of the
user's addresses is in To/Cc/Bcc/Resent-*. Those cases go to the trace.
"""

from __future__ import annotations

from fetchdeliver.actions import Vacation
from fetchdeliver.sieve.addresses import parse_address_list, parse_envelope_address, valid_address
from fetchdeliver.sieve.registry import Extension

EXT = Extension("vacation")
EXT.tag("vacation", "seconds", "number", ext="vacation-seconds")

DAY = 86400
MIN_PERIOD = DAY          # Pigeonhole's sieve_vacation_min_period
MAX_PERIOD = 60 * DAY     # sieve_vacation_max_period
DEFAULT_PERIOD = 7 * DAY  # sieve_vacation_default_period

SYSTEM_SENDERS = ("mailer-daemon", "listserv", "majordomo", "mailer", "mailman", "postmaster")
LIST_HEADERS = ("list-id", "list-owner", "list-unsubscribe", "list-post", "list-help",
                "list-subscribe", "list-archive")


def _check(v, node, out) -> None:
    tags = out[2]
    if "days" in tags and "seconds" in tags:
        v.error("the :days and :seconds tags of the vacation command cannot be used together", node)
    frm = tags.get("from")
    if isinstance(frm, str) and v.constant(frm):
        why = valid_address(frm)
        if why:
            v.error(f"specified :from address '{frm}' is invalid for the vacation action: {why}", node)
    for a in tags.get("addresses", []) if isinstance(tags.get("addresses"), list) else []:
        if v.constant(a) and valid_address(a):
            v.error(f"specified :addresses item '{a}' is invalid for the vacation action", node)


def _period(ctx, tags) -> int:
    opts = ctx.env.options
    lo = opts.get("vacation_min_period", MIN_PERIOD)
    hi = opts.get("vacation_max_period", MAX_PERIOD)
    if "seconds" in tags:
        seconds = tags["seconds"]
    elif "days" in tags:
        seconds = tags["days"] * DAY
    else:
        seconds = opts.get("vacation_default_period", DEFAULT_PERIOD)
    if seconds == 0 and "seconds" in tags and lo == 0:
        return 0
    return int(max(lo, min(hi, seconds)))


def why_not(ctx, addresses: list[str]) -> str | None:
    """The reason not to reply to this message, or None when a reply is due."""
    msg = ctx.message
    env = ctx.env
    sender = parse_envelope_address(env.envelope_from or "")
    if sender is None:
        return "the envelope sender is null"
    local = (sender.local or sender.all()).lower()
    if local in SYSTEM_SENDERS or local.startswith("owner-") or local.endswith("-request") \
            or local.startswith("mailer-daemon"):
        return f"the envelope sender <{sender.all()}> is a system address"
    for value in msg.get_all("auto-submitted"):
        if value.strip().lower() != "no":
            return "the message is auto-submitted"
    for name in LIST_HEADERS:
        if msg.get_all(name):
            return f"the message is from a mailing list ({name})"
    for value in msg.get_all("precedence"):
        if value.strip().lower() in ("bulk", "list", "junk"):
            return f"the message has Precedence: {value.strip()}"
    if msg.get_all("x-auto-response-suppress") and any(
            v.strip().lower() in ("all", "oof", "autoreply") for v in msg.get_all("x-auto-response-suppress")):
        return "the message asks for no automatic replies"
    ours = {a.lower() for a in addresses if a}
    for header in ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc"):
        for value in msg.get_all(header, decode=False):
            for a in parse_address_list(value):
                if a.raw is None and a.all().lower() in ours:
                    return None
    return "none of the user's addresses is in a recipient header"


@EXT.command("vacation", args=("string",), check=_check,
             tags={"days": "number", "subject": "string", "from": "string", "addresses": "strings",
                   "mime": None, "handle": "string"})
def vacation(ctx, node) -> None:
    tags = node[2]
    if ctx.vacation_done:
        ctx.fail("duplicate vacation action not allowed")
    for a in ctx.actions:
        if a.type in ("reject", "ereject"):
            ctx.fail("vacation action conflicts with the earlier reject action")
    ctx.vacation_done = True
    reason = ctx.expand(node[3][0])
    subject = ctx.expand(tags["subject"]) if "subject" in tags else None
    frm = ctx.expand(tags["from"]) if "from" in tags else None
    addresses = ctx.expand_list(tags.get("addresses", []))
    mime = bool(tags.get("mime"))
    if "handle" in tags:
        handle = ctx.expand(tags["handle"])
    else:
        handle = (reason + (subject or "") + (f"<{frm}>" if frm else "<default-from>")
                  + ("<MIME>" if mime else "<NO-MIME>"))
    seconds = _period(ctx, tags)
    own = [ctx.env.envelope_to, ctx.env.original_to] + list(addresses)
    own = [parse_envelope_address(a).all() if a and parse_envelope_address(a) else a for a in own]
    reason_not = why_not(ctx, own)
    if reason_not:
        ctx.note(f"vacation: no reply: {reason_not}")
        ctx.ext_state.setdefault("vacation_skipped", []).append(reason_not)
        return
    ctx.add_action(Vacation(reason, subject=subject, seconds=seconds, from_=frm, addresses=addresses,
                            mime=mime, handle=handle))
