"""METADATA (RFC 5464) storage: the server's and each mailbox's entries of one user, kept durably.

Where the entries live:

- Maildir: `fetchdeliver-metadata.json` in the Maildir's root (beside `dovecot-uidlist`; Dovecot
  keeps its own in `dovecot-metadata`/its index, which we do not read).
- mbox: `.fetchdeliver-metadata.json` in the folder directory.
- PostgreSQL: the `fd_metadata` table (the pgschema step "IMAP METADATA").

The file is JSON, `{"": {"/private/comment": "text"}, "INBOX": {...}}` ("" is the server), values
as text, or `{"b64": "..."}` for bytes that are not UTF-8. It is replaced atomically (a temporary
file, fsync, rename, fsync of the directory), so a crash leaves the old or the new entries.
Entry names are kept in lower case (RFC 5464 3.2: they are case-insensitive).
A store without any of these (a plugin's) has no METADATA: the capability is not offered.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from typing import Any, Iterable

from fetchdeliver.storage.base import StorageError

MAX_VALUE_SIZE = 64 * 1024       # bytes in one value: more is NO [METADATA MAXSIZE 65536]
MAX_ENTRIES = 1000               # entries per user (server and mailboxes together): NO [METADATA TOOMANY]
MAX_TOTAL_SIZE = 1024 * 1024     # bytes of values per user: NO [LIMIT] (RFC 5530)
FILE_NAME = "fetchdeliver-metadata.json"

_ENTRY = re.compile(r"/(private|shared)(/[\x21-\x7e]+)*\Z", re.IGNORECASE)
_LOCK = threading.Lock()     # sessions of one server write one user's file in turn


class MetadataError(StorageError):
    """A SETMETADATA the limits refuse: `code` is the response code (METADATA MAXSIZE n, TOOMANY)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text, code)
        self.code: str = code


def valid_entry(name: str) -> bool:
    """RFC 5464 3.2: /private or /shared, then `/`-separated parts; no `*`, `%`, `//`, trailing `/`."""
    return (bool(_ENTRY.match(name)) and "*" not in name and "%" not in name and "//" not in name
            and not name.endswith("/"))


class FileMetadata:
    """One user's entries in one JSON file."""

    def __init__(self, path: str, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise StorageError(f"the metadata file {self.path} is not valid JSON ({e}); "
                               "fix or remove it", "SERVERBUG") from None
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict) -> None:
        tmp = f"{self.path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if self.fsync:
            fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def entries(self, mailbox: str) -> dict[str, bytes]:
        """Every entry of `mailbox` ("" for the server) and its value."""
        return {k: _decode(v) for k, v in self._load().get(_key(mailbox), {}).items()}

    def get(self, mailbox: str, entry: str) -> bytes | None:
        v = self._load().get(_key(mailbox), {}).get(entry.lower())
        return None if v is None else _decode(v)

    def set(self, mailbox: str, values: Iterable[tuple[str, bytes | None]]) -> None:
        """Set (None: remove) entries, all or none: the limits are checked first."""
        values = list(values)
        for _, v in values:
            if v is not None and len(v) > MAX_VALUE_SIZE:
                raise MetadataError(f"METADATA MAXSIZE {MAX_VALUE_SIZE}",
                                    f"A value is longer than {MAX_VALUE_SIZE} bytes.")
        with _LOCK:
            data = self._load()
            box = dict(data.get(_key(mailbox), {}))
            for k, v in values:
                if v is None:
                    box.pop(k.lower(), None)
                else:
                    box[k.lower()] = _encode(v)
            if sum(len(b) for n, b in data.items() if n != _key(mailbox)) + len(box) > MAX_ENTRIES:
                raise MetadataError("METADATA TOOMANY", f"At most {MAX_ENTRIES} entries per user.")
            data[_key(mailbox)] = box
            total = sum(len(_decode(v)) for b in data.values() for v in b.values())
            if total > MAX_TOTAL_SIZE:
                raise MetadataError("LIMIT", f"At most {MAX_TOTAL_SIZE} bytes of metadata per user.")
            if box:
                data[_key(mailbox)] = box
            else:
                data.pop(_key(mailbox), None)
            self._save(data)

    def rename(self, old: str, new: str) -> None:
        """RENAME carries the mailbox's entries (and its children's) along."""
        with _LOCK:
            data = self._load()
            moved = {}
            for name in list(data):
                if name == old or name.startswith(old + "/"):
                    moved[new + name[len(old):]] = data.pop(name)
            if moved:
                data.update(moved)
                self._save(data)

    def delete(self, mailbox: str) -> None:
        with _LOCK:
            data = self._load()
            if data.pop(_key(mailbox), None) is not None:
                self._save(data)


