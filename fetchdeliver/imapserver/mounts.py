"""One login, many stores: a Storage that mounts other Storages under mailbox-name prefixes.

    MountStorage([
        Mount("", MaildirStorage("~/Mail")),                     # INBOX and its folders
        Mount("Archive/2024", MaildirStorage("~/Archive/2024")), # Archive/2024, Archive/2024/Work, ...
        Mount("Old", MboxStorage("~/old.mbox")),                 # an mbox tree
        Mount("Quarantine", MaildirStorage("/srv/q"), readonly=True),
    ])

A mount's own INBOX is the mount point itself ("Archive/2024"); its other
mailboxes appear below it. The longest matching prefix wins. A read-only mount
is opened read-only whatever the client asks (SELECT answers [READ-ONLY]) and
refuses CREATE, DELETE, RENAME and APPEND. This is the building block for
`[imap] backend` plugins (see fetchdeliver/examples/imap_plugin.py).
"""

from __future__ import annotations

from fetchdeliver.storage.base import (Mailbox, MailboxEntry, Storage, StorageError,
                                       add_children_attributes)


class Mount:
    __slots__ = ("prefix", "storage", "readonly")

    def __init__(self, prefix: str, storage: Storage, readonly: bool = False) -> None:
        self.prefix = prefix.strip("/")
        self.storage = storage
        self.readonly = readonly


class _ReadOnly(Mailbox):
    """A mailbox whose every write is refused, whatever the backend would allow."""

    def __init__(self, inner: Mailbox) -> None:
        self._inner = inner
        self.name = inner.name
        self.readonly = True
        self.uidvalidity = inner.uidvalidity
        self.permanent_keywords = False

    def __getattr__(self, attr):
        return getattr(self._inner, attr)

    def sync(self):
        return self._inner.sync()

    def uidnext(self) -> int:
        return self._inner.uidnext()

    def keywords(self):
        return self._inner.keywords()

    def read(self, msg):
        return self._inner.read(msg)

    def size(self, msg):
        return self._inner.size(msg)

    def _refuse(self, *args, **kwargs):
        raise StorageError(f"{self.name} is read-only", "NOPERM")

    set_flags = append = expunge = _refuse

    def copy_to(self, msgs, dest):
        return Mailbox.copy_to(self, msgs, dest)  # reading from here is fine

    def cached(self, msg):
        return self._inner.cached(msg)

    def flush_cached(self) -> None:
        self._inner.flush_cached()

    def cached_fields(self, name: str):
        return self._inner.cached_fields(name)

    def cached_fields_like(self, name: str, needle: str):
        return self._inner.cached_fields_like(name, needle)

    def stored_keys(self, name: str):
        return self._inner.stored_keys(name)

    def store_keys(self, name: str, values) -> None:
        self._inner.store_keys(name, values)

    def highestmodseq(self) -> int:
        return self._inner.highestmodseq()

    def vanished_since(self, modseq: int):
        return self._inner.vanished_since(modseq)

    def watch_paths(self):
        return self._inner.watch_paths()

    def close(self) -> None:
        self._inner.close()


class MountStorage(Storage):
    def __init__(self, mounts: list[Mount]) -> None:
        if not any(m.prefix == "" for m in mounts):
            raise ValueError("one mount must have the empty prefix: it holds INBOX")
        self.mounts = sorted(mounts, key=lambda m: len(m.prefix), reverse=True)

    def _find(self, name: str) -> tuple[Mount, str]:
        """(the mount serving `name`, the name inside that mount)."""
        if name.upper() == "INBOX":
            name = "INBOX"
        for m in self.mounts:
            if not m.prefix:
                return m, name
            if name == m.prefix:
                return m, "INBOX"
            if name.startswith(m.prefix + "/"):
                return m, name[len(m.prefix) + 1:]
        raise StorageError(f"no mailbox {name!r}", "NONEXISTENT")  # pragma: no cover

    @staticmethod
    def _outer(m: Mount, inner: str) -> str:
        if not m.prefix:
            return inner
        return m.prefix if inner.upper() == "INBOX" else f"{m.prefix}/{inner}"

    def list(self) -> list[MailboxEntry]:
        entries: dict[str, MailboxEntry] = {}
        for m in self.mounts:
            for e in m.storage.list():
                if "\\Noselect" in e.attributes:
                    continue
                outer = self._outer(m, e.name)
                owner, _ = self._find(outer)
                if owner is not m:
                    continue  # shadowed by a deeper mount
                attrs = {a for a in e.attributes if a not in ("\\HasChildren", "\\HasNoChildren")}
                entries[outer] = MailboxEntry(outer, attrs)
        return add_children_attributes(list(entries.values()))

    def open(self, name: str, readonly: bool = False) -> Mailbox:
        m, inner = self._find(name)
        box = m.storage.open(inner, readonly=readonly or m.readonly)
        # The box keeps its inner name: the backend uses it to address its own files.
        return _ReadOnly(box) if m.readonly else box

    def _writable(self, name: str) -> tuple[Mount, str]:
        m, inner = self._find(name)
        if m.readonly:
            raise StorageError(f"{name} is read-only", "NOPERM")
        return m, inner

    def create(self, name: str, special_use: tuple[str, ...] = ()) -> None:
        m, inner = self._writable(name)
        m.storage.create(inner, special_use)

    def delete(self, name: str) -> None:
        m, inner = self._writable(name)
        if inner == "INBOX":
            raise StorageError(f"{name} is a mount point and cannot be deleted", "CANNOT")
        m.storage.delete(inner)

    def rename(self, old: str, new: str) -> None:
        m1, a = self._writable(old)
        m2, b = self._writable(new)
        if m1 is not m2:
            raise StorageError("mailboxes cannot be renamed from one store to another", "CANNOT")
        m1.storage.rename(a, b)

    def subscriptions(self) -> list[str]:
        out = []
        for m in self.mounts:
            out.extend(self._outer(m, n) for n in m.storage.subscriptions())
        return out

    def subscribe(self, name: str) -> None:
        m, inner = self._find(name)
        if not m.readonly:
            m.storage.subscribe(inner)

    def unsubscribe(self, name: str) -> None:
        m, inner = self._find(name)
        if not m.readonly:
            m.storage.unsubscribe(inner)

    def close(self) -> None:
        for m in self.mounts:
            m.storage.close()
