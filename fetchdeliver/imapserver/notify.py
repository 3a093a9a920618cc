"""NOTIFY (RFC 5465): what a session asked to hear about, and the changes it is told of.

`NOTIFY SET` (commands/notify.py) stores a `NotifyState` on the session. The server tells the client
while it idles (IDLE wakes on a file change in any mailbox the filters name, or every `idle_poll`
seconds) and at NOOP:

- the selected mailbox: the usual EXISTS / EXPUNGE / FETCH FLAGS, and with `MessageNew (fetch-att)`
  a FETCH of those attributes for each new message;
- other mailboxes (PERSONAL, INBOXES, SUBSCRIBED, SUBTREE, MAILBOXES): a `STATUS name (MESSAGES n
  UIDNEXT n UIDVALIDITY n UNSEEN n [HIGHESTMODSEQ n])` (HIGHESTMODSEQ where the store keeps it)
  when a message came or went (MessageNew/MessageExpunge) or, with FlagChange, when UNSEEN or
  HIGHESTMODSEQ moved;
- MailboxName: `LIST () "/" name` for a new mailbox, `LIST (\\NonExistent) "/" name` for a deleted
  one, and `LIST () "/" new ("OLDNAME" ("old"))` for a renamed one (recognised by its MAILBOXID);
- SubscriptionChange: `LIST (\\Subscribed) "/" name`, or `LIST () "/" name` when unsubscribed.

The state is a snapshot of each mailbox's counters, the mailbox list and the subscriptions; each
check compares the store with it (the store is the change feed: UIDNEXT, MESSAGES and HIGHESTMODSEQ
only move when something changed). Changes this session made itself are reported too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fetchdeliver.imapserver.protocol import encode_mailbox
from fetchdeliver.storage.base import StorageError

if TYPE_CHECKING:
    from fetchdeliver.imapserver.session import Session

MESSAGE_EVENTS = ("MessageNew", "MessageExpunge", "FlagChange")
MAILBOX_EVENTS = ("MailboxName", "SubscriptionChange")
EVENTS = MESSAGE_EVENTS + MAILBOX_EVENTS
SELECTED_FILTERS = ("SELECTED", "SELECTED-DELAYED")
FILTERS = SELECTED_FILTERS + ("INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "MAILBOXES")


@dataclass(frozen=True)
class Group:
    """One `(filter events)` of NOTIFY SET."""
    filter: str
    mailboxes: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    fetch_atts: tuple = ()           # MessageNew (fetch-att ...), SELECTED filters only


@dataclass
class NotifyState:
    groups: list[Group]
    counters: dict[str, tuple] = field(default_factory=dict)      # name -> (messages, uidnext, unseen, hms, validity)
    ids: dict[str, str] = field(default_factory=dict)             # name -> MAILBOXID, for renames
    names: set[str] | None = None
    subscribed: set[str] | None = None
    selected: tuple | None = None      # (name, uidvalidity, highest UID told of)
    tokens: list = field(default_factory=list)

    def selected_events(self) -> Group | None:
        return next((g for g in self.groups if g.filter in SELECTED_FILTERS), None)

    def wants(self, event: str) -> bool:
        return any(event in g.events for g in self.groups if g.filter not in SELECTED_FILTERS)


def state(s: Session) -> NotifyState | None:
    return getattr(s, "notify_state", None)


def _covered(s: Session, st: NotifyState, names: list[str], subs: set[str]) -> dict[str, set[str]]:
    """mailbox name -> the message events asked for it (non-selected filters)."""
    out: dict[str, set[str]] = {}
    for g in st.groups:
        ev = {e for e in g.events if e in MESSAGE_EVENTS}
        if g.filter in SELECTED_FILTERS or not ev:
            continue
        if g.filter == "PERSONAL":
            hit = names
        elif g.filter == "INBOXES":
            hit = [n for n in names if n.upper() == "INBOX"]
        elif g.filter == "SUBSCRIBED":
            hit = [n for n in names if n in subs]
        elif g.filter == "MAILBOXES":
            hit = [n for n in names if n in g.mailboxes]
        else:   # SUBTREE
            hit = [n for n in names if any(n == m or n.startswith(m + "/") for m in g.mailboxes)]
        for n in hit:
            out.setdefault(n, set()).update(ev)
    return out


def _listing(s: Session) -> tuple[list[str], set[str]]:
    names = [e.name for e in s.storage.list() if "\\Noselect" not in e.attributes
             and "\\NonExistent" not in e.attributes]
    return names, set(s.storage.subscriptions())


def _counters(s: Session, name: str) -> tuple[tuple, str] | None:
    from fetchdeliver.imapserver import condstore, objectid

    try:
        mbox = s.storage.open(name, readonly=True)
    except StorageError:
        return None
    try:
        msgs = mbox.sync()
        unseen = sum(1 for m in msgs if "\\Seen" not in m.flags)
        hms = condstore.highestmodseq(mbox, msgs) or 0
        return (len(msgs), mbox.uidnext(), unseen, hms, mbox.uidvalidity), objectid.mailbox_id(mbox)
    finally:
        mbox.close()


def _status_line(s: Session, name: str, c: tuple) -> bytes:
    items = f"MESSAGES {c[0]} UIDNEXT {c[1]} UIDVALIDITY {c[4]} UNSEEN {c[2]}"
    if c[3]:     # the store keeps MODSEQs: as Dovecot, whether or not CONDSTORE was enabled
        items += f" HIGHESTMODSEQ {c[3]}"
    return b"* STATUS " + encode_mailbox(name) + f" ({items})\r\n".encode()


def snapshot(s: Session, st: NotifyState, send_status: bool = False) -> list[bytes]:
    """Take the first picture (NOTIFY SET); with STATUS, the STATUS lines of every mailbox covered."""
    names, subs = _listing(s)
    st.names, st.subscribed = set(names), subs
    out = []
    selected = s.view.name if s.view is not None else None
    for name in _covered(s, st, names, subs):
        got = _counters(s, name)
        if got is None:
            continue
        st.counters[name], st.ids[name] = got
        if send_status and name != selected:
            out.append(_status_line(s, name, got[0]))
    if st.wants("MailboxName"):     # a rename is told by the id that moved to a new name
        for name in names:
            if name not in st.ids:
                mid = _mailbox_id(s, name)
                if mid:
                    st.ids[name] = mid
    _note_selected(s, st)
    return out


def _mailbox_id(s: Session, name: str) -> str | None:
    from fetchdeliver.imapserver import objectid

    try:
        mbox = s.storage.open(name, readonly=True)
    except StorageError:
        return None
    try:
        return objectid.mailbox_id(mbox)
    finally:
        mbox.close()


def _note_selected(s: Session, st: NotifyState) -> None:
    v = s.view
    if v is None:
        st.selected = None
    elif st.selected is None or st.selected[:2] != (v.name, v.uidvalidity):
        st.selected = (v.name, v.uidvalidity, v.uids[-1] if v.uids else 0)


def changes(s: Session, st: NotifyState) -> list[bytes]:
    """What changed since the last check, as untagged responses (and the new snapshot taken)."""
    out: list[bytes] = []
    names, subs = _listing(s)
    old_names = st.names or set()
    now = set(names)
    new_ids: dict[str, str] = {}
    if st.wants("MailboxName"):
        gone = old_names - now
        born = now - old_names
        by_id = {st.ids.get(n): n for n in gone if st.ids.get(n)}
        for name in sorted(born):
            mid = _mailbox_id(s, name)
            oldname = None
            if mid is not None:
                new_ids[name] = mid
                oldname = by_id.pop(mid, None)
            line = b'* LIST () "/" ' + encode_mailbox(name)
            if oldname is not None:
                line += b' ("OLDNAME" (' + encode_mailbox(oldname) + b"))"
            out.append(line + b"\r\n")
        for name in sorted(set(by_id.values()) | {n for n in gone if not st.ids.get(n)}):
            out.append(b'* LIST (\\NonExistent) "/" ' + encode_mailbox(name) + b"\r\n")
        for name in gone:
            st.ids.pop(name, None)
        st.ids.update(new_ids)
    if st.wants("SubscriptionChange"):
        old_subs = st.subscribed or set()
        for name in sorted(subs - old_subs):
            out.append(b'* LIST (\\Subscribed) "/" ' + encode_mailbox(name) + b"\r\n")
        for name in sorted(old_subs - subs):
            out.append(b'* LIST () "/" ' + encode_mailbox(name) + b"\r\n")
    st.names, st.subscribed = now, subs
    selected = s.view.name if s.view is not None else None
    covered = _covered(s, st, names, subs)
    for name, events in covered.items():
        got = _counters(s, name)
        if got is None:
            continue
        c, mid = got
        before = st.counters.get(name)
        st.counters[name], st.ids[name] = c, mid
        if name == selected or before is None and name in old_names:
            continue
        if before is None:
            before = c if c[0] == 0 else (0, 0, 0, 0, c[4])   # a new mailbox: news only if it has mail
        moved = (c[0] != before[0] or c[1] != before[1] or c[4] != before[4]) and \
            ({"MessageNew", "MessageExpunge"} & events)
        flagged = (c[2] != before[2] or c[3] != before[3]) and "FlagChange" in events
        if moved or flagged:
            out.append(_status_line(s, name, c))
    for name in list(st.counters):
        if name not in covered:
            del st.counters[name]
    return out


def new_message_fetches(s: Session, st: NotifyState) -> list[bytes]:
    """MessageNew (fetch-att) on the selected mailbox: a FETCH for each message new since last time."""
    from fetchdeliver.imapserver import fetch as fetchmod

    g = st.selected_events()
    v = s.view
    if v is None:
        st.selected = None
        return []
    if st.selected is None or st.selected[:2] != (v.name, v.uidvalidity):
        _note_selected(s, st)
        return []
    top = st.selected[2]
    st.selected = (v.name, v.uidvalidity, v.uids[-1] if v.uids else top)
    if g is None or not g.fetch_atts or "MessageNew" not in g.events:
        return []
    items = list(g.fetch_atts)
    out = []
    for i, m in enumerate(v.msgs):
        if m.uid <= top:
            continue
        parsed = None
        if fetchmod.needs_body(items):
            try:
                parsed = fetchmod.Parsed(v.mailbox.read(m))
            except StorageError:
                continue
        out.append(b"* %d FETCH " % (i + 1) + fetchmod.render(items, m, v.mailbox, v.flags_of(m), parsed, False)
                   + b"\r\n")
    return out


async def poll(s: Session) -> None:
    """Tell the client what changed (called while it idles, and at NOOP)."""
    st = state(s)
    if st is None:
        return
    try:
        s.out(b"".join(new_message_fetches(s, st) + changes(s, st)))
    except StorageError:
        pass     # a mailbox went away meanwhile: the next check sees the rest
    await s.flush()


def watch(s: Session) -> None:
    """While idling: wake on a change in any mailbox the filters name (and in the store's root, where
    mailboxes and the subscriptions file come and go)."""
    st = state(s)
    if st is None:
        return
    paths: list[str] = []
    root = getattr(s.storage, "root", None)
    if isinstance(root, str):
        paths.append(root)
    for name in st.counters:
        try:
            mbox = s.storage.open(name, readonly=True)
        except StorageError:
            continue
        try:
            paths += mbox.watch_paths()
        finally:
            mbox.close()
    loop, changed = s.loop, s.changed

    def wake():
        loop.call_soon_threadsafe(changed.set)

    st.tokens = s.server.watcher.subscribe(paths, wake)


def unwatch(s: Session) -> None:
    st = state(s)
    if st is not None and st.tokens:
        s.server.watcher.unsubscribe(st.tokens)
        st.tokens = []


def status_wanted(s: Any) -> bool:
    return state(s) is not None
