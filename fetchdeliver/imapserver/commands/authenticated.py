"""Commands of the authenticated state (valid when selected too): SELECT/EXAMINE (with CONDSTORE/QRESYNC
parameters, RFC 7162), CREATE (CREATE-SPECIAL-USE, RFC 6154), DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE,
LSUB, NAMESPACE, STATUS (STATUS=SIZE, DELETED, APPENDLIMIT) and IDLE (RFC 2177). LIST (LIST-EXTENDED,
LIST-STATUS, CHILDREN, SPECIAL-USE) is in list_extended.py, APPEND in append.py."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fetchdeliver.imapserver import condstore, metadata, notify, objectid
from fetchdeliver.imapserver.commands.registry import AUTHED, SELECTED, NoArgs, command, no_args
from fetchdeliver.imapserver.protocol import ParseError, Parser, decode_mailbox, encode_mailbox
from fetchdeliver.imapserver.selection import View
from fetchdeliver.storage.base import SPECIAL_USES, StorageError

if TYPE_CHECKING:
    from fetchdeliver.imapserver.session import Session

STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "HIGHESTMODSEQ",
                "DELETED", "DELETED-STORAGE", "APPENDLIMIT",   # RFC 9051, RFC 9208 (commands/quota.py), RFC 7889
                "MAILBOXID")                                   # RFC 8474 (objectid.py)


# -- SELECT / EXAMINE ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SelectArgs:
    mailbox: str
    params: condstore.SelectParams


def parse_select(p: Parser, uid: bool = False) -> SelectArgs:
    p.sp()
    name = p.mailbox()
    # QRESYNC parameters parse here; whether ENABLE QRESYNC came first is the handler's check.
    return SelectArgs(name, condstore.parse_select_params(p, True))


async def _select(s: Session, tag: str, args: SelectArgs, readonly: bool) -> None:
    name, params = args.mailbox, args.params
    if params.qresync and not s.qresync:
        raise ParseError("QRESYNC must be enabled (ENABLE QRESYNC) before SELECT (QRESYNC ...)")
    if params.condstore:
        s.condstore = True
    if s.view is not None:     # RFC 7162 3.2.11: servers offering QRESYNC always say so
        s.out(b"* OK [CLOSED] Previous mailbox closed.\r\n")
    s.close_view()
    s.saved = set()
    mbox = s.storage.open(name, readonly=readonly)
    view = View(mbox, readonly or mbox.readonly, name)
    msgs = mbox.sync()
    view.recent = ({m.uid for m in msgs if m.recent}
                   | s.server.recent.take(mbox, (m.uid for m in msgs), readonly=view.readonly))
    if not view.readonly and view.recent:
        mbox.take_recent(msgs) if hasattr(mbox, "take_recent") else None
        msgs = mbox.sync()
    view.msgs = list(msgs)
    view.uids = [m.uid for m in msgs]
    view.flags = {m.uid: m.flags for m in msgs}
    view.uidvalidity = mbox.uidvalidity
    view.synced = msgs      # the list the view now mirrors: the next command's sync has nothing to diff
    if s.rev2:     # RFC 9051: no \Recent; the mailbox's LIST line instead of RECENT and UNSEEN
        view.rev2, view.recent = True, set()
    s.view = view
    s.state = SELECTED
    view.keywords = set(mbox.keywords()) | {f for m in msgs for f in m.flags if not f.startswith("\\")}
    first_unseen = next((i for i, m in enumerate(msgs, 1) if "\\Seen" not in m.flags), None)
    lines = s.flags_lines(view) + [f"* {len(msgs)} EXISTS", f"* {len(view.recent)} RECENT"]
    if s.rev2:
        lines[-1] = '* LIST () "/" ' + encode_mailbox(name, True).decode("utf-8")
        first_unseen = None
    if first_unseen:
        lines.append(f"* OK [UNSEEN {first_unseen}] First unseen.")
    lines += [f"* OK [UIDVALIDITY {mbox.uidvalidity}] UIDs valid.",
              f"* OK [UIDNEXT {mbox.uidnext()}] Predicted next UID."]
    lines.append(f"* OK [MAILBOXID ({objectid.mailbox_id(mbox)})] Ok.")    # RFC 8474
    hms = condstore.highestmodseq(mbox, msgs)
    lines.append(f"* OK [HIGHESTMODSEQ {hms}] Highest." if hms is not None else
                 "* OK [NOMODSEQ] No permanent modsequences.")
    s.out(("\r\n".join(lines) + "\r\n").encode("utf-8", "replace"))
    if params.qresync:
        s.out(b"".join(condstore.qresync_select(view, params)))
    await s.send(f"{tag} OK [{'READ-ONLY' if view.readonly else 'READ-WRITE'}] "
                 f"{'Examine' if readonly else 'Select'} completed.\r\n".encode())


@command("SELECT", AUTHED, parse=parse_select, capabilities=("CONDSTORE", "QRESYNC"))
async def select(s: Session, tag: str, args: SelectArgs) -> None:
    await _select(s, tag, args, readonly=False)


@command("EXAMINE", AUTHED, parse=parse_select)
async def examine(s: Session, tag: str, args: SelectArgs) -> None:
    await _select(s, tag, args, readonly=True)


# -- mailboxes -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MailboxArgs:
    mailbox: str


def parse_mailbox(p: Parser, uid: bool = False) -> MailboxArgs:
    p.sp()
    name = p.mailbox()
    p.end()
    return MailboxArgs(name)


@dataclass(frozen=True)
class CreateArgs:
    mailbox: str
    uses: tuple[str, ...]     # CREATE-SPECIAL-USE (RFC 6154): the USE attributes, as given


def parse_create(p: Parser, uid: bool = False) -> CreateArgs:
    p.sp()
    name = p.mailbox()
    flags: list[str] = []
    if not p.at_end():
        p.sp()
        p.expect(b"(")
        p.expect(b"USE")
        p.sp()
        flags = p.flag_list()
        p.expect(b")")
    p.end()
    return CreateArgs(name, tuple(flags))


@command("CREATE", AUTHED, parse=parse_create, capabilities=("CREATE-SPECIAL-USE",))
async def create(s: Session, tag: str, args: CreateArgs) -> None:
    known = {u.lower() for u in SPECIAL_USES}
    for f in args.uses:
        if f.lower() not in known:
            await s.send(f"{tag} NO [USEATTR] Unknown special-use attribute {f}.\r\n".encode())
            return
    uses = tuple(next(u for u in SPECIAL_USES if u.lower() == f.lower()) for f in args.uses)
    name = args.mailbox.rstrip("/")
    if name.upper() == "INBOX":
        await s.send(f"{tag} NO [ALREADYEXISTS] INBOX already exists.\r\n".encode())
        return
    s.storage.create(name, uses)
    code = ""
    try:
        created = s.storage.open(name, readonly=True)
        try:
            code = f"[MAILBOXID ({objectid.mailbox_id(created)})] "     # RFC 8474 4.1
        finally:
            created.close()
    except StorageError:
        pass     # a \Noselect parent: no id
    await s.send(f"{tag} OK {code}Create completed.\r\n".encode())


@command("DELETE", AUTHED, parse=parse_mailbox)
async def delete(s: Session, tag: str, args: MailboxArgs) -> None:
    if s.view is not None and s.view.name == args.mailbox:
        s.close_view()
    s.storage.delete(args.mailbox)
    metadata.forget_mailbox(s, args.mailbox)      # RFC 5464 3.3: its entries go with it
    await s.send(f"{tag} OK Delete completed.\r\n".encode())


@dataclass(frozen=True)
class RenameArgs:
    old: str
    new: str


def parse_rename(p: Parser, uid: bool = False) -> RenameArgs:
    p.sp()
    old = p.mailbox()
    p.sp()
    new = p.mailbox()
    p.end()
    return RenameArgs(old, new)


@command("RENAME", AUTHED, parse=parse_rename)
async def rename(s: Session, tag: str, args: RenameArgs) -> None:
    s.storage.rename(args.old, args.new.rstrip("/"))
    metadata.rename_mailbox(s, args.old, args.new.rstrip("/"))    # RFC 5464 3.3: the entries move
    await s.send(f"{tag} OK Rename completed.\r\n".encode())


@command("SUBSCRIBE", AUTHED, parse=parse_mailbox)
async def subscribe(s: Session, tag: str, args: MailboxArgs) -> None:
    s.storage.subscribe(args.mailbox)
    await s.send(f"{tag} OK Subscribe completed.\r\n".encode())


@command("UNSUBSCRIBE", AUTHED, parse=parse_mailbox)
async def unsubscribe(s: Session, tag: str, args: MailboxArgs) -> None:
    s.storage.unsubscribe(args.mailbox)
    await s.send(f"{tag} OK Unsubscribe completed.\r\n".encode())


# -- LIST / LSUB -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ListArgs:
    lsub: bool
    reference: str
    patterns: tuple[bytes, ...]
    select_subscribed: bool = False          # LIST-EXTENDED (SUBSCRIBED) selection
    return_subscribed: bool = False          # RETURN (SUBSCRIBED)
    status_items: tuple[str, ...] | None = None   # LIST-STATUS (RFC 5819): RETURN (STATUS (items))


def parse_list(p: Parser, uid: bool = False, lsub: bool = False) -> ListArgs:
    p.sp()
    select_subscribed = False
    if not lsub and p.peek() == 40:   # LIST-EXTENDED selection options
        p.i += 1
        while not p.maybe(b")"):
            opt = p.atom().upper()
            select_subscribed |= opt == "SUBSCRIBED"
            p.maybe(b" ")
        p.sp()
    ref = decode_mailbox(p.astring(), p.utf8)
    p.sp()
    patterns = []
    if not lsub and p.peek() == 40:
        p.i += 1
        while not p.maybe(b")"):
            patterns.append(p.list_mailbox())
            p.maybe(b" ")
    else:
        patterns.append(p.list_mailbox())
    return_subscribed = False
    status_items = None
    if not lsub and not p.at_end():
        p.sp()
        p.expect(b"RETURN")
        p.sp()
        p.expect(b"(")
        while not p.maybe(b")"):
            opt = p.atom().upper()
            return_subscribed |= opt == "SUBSCRIBED"
            if opt == "STATUS":
                p.sp()
                status_items = parse_status_items(p)
            p.maybe(b" ")
    p.end()
    return ListArgs(lsub, ref, tuple(patterns), select_subscribed, return_subscribed, status_items)


def parse_lsub(p: Parser, uid: bool = False) -> ListArgs:
    return parse_list(p, uid, lsub=True)


# LIST itself (LIST-EXTENDED) is in list_extended.py; list_() here answers LSUB.
async def list_(s: Session, tag: str, args: ListArgs) -> None:
    lsub = args.lsub
    word = "LSUB" if lsub else "LIST"
    patterns = args.patterns
    if len(patterns) == 1 and patterns[0] == b"":
        await s.send(f'* {word} (\\Noselect) "/" ""\r\n{tag} OK {word} completed.\r\n'.encode())
        return
    select_subscribed, return_subscribed = args.select_subscribed, args.return_subscribed
    entries = s.storage.list()
    sub_list = s.storage.subscriptions() if (lsub or select_subscribed or return_subscribed) else []
    subs = set(sub_list)
    regexes = [list_pattern(args.reference, decode_mailbox(pat, s.utf8)) for pat in patterns]
    if lsub:
        listed = lsub_entries(entries, sub_list, regexes)
    else:
        listed = [(e.name, set(e.attributes)) for e in entries if any(r.match(e.name) for r in regexes)]
        if select_subscribed:
            listed = [(n, attrs - {"\\HasChildren", "\\HasNoChildren"}) for n, attrs in listed if n in subs]
            # RFC 5258 3.1: a subscribed name whose mailbox does not exist is listed too
            known = {e.name for e in entries}
            listed += [(n, {"\\NonExistent"}) for n in sorted(subs - known) if any(r.match(n) for r in regexes)]
    out = []
    for name, attrs in listed:
        if name in subs and (select_subscribed or return_subscribed):
            attrs.add("\\Subscribed")
        attr_text = " ".join(sorted(attrs, key=_attr_order))
        out.append(f"* {word} ({attr_text}) \"/\" ".encode() + encode_mailbox(name, s.utf8) + b"\r\n")
        if args.status_items and "\\Noselect" not in attrs and "\\NonExistent" not in attrs:
            try:
                out.append(status_line(s, name, args.status_items))
            except StorageError:
                pass     # gone meanwhile, or not readable: RFC 5819 lets the STATUS be left out
    out.append(f"{tag} OK {word} completed.\r\n".encode())
    await s.send(b"".join(out))


@command("LSUB", AUTHED, parse=parse_lsub)
async def lsub(s: Session, tag: str, args: ListArgs) -> None:
    await list_(s, tag, args)


def lsub_entries(entries: list, subscriptions: list[str], regexes: list[re.Pattern]) -> list[tuple[str, set[str]]]:
    """What LSUB lists (RFC 3501 6.3.9): every subscribed name the patterns match, whether or not the
    mailbox exists (its own attributes without the children ones where it does); and a parent the
    pattern matches (`%`) whose subscribed inferior it does not match, flagged \\Noselect when the
    parent itself is not subscribed."""
    existing = {e.name: e for e in entries}
    subscribed = set(subscriptions)
    found: dict[str, set[str]] = {}
    for name in subscriptions:
        if any(r.match(name) for r in regexes):
            e = existing.get(name)
            found[name] = set(e.attributes) - {"\\HasChildren", "\\HasNoChildren"} if e is not None else set()
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in subscribed or parent in found:
                continue
            if any(r.match(parent) and not r.match(name) for r in regexes):
                found[parent] = {"\\Noselect"}
    return sorted(found.items(), key=lambda kv: (kv[0].upper() != "INBOX", kv[0]))


def _attr_order(a: str) -> tuple:
    order = ["\\Noselect", "\\HasChildren", "\\HasNoChildren", "\\Subscribed"]
    return (order.index(a) if a in order else len(order), a)


def list_pattern(ref: str, pattern: str) -> re.Pattern:
    """The regex for a LIST reference + mailbox pattern (`*` anything, `%` one level; INBOX any case)."""
    full = ref + pattern if not pattern.startswith("/") or not ref else ref.rstrip("/") + pattern
    out = []
    for ch in full:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    rx = "".join(out)
    if full.upper().startswith("INBOX"):
        rx = "(?i:INBOX)" + "".join(out[5:])
    return re.compile(rx + r"\Z", re.DOTALL)


@command("NAMESPACE", AUTHED, parse=no_args, capabilities=("NAMESPACE",))
async def namespace(s: Session, tag: str, args: NoArgs) -> None:
    await s.send(f'* NAMESPACE (("" "/")) NIL NIL\r\n{tag} OK Namespace completed.\r\n'.encode())


# -- STATUS ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StatusArgs:
    mailbox: str
    items: tuple[str, ...]


def parse_status_items(p: Parser) -> tuple[str, ...]:
    p.expect(b"(")
    items = []
    while not p.maybe(b")"):
        items.append(p.atom().upper())
        p.maybe(b" ")
    bad = [i for i in items if i not in STATUS_ITEMS]
    if bad or not items:
        raise ParseError(f"unknown STATUS item {bad[0] if bad else '(none given)'}")
    return tuple(items)


def parse_status(p: Parser, uid: bool = False) -> StatusArgs:
    p.sp()
    name = p.mailbox()
    p.sp()
    items = parse_status_items(p)
    p.end()
    return StatusArgs(name, items)


@command("STATUS", AUTHED, parse=parse_status, capabilities=("STATUS=SIZE",))
async def status(s: Session, tag: str, args: StatusArgs) -> None:
    await s.send(status_line(s, args.mailbox, args.items) + f"{tag} OK Status completed.\r\n".encode())


def status_line(s: Session, name: str, items: tuple[str, ...]) -> bytes:
    """`* STATUS name (...)` (STATUS, and LIST-STATUS for each listed mailbox)."""
    if s.view is not None and s.view.name == name:
        mbox, own = s.view.mailbox, False
    else:
        mbox, own = s.storage.open(name, readonly=True), True
    try:
        msgs = mbox.sync()
        vals = []
        for i in items:
            if i == "MESSAGES":
                v = len(msgs)
            elif i == "RECENT":
                pending = s.server.recent.pending(mbox)
                v = sum(1 for m in msgs if m.recent or m.uid in pending)
            elif i == "UIDNEXT":
                v = mbox.uidnext()
            elif i == "UIDVALIDITY":
                v = mbox.uidvalidity
            elif i == "UNSEEN":
                v = sum(1 for m in msgs if "\\Seen" not in m.flags)
            elif i == "MAILBOXID":
                vals.append(f"MAILBOXID ({objectid.mailbox_id(mbox)})")
                continue
            elif i == "HIGHESTMODSEQ":
                v = condstore.highestmodseq(mbox, msgs) or 0
            elif i == "DELETED":      # IMAP4rev2 (RFC 9051 6.3.11)
                v = sum(1 for m in msgs if "\\Deleted" in m.flags)
            elif i == "DELETED-STORAGE":   # KiB an EXPUNGE would free (RFC 9208 section 4.2.1)
                v = (sum(mbox.size(m) for m in msgs if "\\Deleted" in m.flags) + 1023) // 1024
            elif i == "APPENDLIMIT":  # RFC 7889 4: one limit for every mailbox
                from fetchdeliver.imapserver.commands.append import append_limit

                v = append_limit(s)
            else:
                v = sum(mbox.size(m) for m in msgs)
            vals.append(f"{i} {v}")
    finally:
        if own:
            mbox.close()
    return b"* STATUS " + encode_mailbox(name, s.utf8) + f" ({' '.join(vals)})\r\n".encode()


# APPEND (MULTIAPPEND, CATENATE, APPENDLIMIT, literal8) is in commands/append.py.


# -- IDLE --------------------------------------------------------------------------------------------

@command("IDLE", AUTHED, parse=no_args, capabilities=("IDLE",))
async def idle(s: Session, tag: str, args: NoArgs) -> None:
    # The folder is watched only while a client idles: outside IDLE every command re-reads it,
    # and file events on a busy folder (a STORE renames every file) would cost the session time.
    # Watch first, then read: a change in between is not missed.
    if s.view is not None:
        s.watch(s.view.mailbox)
    notify.watch(s)          # NOTIFY (RFC 5465): wake on every mailbox the client asked about
    try:
        await _idle(s, tag)
    finally:
        s.unwatch()
        notify.unwatch(s)


async def _idle(s: Session, tag: str) -> None:
    s.changed.clear()    # before reading: news from here on wakes the loop below
    await s.sync_out()
    await notify.poll(s)
    await s.send(b"+ idling\r\n")
    reader_task = asyncio.ensure_future(s.read_line(s.cfg.idle_timeout * 3))
    try:
        while True:
            waiter = asyncio.ensure_future(s.changed.wait())
            done, _ = await asyncio.wait({reader_task, waiter}, timeout=s.cfg.idle_poll,
                                         return_when=asyncio.FIRST_COMPLETED)
            if reader_task in done:
                waiter.cancel()
                line = reader_task.result()
                if line.upper() != b"DONE":
                    await s.send(f"{tag} BAD Expected DONE.\r\n".encode())
                else:
                    await s.sync_out()
                    await s.send(f"{tag} OK Idle completed.\r\n".encode())
                return
            waiter.cancel()
            s.changed.clear()
            if s.state == SELECTED:
                await s.sync_out()
            await notify.poll(s)
    finally:
        if not reader_task.done():
            reader_task.cancel()
