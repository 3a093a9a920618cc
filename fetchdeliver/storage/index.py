"""The persistent index of one mailbox: a cache beside the mail, never the only copy of anything.

A Maildir folder keeps it in `fetchdeliver-index.sqlite` (next to Dovecot's
`dovecot-uidlist`). Per message: UID, the file's current name and subdirectory,
internal date, RFC822.SIZE, MODSEQ, and the content-derived facts the IMAP server
asks for again and again (ENVELOPE, BODYSTRUCTURE and BODY as sent; header
fields one row each, so SEARCH SUBJECT reads the subjects and nothing else). Per mailbox: UIDVALIDITY, HIGHESTMODSEQ, and the directory
stamp of the last reconciliation, so that a freshly started server answers from
the index without listing or reading message files. Expunged UIDs are kept with
the MODSEQ of their expunge (what QRESYNC's VANISHED needs).

The mail (files and dovecot-uidlist) is the truth. The backend reconciles the
index with it whenever the folder's directories changed; a missing index is
built again, a corrupt one is moved aside (`...sqlite.corrupt-TIME`) and built
again. sqlite runs in WAL mode with `synchronous=NORMAL`: a crash of the process
loses nothing, a power loss may lose the last transactions, which the next
reconciliation redoes from the files.

Every writer holds the mailbox's `dovecot-uidlist.lock` dotlock while it writes
here, so a writer may trust the rows it reads inside its transaction.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

from fetchdeliver.errors import FetchdeliverError

INDEX_NAME = "fetchdeliver-index.sqlite"
SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS msg (
    uid INTEGER PRIMARY KEY,
    name TEXT NOT NULL,          -- the file name in its subdirectory (flags in its ':2,' part)
    subdir TEXT NOT NULL,        -- 'new' or 'cur'
    internaldate REAL NOT NULL,
    size INTEGER,                -- RFC822.SIZE, NULL until known
    modseq INTEGER NOT NULL,
    envelope BLOB,               -- the IMAP ENVELOPE, BODYSTRUCTURE and BODY answers, as sent
    bodystructure BLOB,
    body BLOB,
    hdr INTEGER                  -- 1 when the message's header fields are in `field`
);
CREATE TABLE IF NOT EXISTS field (     -- header fields, for SEARCH HEADER/SUBJECT/FROM/...
    uid INTEGER NOT NULL,
    name TEXT NOT NULL,          -- lower case
    value BLOB NOT NULL          -- unfolded, undecoded; a field's values in rowid order
);
CREATE INDEX IF NOT EXISTS field_name ON field (name, uid);
CREATE INDEX IF NOT EXISTS field_uid ON field (uid);
CREATE INDEX IF NOT EXISTS msg_hdr ON msg (hdr);
CREATE TABLE IF NOT EXISTS sortkey (   -- SORT keys and THREAD facts the IMAP server derived (sort_thread.py)
    name TEXT NOT NULL,          -- e.g. 'sort:SUBJECT', 'thread:facts'
    uid INTEGER NOT NULL,
    value,                       -- a number or text, as the server stored it
    PRIMARY KEY (name, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS expunged (uid INTEGER PRIMARY KEY, modseq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS expunged_modseq ON expunged (modseq);
"""


def _log():
    import logging

    return logging.getLogger(__name__)


# Open indexes, kept per folder and thread: a session's SELECT finds the connection open, and
# LOGOUT does not close it (closing the last connection checkpoints the WAL: an fsync or two).
_POOL: dict = {}
_IDLE: dict = {}          # key -> index with no user, oldest first
MAX_IDLE = 32


def acquire(folder: str) -> "MailboxIndex":
    """The open index of `folder` for this thread (IndexUnavailable when it cannot be used)."""
    key = (os.path.abspath(folder), threading.get_ident())
    ix = _POOL.get(key)
    if ix is not None and not ix.same_file():
        _POOL.pop(key, None)
        _IDLE.pop(key, None)
        if ix.users <= 0:
            ix.close()
        ix = None
    if ix is None:
        ix = MailboxIndex(folder)
        ix.key = key
        _POOL[key] = ix
    ix.users += 1
    _IDLE.pop(key, None)
    return ix


