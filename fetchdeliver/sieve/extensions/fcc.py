"""RFC 8580: fcc, a copy of the message vacation or notify sends, filed into a mailbox.

    vacation :fcc "Sent" :flags "\\\\Seen" "I am away";
    notify :fcc "Notifications" :create "mailto:me@example.org";

The action carries ``fcc = {"mailbox", "flags", "create"}``; the engine files the
generated message there once it is queued (a copy that cannot be filed is
logged and does not fail the message, RFC 8580 section 4). With special-use or
mailboxid, :specialuse / :mailboxid choose the mailbox as for fileinto.
"""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("fcc", default=False)

def _check(v, node, out) -> None:
    tags = out[2]
    extra = [t for t in ("flags", "create", "specialuse", "mailboxid") if t in tags]
    if extra and "fcc" not in tags:
        v.error(f"the :{extra[0]} tag of the {node.name} command needs :fcc", node)
    needs = {"flags": "imap4flags", "create": "mailbox", "specialuse": "special-use", "mailboxid": "mailboxid"}
    for t in extra:
        if needs[t] not in v.required:
            v.error(f"the :{t} tag of the {node.name} command needs require \"{needs[t]}\"", node)
    fcc = tags.get("fcc")
    if isinstance(fcc, str) and v.constant(fcc):
        from fetchdeliver.sieve.mailbox_names import check_mailbox_name

        check_mailbox_name(v, fcc, node, ":fcc")


TAG_TYPES = {"fcc": "string", "flags": "strings", "create": None, "specialuse": "string", "mailboxid": "string"}
for _cmd in ("vacation", "notify"):
    for _tag, _type in TAG_TYPES.items():
        EXT.tag(_cmd, _tag, _type, check=_check)


def attach(ctx, action, tags: dict) -> None:
    """Give `action` (Vacation or Notify) its fcc target from the command's tags."""
    if "fcc" not in tags:
        return
    mailbox = ctx.expand(tags["fcc"])
    if "specialuse" in tags:
        from fetchdeliver.sieve.extensions.special_use import resolve

        mailbox = resolve(ctx, tags, mailbox)
    if "mailboxid" in tags:
        from fetchdeliver.sieve.extensions.mailboxid import resolve as resolve_id

        mailbox = resolve_id(ctx, tags, mailbox)
    flags: list[str] = []
    if "flags" in tags:
        from fetchdeliver.sieve.extensions.imap4flags import parse_flags

        flags = parse_flags(ctx.expand_list(tags["flags"]))
    action.fcc = {"mailbox": mailbox, "flags": flags, "create": bool(tags.get("create"))}