class PgMetadata:
    """One user's entries in PostgreSQL (`fd_metadata`), for a `postgresql://` store; each change is
    one transaction."""

    def __init__(self, store: Any) -> None:
        self.store = store        # a storage.postgres.PostgresStore (its user and pool)

    def entries(self, mailbox: str) -> dict[str, bytes]:
        with self.store.connection() as conn:
            rows = conn.execute("SELECT entry, value FROM fd_metadata WHERE user_id = %s AND mailbox = %s",
                                (self.store.user_id(conn), _key(mailbox))).fetchall()
        return {r[0]: bytes(r[1]) for r in rows}

    def get(self, mailbox: str, entry: str) -> bytes | None:
        with self.store.connection() as conn:
            row = conn.execute("SELECT value FROM fd_metadata WHERE user_id = %s AND mailbox = %s AND entry = %s",
                               (self.store.user_id(conn), _key(mailbox), entry.lower())).fetchone()
        return None if row is None else bytes(row[0])

    def set(self, mailbox: str, values: Iterable[tuple[str, bytes | None]]) -> None:
        values = list(values)
        for _, v in values:
            if v is not None and len(v) > MAX_VALUE_SIZE:
                raise MetadataError(f"METADATA MAXSIZE {MAX_VALUE_SIZE}",
                                    f"A value is longer than {MAX_VALUE_SIZE} bytes.")
        with self.store.connection() as conn, conn.transaction():
            uid = self.store.user_id(conn)
            for k, v in values:
                if v is None:
                    conn.execute("DELETE FROM fd_metadata WHERE user_id = %s AND mailbox = %s AND entry = %s",
                                 (uid, _key(mailbox), k.lower()))
                else:
                    conn.execute("INSERT INTO fd_metadata VALUES (%s, %s, %s, %s) ON CONFLICT "
                                 "(user_id, mailbox, entry) DO UPDATE SET value = excluded.value",
                                 (uid, _key(mailbox), k.lower(), v))
            n, total = conn.execute("SELECT count(*), coalesce(sum(length(value)), 0) FROM fd_metadata "
                                    "WHERE user_id = %s", (uid,)).fetchone()
            if n > MAX_ENTRIES:     # raising here rolls the whole change back
                raise MetadataError("METADATA TOOMANY", f"At most {MAX_ENTRIES} entries per user.")
            if total > MAX_TOTAL_SIZE:
                raise MetadataError("LIMIT", f"At most {MAX_TOTAL_SIZE} bytes of metadata per user.")

    def rename(self, old: str, new: str) -> None:
        with self.store.connection() as conn, conn.transaction():
            conn.execute("UPDATE fd_metadata SET mailbox = %s || substr(mailbox, length(%s) + 1) "
                         "WHERE user_id = %s AND (mailbox = %s OR left(mailbox, length(%s) + 1) = %s || '/')",
                         (new, old, self.store.user_id(conn), old, old, old))

    def delete(self, mailbox: str) -> None:
        with self.store.connection() as conn, conn.transaction():
            conn.execute("DELETE FROM fd_metadata WHERE user_id = %s AND mailbox = %s",
                         (self.store.user_id(conn), _key(mailbox)))


def _key(mailbox: str) -> str:
    return "INBOX" if mailbox.upper() == "INBOX" else mailbox


def _encode(v: bytes) -> Any:
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(v).decode()}


def _decode(v: Any) -> bytes:
    if isinstance(v, dict):
        return base64.b64decode(v.get("b64", ""))
    return str(v).encode("utf-8")


def metadata_for(storage: Any) -> Any | None:
    """The metadata of a login's store, or None where it has no place for it."""
    if storage is None:
        return None
    own = getattr(storage, "metadata", None)
    if own is not None and not callable(own):
        return own
    factory = getattr(storage, "imap_metadata", None)     # a store that keeps it itself (PostgreSQL)
    if callable(factory):
        return factory()
    kind = getattr(storage, "kind", None)
    if kind == "postgres" and callable(getattr(storage, "connection", None)):
        return PgMetadata(storage)
    fsync = getattr(storage, "fsync", True)
    if kind == "maildir" and getattr(storage, "root", None):
        return FileMetadata(os.path.join(storage.root, FILE_NAME), fsync)
    if kind == "mbox" and getattr(storage, "folder_dir", None):
        os.makedirs(storage.folder_dir, exist_ok=True)
        return FileMetadata(os.path.join(storage.folder_dir, "." + FILE_NAME), fsync)
    return None


def session_metadata(s: Any) -> Any | None:
    """The session's metadata (cached on the session)."""
    got = getattr(s, "_metadata_store", None)
    if got is None:
        got = metadata_for(s.storage)
        s._metadata_store = got
    return got


def lookup(s: Any, mailbox: str | None, entry: str) -> bytes | None:
    """One entry's value for this session's user (None: not set, or no METADATA here)."""
    md = session_metadata(s)
    return None if md is None else md.get(mailbox or "", entry)


def forget_mailbox(s: Any, mailbox: str) -> None:
    """DELETE: the mailbox's entries go (a failure is logged: the mailbox is gone already)."""
    _quietly(s, "delete", mailbox)


def rename_mailbox(s: Any, old: str, new: str) -> None:
    _quietly(s, "rename", old, new)


def _quietly(s: Any, op: str, *args: str) -> None:
    try:
        md = session_metadata(s)
        if md is not None:
            getattr(md, op)(*args)
    except Exception as e:
        import logging

        logging.getLogger("fetchdeliver.imapserver").warning("metadata %s %s: %s", op, args, e)
