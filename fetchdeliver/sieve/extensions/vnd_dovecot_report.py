"""vnd.dovecot.report (Pigeonhole): send an abuse/feedback report (RFC 5965 ARF) about the message.

    report [:headers_only] FEEDBACK-TYPE MESSAGE ADDRESS

FEEDBACK-TYPE is an RFC 5965 type (abuse, fraud, other, virus, not-spam, ...),
MESSAGE the human-readable part, ADDRESS where the report goes. The report
encloses the message (only its header with :headers_only). The `[sieve]` option
`report_from` chooses the report's From: "postmaster" (default), "sender",
"recipient", "orig_recipient", "user_email" or an address.
"""

from __future__ import annotations

from fetchdeliver.actions import Action
from fetchdeliver.sieve.registry import Extension

EXT = Extension("vnd.dovecot.report", default=False)

FEEDBACK_TYPES = ("abuse", "fraud", "other", "virus", "auth-failure", "not-spam")


class Report(Action):
    """A feedback report to send (carried out by the outbound queue)."""

    __slots__ = ("feedback_type", "message", "address", "headers_only", "from_", "reporting_user")
    type = "report"

    def __init__(self, feedback_type: str, message: str, address: str, headers_only: bool = False,
                 from_: str | None = None, reporting_user: str | None = None) -> None:
        self.reporting_user = reporting_user  # the user's address ([sieve] user_email), if known
        self.feedback_type = feedback_type
        self.message = message
        self.address = address
        self.headers_only = headers_only
        self.from_ = from_

    def to_json(self) -> dict:
        return {"type": "report", "feedback_type": self.feedback_type, "message": self.message,
                "address": self.address, "headers_only": self.headers_only}


def _valid_type(value: str) -> bool:
    return bool(value) and all(c.isascii() and (c.isalnum() or c in "-_.") for c in value)


def _check(v, node, out) -> None:
    if len(out[3]) != 3:
        return
    ftype, _, address = out[3]
    if v.constant(ftype) and not _valid_type(ftype):
        v.error(f"report: invalid feedback type '{ftype}'", node)
    if v.constant(address):
        from fetchdeliver.sieve.addresses import valid_address

        why = valid_address(address)
        if why:
            v.error(f"report: specified address '{address}' is invalid: {why}", node)


def report_from(ctx) -> str | None:
    """The From: address the options ask for (None: the postmaster of the host)."""
    env = ctx.env
    choice = str(env.options.get("report_from", "postmaster")).strip()
    if choice == "sender":
        return env.envelope_from or None
    if choice == "recipient":
        return env.envelope_to or None
    if choice == "orig_recipient":
        return env.original_to or env.envelope_to or None
    if choice == "user_email":
        return env.options.get("user_email") or env.envelope_to or None
    if choice in ("", "postmaster", "default"):
        return None
    return choice.strip("<>")


@EXT.command("report", args=("string", "string", "string"), tags={"headers_only": None}, check=_check)
def report(ctx, node) -> None:
    from fetchdeliver.sieve.addresses import parse_address_list, valid_address

    ftype, text, address = (ctx.expand(x) for x in node[3])
    if not _valid_type(ftype):
        ctx.fail(f"report: invalid feedback type '{ftype}'")
    why = valid_address(address)
    if why:
        ctx.fail(f"report: specified address '{address}' is invalid: {why}")
    address = parse_address_list(address)[0].all()
    ctx.add_action(Report(ftype.lower(), text, address, bool(node[2].get("headers_only")), report_from(ctx),
                          ctx.env.options.get("user_email") or None))