def release(ix: "MailboxIndex") -> None:
    ix.users -= 1
    if ix.users > 0:
        return
    if _POOL.get(ix.key) is not ix:
        ix.close()
        return
    _IDLE[ix.key] = ix
    while len(_IDLE) > MAX_IDLE:
        key = next(iter(_IDLE))
        old = _IDLE.pop(key)
        _POOL.pop(key, None)
        old.close()


def close_idle() -> None:
    """Close every pooled index no mailbox uses (what a process exit does; tests use it to restart)."""
    while _IDLE:
        key = next(iter(_IDLE))
        old = _IDLE.pop(key)
        _POOL.pop(key, None)
        old.close()


class IndexUnavailable(FetchdeliverError):
    """The index cannot be opened or written here (read-only folder...): work without it."""


class Row:
    __slots__ = ("uid", "name", "subdir", "internaldate", "size", "modseq")

    def __init__(self, uid, name, subdir, internaldate, size, modseq) -> None:
        self.uid, self.name, self.subdir = uid, name, subdir
        self.internaldate, self.size, self.modseq = internaldate, size, modseq


class MailboxIndex:
    """The sqlite index of one folder. Methods raise IndexUnavailable when the file cannot be used."""

    def __init__(self, folder: str, owner_ref: str | None = None) -> None:
        self.path = os.path.join(folder, INDEX_NAME)
        self.owner_ref = owner_ref or folder
        self.db: sqlite3.Connection | None = None
        self.commits = 0
        self.inode = 0
        self.users = 0          # mailboxes using it (see acquire/release)
        self.key: tuple = ()
        self.rebuilt = False    # True when this open found no usable index (missing or corrupt)
        self._open()

    # -- opening, corruption ---------------------------------------------------------------

    def _open(self) -> None:
        existed = os.path.exists(self.path)
        try:
            self._connect()
            if existed and self._get("version") != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {self._get('version')!r}, "
                                            f"expected {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and not existed:
                raise IndexUnavailable(f"{self.path}: {e}") from None
            self.move_aside(str(e))
            try:
                self._connect()
            except sqlite3.DatabaseError as e2:
                raise IndexUnavailable(f"{self.path}: {e2}") from None
            existed = False
        if not existed:
            self.rebuilt = True

    def _connect(self) -> None:
        if self.db is not None:
            self.db.close()
        created = not os.path.exists(self.path)
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self.db = db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        have = {r[1] for r in db.execute("PRAGMA table_info(msg)")}
        for col in ADDED_COLUMNS:
            if col not in have:
                db.execute(f"ALTER TABLE msg ADD COLUMN {col} BLOB")
        if self._get("version") is None:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (SCHEMA_VERSION,))
        if created:
            _copy_owner(self.owner_ref, self.path)
            for extra in ("-wal", "-shm"):
                _copy_owner(self.owner_ref, self.path + extra)
        self.inode = os.stat(self.path).st_ino

    def same_file(self) -> bool:
        """Whether the path still names the file we have open (not renamed or deleted with its folder)."""
        try:
            return self.db is not None and os.stat(self.path).st_ino == self.inode
        except OSError:
            return False

    def move_aside(self, why: str) -> None:
        """Put a broken index out of the way (kept for a post-mortem) so that a new one is built."""
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
            self.db = None
        aside = f"{self.path}.corrupt-{int(time.time())}"
        _log().warning("%s: unusable index (%s): moved to %s, rebuilding it from the mail",
                       self.path, why, aside)
        for extra in ("", "-wal", "-shm"):
            try:
                os.rename(self.path + extra, aside + extra)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise IndexUnavailable(f"cannot move {self.path + extra} aside: {e.strerror}") from None
        self.rebuilt = True

    def close(self) -> None:
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
            self.db = None

    # -- meta ----------------------------------------------------------------------------------

    def _get(self, key: str):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def get(self, key: str):
        return self._get(key)

    def set(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def mark(self) -> tuple:
        """Changes since: compare two marks. Commits through another connection change
        `PRAGMA data_version`; those through this one (shared by the mailboxes of a process) the counter."""
        return self.db.execute("PRAGMA data_version").fetchone()[0], self.commits

    # -- transactions --------------------------------------------------------------------------

    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.db.execute("COMMIT")
        self.commits += 1

    def rollback(self) -> None:
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def highestmodseq(self) -> int:
        return int(self._get("highestmodseq") or 0)

    def next_modseq(self) -> int:
        """Raise HIGHESTMODSEQ by one (inside a transaction) and return it."""
        m = self.highestmodseq() + 1
        self.set("highestmodseq", m)
        return m

    # -- rows ----------------------------------------------------------------------------------

    def rows(self) -> list[Row]:
        return [Row(*r) for r in self.raw_rows()]

    def raw_rows(self) -> list[tuple]:
        """(uid, name, subdir, internaldate, size, modseq) tuples, by UID."""
        return self.db.execute(
            "SELECT uid, name, subdir, internaldate, size, modseq FROM msg ORDER BY uid").fetchall()

    def rows_since(self, modseq: int) -> list[Row]:
        """Rows whose MODSEQ is above `modseq` (changed since), by UID."""
        return [Row(*r) for r in self.db.execute(
            "SELECT uid, name, subdir, internaldate, size, modseq FROM msg WHERE modseq > ? ORDER BY uid",
            (modseq,)).fetchall()]

    def expunged_since(self, modseq: int) -> list[int]:
        """UIDs expunged with a MODSEQ above `modseq`."""
        return [r[0] for r in self.db.execute("SELECT uid FROM expunged WHERE modseq > ?", (modseq,))]

    def put(self, row: Row) -> None:
        """A message new to the index (a row left from an older life of the UID loses its cache)."""
        self.db.execute("INSERT OR REPLACE INTO msg (uid, name, subdir, internaldate, size, modseq) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (row.uid, row.name, row.subdir, row.internaldate, row.size, row.modseq))
        self.db.execute("DELETE FROM field WHERE uid = ?", (row.uid,))
        self.db.execute("DELETE FROM sortkey WHERE uid = ?", (row.uid,))

    def move(self, uid: int, name: str, subdir: str, modseq: int) -> None:
        self.db.execute("UPDATE msg SET name = ?, subdir = ?, modseq = ? WHERE uid = ?",
                        (name, subdir, modseq, uid))

    def move_many(self, rows) -> None:
        """rows: (name, subdir, modseq, uid) tuples."""
        self.db.executemany("UPDATE msg SET name = ?, subdir = ?, modseq = ? WHERE uid = ?", rows)

    def remove(self, uids, modseq: int) -> None:
        """Rows gone: forget them, remember the UIDs as expunged at `modseq`."""
        self.db.executemany("DELETE FROM msg WHERE uid = ?", ((u,) for u in uids))
        self.db.executemany("DELETE FROM field WHERE uid = ?", ((u,) for u in uids))
        self.db.executemany("DELETE FROM sortkey WHERE uid = ?", ((u,) for u in uids))
        self.db.executemany("INSERT OR REPLACE INTO expunged VALUES (?, ?)", ((u, modseq) for u in uids))

    def clear(self) -> None:
        """A new UIDVALIDITY: every row is void (HIGHESTMODSEQ keeps growing)."""
        self.db.execute("DELETE FROM msg")
        self.db.execute("DELETE FROM field")
        self.db.execute("DELETE FROM sortkey")
        self.db.execute("DELETE FROM expunged")

    def expunged_uids(self) -> set[int]:
        return {r[0] for r in self.db.execute("SELECT uid FROM expunged")}

    def vanished_since(self, modseq: int) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT uid FROM expunged WHERE modseq > ? ORDER BY uid", (modseq,))]

    # -- cached content-derived facts ----------------------------------------------------------------

    def sort_keys(self, name: str) -> dict:
        """{uid: value} of one derived key (`put_sort_keys`) for the messages that have it."""
        return dict(self.db.execute("SELECT uid, value FROM sortkey WHERE name = ?", (name,)).fetchall())

    def put_sort_keys(self, name: str, values: dict) -> None:
        """Keep derived values (numbers or text) of messages present in `msg` (inside a transaction)."""
        self.db.executemany("INSERT OR REPLACE INTO sortkey SELECT ?, uid, ? FROM msg WHERE uid = ?",
                            ((name, v, u) for u, v in values.items()))

    def memo_table(self) -> "MemoTable":
        return MemoTable(self)


# The cached facts a caller may keep per message, and the column each lives in ("headers",
# {lower-case name: [unfolded values]}, lives in the `field` table, one row per field).
COLUMNS = {"ENVELOPE": "envelope", "BODYSTRUCTURE": "bodystructure", "BODY": "body",
           # RFC 8474 / RFC 8970 answers (imapserver/objectid.py); added to older indexes by _connect
           "EMAILID": "emailid", "THREADID": "threadid", "PREVIEW": "preview"}
ADDED_COLUMNS = ("emailid", "threadid", "preview")
HEADERS = "headers"


class MemoTable:
    """The cached facts of one mailbox's messages, loaded one column (or one header field) at a
    time for the whole mailbox when first asked for: FETCH 1:* ENVELOPE reads the envelopes and
    nothing else, SEARCH SUBJECT the subjects."""

    def __init__(self, index: MailboxIndex) -> None:
        self.index = index
        self.memos: dict[int, Memo] = {}
        self.loaded: set[str] = set()
        self.dirty: dict[int, set] = {}
        self.with_fields: set[int] | None = None     # UIDs whose header fields are stored
        self.fields: dict[str, dict[int, list]] = {}
        self.some_fields: dict[str, dict[int, list]] = {}   # field -> values of some UIDs (fields_like)

    def memo(self, uid: int) -> "Memo":
        m = self.memos.get(uid)
        if m is None:
            m = self.memos[uid] = Memo(self, uid)
        return m

    def _query(self, sql: str, args=()) -> list:
        try:
            return self.index.db.execute(sql, args).fetchall()
        except (sqlite3.Error, AttributeError) as e:
            _log().warning("%s: cannot read the index's cache: %s", self.index.path, e)
            return []   # a cache miss: the caller parses the message

    def load(self, key: str) -> None:
        self.loaded.add(key)
        col = COLUMNS[key]
        for uid, value in self._query(f"SELECT uid, {col} FROM msg WHERE {col} IS NOT NULL"):
            m = self.memo(uid)
            if dict.get(m, key) is None:
                dict.__setitem__(m, key, value)

    def all_fields(self, name: str) -> tuple[set, dict]:
        """(UIDs whose header fields are stored, {uid: values of field `name`})."""
        if self.with_fields is None:
            self.with_fields = {r[0] for r in self._query("SELECT uid FROM msg WHERE hdr = 1")}
        values = self.fields.get(name)
        if values is None:
            values = self.fields[name] = {}
            for u, v in self._query("SELECT uid, value FROM field WHERE name = ? ORDER BY uid", (name,)):
                values.setdefault(u, []).append(v)
        for uid, m in self.memos.items():     # fields parsed in this session, not yet written
            h = dict.get(m, HEADERS)
            if h is not None and uid not in self.with_fields:
                values[uid] = list(h.get(name, []))
        return self.with_fields | {u for u, m in self.memos.items() if dict.get(m, HEADERS) is not None}, values

    def fields_like(self, name: str, needle: str) -> tuple[set, dict]:
        """As all_fields(name), but {uid: values} only for the UIDs whose field may contain
        `needle` (ASCII, compared case-insensitively): sqlite leaves out every value that is plain
        ASCII without an encoded word and does not contain it, so the caller decodes and
        compares the few that remain, not the whole mailbox's."""
        if name in self.fields or not needle or not needle.isascii():
            return self.all_fields(name)
        if self.with_fields is None:
            self.with_fields = {r[0] for r in self._query("SELECT uid FROM msg WHERE hdr = 1")}
        values: dict[int, list] = {}
        # length(text) < length(blob): a byte of a multi-byte UTF-8 character, whose case folding
        # may be ASCII (U+212A KELVIN SIGN is "k"): left to the caller.
        for u, v in self._query("SELECT uid, value FROM field WHERE name = ? AND uid IN "
                                "(SELECT uid FROM field WHERE name = ? AND (instr(lower(value), ?) > 0 "
                                "OR instr(value, '=?') > 0 OR length(CAST(value AS TEXT)) <> length(value))) "
                                "ORDER BY uid, rowid", (name, name, needle.lower())):
            values.setdefault(u, []).append(v)
        self.some_fields.setdefault(name, {}).update(values)
        for uid, m in self.memos.items():     # fields parsed in this session, not yet written
            h = dict.get(m, HEADERS)
            if h is not None and uid not in self.with_fields:
                values[uid] = list(h.get(name, []))
        return self.with_fields | {u for u, m in self.memos.items() if dict.get(m, HEADERS) is not None}, values

    def field(self, uid: int, name: str) -> list | None:
        """The values of header field `name` of message `uid`, or None when its fields are not stored."""
        if self.with_fields is None:
            self.with_fields = {r[0] for r in self._query("SELECT uid FROM msg WHERE hdr = 1")}
        if uid not in self.with_fields:
            return None
        values = self.fields.get(name)
        if values is None:
            some = self.some_fields.get(name)
            if some is not None and uid in some:
                return some[uid]
            values = self.fields[name] = {}
            for u, v in self._query("SELECT uid, value FROM field WHERE name = ? ORDER BY uid", (name,)):
                values.setdefault(u, []).append(v)
        return values.get(uid, [])

    def forget(self, uids) -> None:
        for uid in uids:
            self.memos.pop(uid, None)
            self.dirty.pop(uid, None)
            if self.with_fields is not None:
                self.with_fields.discard(uid)
            for some in self.some_fields.values():
                some.pop(uid, None)

    def flush(self) -> None:
        """Write what callers added (the caller runs this inside a transaction)."""
        dirty, self.dirty = self.dirty, {}
        db = self.index.db
        for uid, keys in dirty.items():
            m = self.memos.get(uid)
            if m is None:
                continue
            for key in keys:
                value = dict.get(m, key)
                if key == HEADERS:
                    db.execute("DELETE FROM field WHERE uid = ?", (uid,))
                    db.executemany("INSERT INTO field VALUES (?, ?, ?)",
                                   ((uid, n, v) for n, vals in value.items() for v in vals))
                    db.execute("UPDATE msg SET hdr = 1 WHERE uid = ?", (uid,))
                    if self.with_fields is not None:
                        self.with_fields.add(uid)
                    for n, vals in value.items():
                        if n in self.fields:
                            self.fields[n][uid] = list(vals)
                    for some in self.some_fields.values():
                        some.pop(uid, None)
                else:
                    db.execute(f"UPDATE msg SET {COLUMNS[key]} = ? WHERE uid = ?", (value, uid))


class Memo(dict):
    """One message's cached facts, as a dict (what fetch.py and search.py expect); columns are
    loaded from the index on first use. Header fields are asked for one at a time
    (`header_field(name)`); the whole {name: values} dict is only ever written."""

    __slots__ = ("table", "uid")

    def __init__(self, table: MemoTable, uid: int) -> None:
        super().__init__()
        self.table = table
        self.uid = uid

    def _need(self, key) -> None:
        if key in COLUMNS and key not in self.table.loaded:
            self.table.load(key)

    def header_field(self, name: str) -> list | None:
        """[values] of one header field (lower-case name); None when they are not cached."""
        h = dict.get(self, HEADERS)
        if h is not None:
            return h.get(name, [])
        return self.table.field(self.uid, name)

    def get(self, key, default=None):
        self._need(key)
        return dict.get(self, key, default)

    def __contains__(self, key) -> bool:
        self._need(key)
        return dict.__contains__(self, key)

    def __getitem__(self, key):
        self._need(key)
        return dict.__getitem__(self, key)

    def __setitem__(self, key, value) -> None:
        dict.__setitem__(self, key, value)
        if key in COLUMNS or key == HEADERS:
            self.table.dirty.setdefault(self.uid, set()).add(key)


def _copy_owner(ref: str, path: str) -> None:
    """Files we write in a folder belong to the folder's owner (the server may run as root)."""
    if os.geteuid() != 0:
        return
    try:
        st = os.stat(ref)
        os.chown(path, st.st_uid, st.st_gid)
    except OSError:
        pass
