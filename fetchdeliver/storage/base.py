"""The one storage interface every face uses: a `Store` holds named `Mailbox`es of messages.

The MDA, LMTP, fetch and `filter` deliver through `Store.deliver()` (durable on
return); the IMAP server (and the POP3/ManageSieve servers to come) open
mailboxes with `Store.open()` and read, flag, copy, move and expunge through
the `Mailbox`. A backend (maildir.py, mbox.py, or a plugin of your own, see
docs/extending.md) implements both classes. Names use "/" as the hierarchy
separator and are Unicode ("Work/Ärger"); the IMAP layer does the modified UTF-7.

Messages are identified by UID. `Mailbox.sync()` is the change feed: it returns
the mailbox as it is now (every message with its flags), and the session diffs
it against what the client has seen to send EXISTS / EXPUNGE / FETCH FLAGS.
Flags are IMAP strings: the system flags spelt "\\Seen", "\\Answered",
"\\Flagged", "\\Deleted", "\\Draft"; anything else is a keyword.
"""

from __future__ import annotations

from fetchdeliver.errors import FetchdeliverError, QuotaExceeded

# On the MDA path: `typing` is imported for the type checker only (docs/architecture.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Iterable
    from typing import Any

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_CANON = {f.lower(): f for f in SYSTEM_FLAGS}


def canonical_flag(flag: str) -> str:
    """"\\SEEN" -> "\\Seen"; keywords are returned unchanged."""
    return _CANON.get(flag.lower(), flag)


