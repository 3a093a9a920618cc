"""RFC 5230 vacation (RFC 6131's :seconds: vacation_seconds.py).

The interpreter only decides: like Pigeonhole, the script's vacation action is
always reported (so `sieve test` shows it, as `sieve-test` does). Whether a
reply may really go out (RFC 5230 section 4.5: no reply to a null or system
sender, auto-submitted, list or bulk mail, or mail not addressed to the user)
and the memory of replies already sent are the outbound queue's job, at the
time the action is carried out (fetchdeliver.outbound.queue).
"""

from __future__ import annotations

from fetchdeliver.actions import Vacation
from fetchdeliver.sieve.addresses import valid_address
from fetchdeliver.sieve.registry import Extension

EXT = Extension("vacation", delivery_only=True)

DAY = 86400
MIN_PERIOD = DAY          # Pigeonhole's sieve_vacation_min_period
MAX_PERIOD = 60 * DAY     # sieve_vacation_max_period
DEFAULT_PERIOD = 7 * DAY  # sieve_vacation_default_period


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


def default_subject(ctx) -> str | None:
    """The reply's subject without :subject, from the options (Pigeonhole's settings of these names):
    vacation_default_subject_template ("%$" or "%{subject}" is the original subject) when the
    message has a subject, else vacation_default_subject; None: the outbound default ("Auto: ...")."""
    opts = ctx.env.options
    original = ctx.message.get("Subject")
    template = opts.get("vacation_default_subject_template")
    if original and template:
        return str(template).replace("%{subject}", original).replace("%$", original)
    return opts.get("vacation_default_subject") or None


@EXT.command("vacation", args=("string",), check=_check,
             tags={"days": "number", "subject": "string", "from": "string", "addresses": "strings",
                   "mime": None, "handle": "string"})
def vacation(ctx, node) -> None:
    ctx.not_for_imap_events("vacation")
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
    if subject is None:
        subject = default_subject(ctx)
    action = Vacation(reason, subject=subject, seconds=seconds, from_=frm, addresses=addresses,
                      mime=mime, handle=handle)
    if "fcc" in tags:
        from fetchdeliver.sieve.extensions.fcc import attach

        attach(ctx, action, tags)
    ctx.add_action(action)
