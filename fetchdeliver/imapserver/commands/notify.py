"""NOTIFY (RFC 5465): `NOTIFY SET [STATUS] (filter events) ...` and `NOTIFY NONE`.

The state and the checks are in imapserver/notify.py; IDLE and NOOP deliver the notifications.
Events offered: MessageNew (with fetch-att on the selected mailbox), MessageExpunge, FlagChange,
MailboxName, SubscriptionChange; the others (AnnotationChange, MailboxMetadataChange,
ServerMetadataChange) answer `NO [BADEVENT (...)]` with the list of those offered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fetchdeliver.imapserver import notify as notifymod
from fetchdeliver.imapserver.commands.registry import AUTHED, command
from fetchdeliver.imapserver.protocol import ParseError, Parser

if TYPE_CHECKING:
    from fetchdeliver.imapserver.session import Session

KNOWN_EVENTS = {e.lower(): e for e in notifymod.EVENTS}
OTHER_EVENTS = {e.lower(): e for e in ("AnnotationChange", "MailboxMetadataChange", "ServerMetadataChange")}


@dataclass(frozen=True)
class NotifyArgs:
    groups: tuple[notifymod.Group, ...] | None     # None: NOTIFY NONE
    status: bool = False
    unsupported: tuple[str, ...] = ()               # events we do not offer (answered BADEVENT)


def _mailboxes(p: Parser) -> tuple[str, ...]:
    if p.maybe(b"("):
        names = []
        while not p.maybe(b")"):
            names.append(p.mailbox())
            p.maybe(b" ")
        if not names:
            raise ParseError("an empty mailbox list")
        return tuple(names)
    return (p.mailbox(),)


def parse_notify(p: Parser, uid: bool = False) -> NotifyArgs:
    from fetchdeliver.imapserver import fetch as fetchmod

    p.sp()
    word = p.atom().upper()
    if word == "NONE":
        p.end()
        return NotifyArgs(None)
    if word != "SET":
        raise ParseError("NOTIFY SET or NOTIFY NONE")
    p.sp()
    status = False
    if p.peek() != 40:
        if p.atom().upper() != "STATUS":
            raise ParseError("NOTIFY SET [STATUS] (filter events) ...")
        status = True
        p.sp()
    groups = []
    unsupported = []
    while True:
        p.expect(b"(")
        filt = p.atom().upper()
        if filt not in notifymod.FILTERS:
            raise ParseError(f"unknown NOTIFY filter {filt}")
        mailboxes: tuple[str, ...] = ()
        p.sp()
        if filt in ("SUBTREE", "MAILBOXES"):
            mailboxes = _mailboxes(p)
            p.sp()
        events: list[str] = []
        fetch_atts: tuple = ()
        if p.maybe(b"NONE") or p.maybe(b"none"):
            pass
        else:
            p.expect(b"(")
            while not p.maybe(b")"):
                name = p.atom()
                key = name.lower()
                if key in KNOWN_EVENTS:
                    ev = KNOWN_EVENTS[key]
                    events.append(ev)
                    if ev == "MessageNew" and p.maybe(b" ("):
                        if filt not in notifymod.SELECTED_FILTERS:
                            raise ParseError("MessageNew fetch attributes are for SELECTED only")
                        p.i -= 1
                        fetch_atts = tuple(fetchmod.parse_fetch_atts(p))
                elif key in OTHER_EVENTS:
                    unsupported.append(OTHER_EVENTS[key])
                else:
                    raise ParseError(f"unknown NOTIFY event {name}")
                p.maybe(b" ")
            if not events and not unsupported:
                raise ParseError("an empty event list (use NONE)")
            msg = {"MessageNew", "MessageExpunge"} & set(events)
            if len(msg) == 1:
                raise ParseError("MessageNew and MessageExpunge go together (RFC 5465 5)")
            if "FlagChange" in events and not msg:
                raise ParseError("FlagChange needs MessageNew and MessageExpunge (RFC 5465 5)")
            if filt in notifymod.SELECTED_FILTERS and set(events) & set(notifymod.MAILBOX_EVENTS):
                raise ParseError("MailboxName and SubscriptionChange are not for the selected mailbox")
        p.expect(b")")
        groups.append(notifymod.Group(filt, mailboxes, tuple(events), fetch_atts))
        if p.at_end():
            break
        p.sp()
    if sum(1 for g in groups if g.filter in notifymod.SELECTED_FILTERS) > 1:
        raise ParseError("SELECTED or SELECTED-DELAYED, once")
    return NotifyArgs(tuple(groups), status, tuple(unsupported))


@command("NOTIFY", AUTHED, parse=parse_notify, capabilities=("NOTIFY",))
async def notify(s: Session, tag: str, args: NotifyArgs) -> None:
    notifymod.unwatch(s)
    if args.groups is None:
        s.notify_state = None
        await s.send(f"{tag} OK NOTIFY completed.\r\n".encode())
        return
    if args.unsupported:
        offered = " ".join(notifymod.EVENTS)
        await s.send(f"{tag} NO [BADEVENT ({offered})] Not offered: {' '.join(args.unsupported)}.\r\n".encode())
        return
    st = notifymod.NotifyState(list(args.groups))
    s.out(b"".join(notifymod.snapshot(s, st, send_status=args.status)))
    s.notify_state = st
    await s.send(f"{tag} OK NOTIFY completed.\r\n".encode())