class StorageError(FetchdeliverError):
    """A mailbox operation failed; `code` is the IMAP response code (NONEXISTENT, ALREADYEXISTS,
    CANNOT, NOPERM, TRYCREATE, SERVERBUG, LIMIT, INUSE) or None."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class MessageInfo:
    """One message as a backend sees it: UID, flags, internal date (epoch seconds) and a handle."""

    __slots__ = ("uid", "flags", "internaldate", "handle", "_size", "recent", "modseq")

    def __init__(self, uid: int, flags: frozenset[str], internaldate: float, handle: Any = None,
                 size: int | None = None, modseq: int = 0) -> None:
        self.uid = uid
        self.flags = flags
        self.internaldate = internaldate
        self.handle = handle      # backend data (file name, offset, ...)
        self._size = size         # RFC822.SIZE (line ends counted as CRLF), when known cheaply
        self.recent = False
        self.modseq = modseq      # MODSEQ (RFC 7162) of the last change; 0 when the backend keeps none

    def __repr__(self) -> str:
        return f"MessageInfo(uid={self.uid}, flags={sorted(self.flags)})"


class MailboxEntry:
    """A LIST line: name and attributes (e.g. {"\\HasNoChildren", "\\Sent"})."""

    __slots__ = ("name", "attributes")

    def __init__(self, name: str, attributes: Iterable[str] = ()) -> None:
        self.name = name
        self.attributes = set(attributes)

    def __repr__(self) -> str:
        return f"MailboxEntry({self.name!r}, {sorted(self.attributes)})"


class Mailbox:
    """An open mailbox. Backends override every method that raises NotImplementedError."""

    name: str = ""
    readonly: bool = False
    uidvalidity: int = 1
    permanent_keywords: bool = True   # whether new keywords can be stored ("\\*" in PERMANENTFLAGS)

    def sync(self) -> list[MessageInfo]:
        """Every message now in the mailbox, ordered by UID (assigns UIDs to new ones)."""
        raise NotImplementedError

    def uidnext(self) -> int:
        raise NotImplementedError

    def keywords(self) -> list[str]:
        """Keywords defined in this mailbox (for FLAGS)."""
        return []

    def read(self, msg: MessageInfo) -> bytes:
        """The message's bytes as stored."""
        raise NotImplementedError

    def size(self, msg: MessageInfo) -> int:
        """RFC822.SIZE: the size with every line end counted as CRLF."""
        if msg._size is None:
            raw = self.read(msg)
            msg._size = len(raw) + raw.count(b"\n") - raw.count(b"\r\n")
        return msg._size

    def set_flags(self, changes: list[tuple[MessageInfo, frozenset[str]]]) -> None:
        """Give each message its new complete flag set (durably). Missing messages are skipped."""
        raise NotImplementedError

    def append(self, raw: bytes, flags: Iterable[str] = (), internaldate: float | None = None) -> int:
        """Store a new message; returns its UID."""
        raise NotImplementedError

    def copy_to(self, msgs: list[MessageInfo], dest: "Mailbox") -> list[int]:
        """Copy messages (with flags and internal date) into `dest`; the new UIDs in order.
        All or nothing: when one cannot be copied (over quota, say), the copies made are removed."""
        uids: list[int] = []
        try:
            for m in msgs:
                uids.append(dest.append(self.read(m), m.flags, m.internaldate))
        except StorageError:
            if uids:
                done = set(uids)
                dest.expunge([m for m in dest.sync() if m.uid in done])
            raise
        return uids

    def expunge(self, msgs: list[MessageInfo]) -> None:
        """Remove the messages for good. The removal need not survive a power cut (an undone removal
        brings a message back, it never loses one); `make_expunges_durable()` makes it so."""
        raise NotImplementedError

    def make_expunges_durable(self) -> None:
        """Make the expunges done so far survive a power cut (a POP3 QUIT promises it before +OK).
        The default does nothing: for a backend whose expunge commits durably."""

    def move_to(self, msgs: list[MessageInfo], dest: "Mailbox") -> list[int]:
        """Copy, then expunge here: the new UIDs in order. Never loses a message: the copies are
        durable before anything is removed."""
        uids = self.copy_to(msgs, dest)
        self.expunge(msgs)
        return uids

    # -- cached parts and MODSEQ (optional: a backend without an index keeps the defaults) --

    def cached(self, msg: MessageInfo) -> dict[str, Any] | None:
        """The content-derived facts kept for `msg` (ENVELOPE, BODYSTRUCTURE, header fields...):
        a dict the caller may fill; `flush_cached()` makes the additions persistent. None when the
        backend keeps nothing (the IMAP server then uses its in-memory cache)."""
        return None

    def flush_cached(self) -> None:
        """Persist what callers added to the dicts `cached()` returned."""

    def cached_fields(self, name: str) -> tuple[set[int], dict[int, Any]] | None:
        """(UIDs whose header fields are kept, {uid: [raw unfolded values of field `name`]}) for
        the whole mailbox, so that a header search skips what cannot match; None when not kept."""
        return None

    def cached_fields_like(self, name: str, needle: str) -> tuple[set[int], dict[int, Any]] | None:
        """As `cached_fields(name)`, but the values may be left out for UIDs whose field cannot
        contain `needle` (compared case-insensitively, after RFC 2047 decoding): a backend that
        can tell so cheaply (the Maildir index asks sqlite) saves the caller decoding them all."""
        return self.cached_fields(name)

    def stored_keys(self, name: str) -> dict[int, Any] | None:
        """{uid: value} of a derived key the IMAP server stored with `store_keys` (a SORT key,
        THREAD's facts: numbers or text); None when the backend keeps none."""
        return None

    def store_keys(self, name: str, values: dict[int, Any]) -> None:
        """Keep derived values for `stored_keys` (a cache: the backend may drop them)."""

    def highestmodseq(self) -> int:
        """HIGHESTMODSEQ (RFC 7162): raised by every append, flag change and expunge; 0 if not kept."""
        return 0

    def vanished_since(self, modseq: int) -> list[int]:
        """UIDs expunged with a MODSEQ above `modseq` (QRESYNC's VANISHED)."""
        return []

    def watch_paths(self) -> list[str]:
        """Directories or files whose changes mean the mailbox changed (for IDLE)."""
        return []

    def close(self) -> None:
        pass


class Receipt:
    """Proof of one durable delivery; `rollback()` undoes it when the whole message must be retried."""

    __slots__ = ("target", "mailbox", "path", "_undo", "uid")

    def __init__(self, target: str, mailbox: str | None = None, path: str | None = None,
                 undo: Callable[[], object] | None = None, uid: int | None = None) -> None:
        self.target = target      # "maildir", "mbox", "pipe", "queue", ...
        self.mailbox = mailbox    # the folder name as the rules gave it, e.g. "Work/Reports"
        self.path = path          # where it landed on disk, when it did
        self._undo = undo
        self.uid = uid            # its UID when the store assigned one at once

    def rollback(self) -> None:
        """Best-effort removal of this delivery (used before answering tempfail)."""
        if self._undo is not None:
            undo, self._undo = self._undo, None
            undo()

    def __repr__(self) -> str:
        return f"Receipt({self.target!r}, {self.mailbox!r}, {self.path!r})"


class QuotaStatus:
    """One quota root as RFC 9208 reports it: what is used and the limits (None: no limit).
    `bytes` is the sum of the messages' sizes as stored; IMAP's STORAGE is it in KiB."""

    __slots__ = ("root", "bytes", "messages", "bytes_limit", "messages_limit")

    def __init__(self, root: str, bytes_used: int, messages: int, bytes_limit: int | None = None,
                 messages_limit: int | None = None) -> None:
        self.root = root
        self.bytes = bytes_used
        self.messages = messages
        self.bytes_limit = bytes_limit
        self.messages_limit = messages_limit

    def over_by(self, size: int, count: int = 1, grace: int = 0) -> str | None:
        """The resource ("STORAGE" or "MESSAGE") that `count` more messages of `size` bytes in all
        would take over its limit, or None when they fit (a limit may be reached, not passed).
        `grace`: bytes the last message may go past the storage limit when the user is under it
        (Dovecot's quota_grace)."""
        if self.bytes_limit is not None and size > 0 and self.bytes + size > self.bytes_limit:
            if not (self.bytes < self.bytes_limit and self.bytes + size <= self.bytes_limit + grace):
                return "STORAGE"
        if self.messages_limit is not None and count > 0 and self.messages + count > self.messages_limit:
            return "MESSAGE"
        return None

    def __repr__(self) -> str:
        return (f"QuotaStatus({self.root!r}, bytes={self.bytes}/{self.bytes_limit}, "
                f"messages={self.messages}/{self.messages_limit})")


class Quota:
    """A user's quota (storage/quota.py has the Maildir++ one, storage/postgres.py its own).

    A store with a quota calls `check()` before it stores a message (QuotaExceeded when it does
    not fit) and `charge()` after it stored or removed some (negative numbers). Both see every
    process that shares the user's mail: the numbers live with the mail, not in memory."""

    root = "User quota"          # the quota root's name (Dovecot's name for its default root)
    tempfail = False             # over quota is a temporary failure ([quota] tempfail)
    moving = False               # set while IMAP MOVE copies within the user's mail: no check, as
                                 # Dovecot does (the expunge that follows gives the room back)
    grace: int | str = 0         # [quota] grace: bytes, or "10%" of the storage limit

    def grace_bytes(self, st: QuotaStatus) -> int:
        """The grace in bytes for `st`'s storage limit."""
        g = self.grace
        if isinstance(g, str) and g.endswith("%"):
            return int(g[:-1]) * (st.bytes_limit or 0) // 100
        return int(g)

    def status(self) -> QuotaStatus:
        """Usage and limits now."""
        raise NotImplementedError

    def check(self, size: int, count: int = 1, *, grace: bool = True) -> None:
        """Raise QuotaExceeded when `count` more messages of `size` bytes would not fit. `grace`:
        whether the grace applies (deliveries; not IMAP APPEND/COPY, as in Dovecot)."""
        if self.moving:
            return
        st = self.status()
        resource = st.over_by(size, count, self.grace_bytes(st) if grace else 0)
        if resource is not None:
            raise self.exceeded(st, resource, size)

    def charge(self, size: int, count: int = 1) -> None:
        """Record that `count` messages of `size` bytes in all were stored (negative: removed)."""

    def set_limits(self, bytes_limit: int | None, messages_limit: int | None) -> None:
        """The user's own limits (IMAP SETQUOTA by an administrator); None: no limit."""
        raise StorageError("this quota's limits cannot be changed here", "CANNOT")

    def exceeded(self, st: QuotaStatus, resource: str, size: int) -> QuotaExceeded:
        if resource == "STORAGE":
            detail = f"{st.bytes} of {st.bytes_limit} bytes used, the message has {size}"
        else:
            detail = f"{st.messages} of {st.messages_limit} messages stored"
        return QuotaExceeded(f"Quota exceeded (mailbox for user is full): {detail}", resource=resource,
                             temporary=self.tempfail)


class Store:
    """A user's mailboxes.

    Delivery face (MDA, LMTP, fetch, filter): `deliver()`, `mailbox_exists()`, `describe()`.
    Access face (IMAP server, ...): `list()`, `open()`, `create()`, `delete()`, `rename()`,
    subscriptions. A read-only or access-only backend may leave `deliver()` unimplemented.
    """

    kind = "store"
    separator = "/"
    quota: Quota | None = None     # set by storage/quota.py's attach_quota(): enforced by deliver()

    def deliver(self, raw: bytes, mailbox: str = "INBOX", flags: list[str] | tuple[str, ...] = (), *,
                sender: str = "", create: bool = True) -> Receipt:
        """Store `raw` byte-exact in `mailbox` with IMAP `flags`; durable on return."""
        raise NotImplementedError

    def mailbox_exists(self, mailbox: str) -> bool:
        return self.exists(mailbox)

    def describe(self, mailbox: str) -> str:
        """Where `mailbox` lives, for messages to the user."""
        return f"mailbox {mailbox!r}"

    def list(self) -> list[MailboxEntry]:
        """Every mailbox, INBOX included; hierarchy parents that do not exist carry \\Noselect."""
        raise NotImplementedError

    def open(self, name: str, readonly: bool = False) -> Mailbox:
        """Raise StorageError(code="NONEXISTENT") when there is no such mailbox."""
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        try:
            self.open(name, readonly=True).close()
        except StorageError:
            return False
        return True

    def create(self, name: str, special_use: tuple[str, ...] = ()) -> None:
        raise StorageError("this store cannot create mailboxes", "CANNOT")

    def delete(self, name: str) -> None:
        raise StorageError("this store cannot delete mailboxes", "CANNOT")

    def rename(self, old: str, new: str) -> None:
        raise StorageError("this store cannot rename mailboxes", "CANNOT")

    def subscriptions(self) -> builtins.list[str]:   # builtins: `list` here is the method above
        return [e.name for e in self.list() if "\\Noselect" not in e.attributes]

    def subscribe(self, name: str) -> None:
        pass

    def unsubscribe(self, name: str) -> None:
        pass

    def close(self) -> None:
        pass


# The names the two halves had before they became one interface.
Storage = Store
MailStore = Store


SPECIAL_USE_NAMES = {
    "sent": "\\Sent", "sent messages": "\\Sent", "sent items": "\\Sent", "sent mail": "\\Sent",
    "drafts": "\\Drafts", "trash": "\\Trash", "deleted messages": "\\Trash", "deleted items": "\\Trash",
    "junk": "\\Junk", "spam": "\\Junk", "archive": "\\Archive", "archives": "\\Archive",
}
SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")


def add_children_attributes(entries: list[MailboxEntry], sep: str = "/") -> list[MailboxEntry]:
    """Add \\HasChildren/\\HasNoChildren, and \\Noselect parents for missing hierarchy levels."""
    by_name = {e.name: e for e in entries}
    for e in list(entries):
        parts = e.name.split(sep)
        for i in range(1, len(parts)):
            parent = sep.join(parts[:i])
            if parent not in by_name:
                p = MailboxEntry(parent, {"\\Noselect"})
                by_name[parent] = p
                entries.append(p)
    parents: set[str] = set()
    for name in by_name:
        if sep in name:
            parents.add(name.rsplit(sep, 1)[0])
    for name, e in by_name.items():
        e.attributes.add("\\HasChildren" if name in parents else "\\HasNoChildren")
    entries.sort(key=lambda e: (e.name.upper() != "INBOX", e.name))
    return entries
