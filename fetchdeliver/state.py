"""The state database: what was fetched and delivered, so nothing is delivered twice.

One SQLite database (WAL) in the state directory holds, per account:
- POP3 UIDLs and IMAP (folder, UIDVALIDITY, UID) already recorded; JMAP Email ids (account-wide and
  never reused, like UIDLs) in the POP3 table, and the JMAP Email state of the last complete pass;
- the duplicate memory (Message-ID + size + SHA-256 of the bytes) that makes a
  UIDVALIDITY change or a copied message harmless;
- "pending" deliveries: a row written (and committed) *before* a message is
  delivered, carrying the random token that goes into its Received: header.
  A crash between the durable delivery and the final commit leaves the row;
  the next run looks for the token in the mail store and, if found, records
  the message instead of delivering it again (the way mbsync uses X-TUID).
Plus memories the Sieve runtime uses: duplicate-test ids and vacation replies.

Per-account locks (fcntl, one file per account) keep two fetch runs from
working on the same account at once.
"""

from __future__ import annotations

import os
import sqlite3
import time

from fetchdeliver.errors import FetchdeliverError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pop3_seen (
    account TEXT NOT NULL, uidl TEXT NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (account, uidl)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS imap_folder (
    account TEXT NOT NULL, folder TEXT NOT NULL, uidvalidity INTEGER NOT NULL,
    PRIMARY KEY (account, folder)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS imap_seen (
    account TEXT NOT NULL, folder TEXT NOT NULL, uid INTEGER NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (account, folder, uid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS imap_sync (
    account TEXT NOT NULL, folder TEXT NOT NULL, uidvalidity INTEGER NOT NULL, highestmodseq INTEGER NOT NULL,
    uidnext INTEGER NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (account, folder)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jmap_sync (
    account TEXT PRIMARY KEY, jmap_account TEXT NOT NULL, scope TEXT NOT NULL, state TEXT NOT NULL,
    at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS delivered (
    account TEXT NOT NULL, message_id TEXT NOT NULL, size INTEGER NOT NULL, digest TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (account, message_id, size, digest)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    token TEXT PRIMARY KEY, account TEXT NOT NULL, folder TEXT NOT NULL, uidvalidity INTEGER,
    uid TEXT NOT NULL, message_id TEXT NOT NULL, size INTEGER NOT NULL, digest TEXT NOT NULL,
    at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS pending_account ON pending (account);
CREATE TABLE IF NOT EXISTS memory (
    kind TEXT NOT NULL, key TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (kind, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS daemon_account (
    account TEXT PRIMARY KEY, mode TEXT NOT NULL, last_poll REAL, result TEXT, next_poll REAL,
    error TEXT, error_since REAL, failures INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS daemon_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# The folder name used for POP3 rows in `pending` (POP3 has no folders).
POP3_FOLDER = ""


class StateError(FetchdeliverError):
    """The state database cannot be opened or written."""


class AccountBusy(FetchdeliverError):
    """Another process holds the account's lock."""


def message_key(raw: bytes, message_id: str | None) -> tuple[str, int, str]:
    """(Message-ID, size, SHA-256 hex) identifying a message for the duplicate memory."""
    import hashlib

    return (message_id or "", len(raw), hashlib.sha256(raw).hexdigest())


class Pending:
    """A delivery about to happen: where the message came from and the token in its Received: header."""

    __slots__ = ("token", "folder", "uidvalidity", "uid", "key", "at")

    def __init__(self, token: str, folder: str, uidvalidity: int | None, uid: str,
                 key: tuple[str, int, str], at: float) -> None:
        self.token = token
        self.folder = folder
        self.uidvalidity = uidvalidity
        self.uid = uid
        self.key = key
        self.at = at

    def __repr__(self) -> str:
        return f"Pending({self.token!r}, {self.folder!r}, uid={self.uid!r})"


def open_database(path: str, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open (creating) an SQLite database in WAL mode, autocommit; raises sqlite3.Error."""
    import fcntl

    # Switching a new database to WAL fails at once with "database is locked" (no busy
    # wait) while another process opens it too (two cron runs): open it one at a time.
    init_fd = os.open(path + ".init.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(init_fd, fcntl.LOCK_EX)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a commit is where we say.
        db = sqlite3.connect(path, timeout=60, isolation_level=None)
        db.execute("PRAGMA busy_timeout=60000")
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before we deliver or acknowledge anything that relies on it.
        db.execute(f"PRAGMA synchronous={synchronous}")
        return db
    finally:
        os.close(init_fd)


def new_token() -> str:
    return "fd" + os.urandom(10).hex()


class AccountLocks:
    """Per-account locks on this machine (fcntl, one file per account under `self.dir/locks`).

    Across machines, `fetchdeliver fetch` with [storage] url also takes a lease in PostgreSQL
    (fetchdeliver/storage/leases.py); this lock keeps two runs on one node apart."""

    dir: str
    _locks: dict[str, int]

    # -- locks ----------------------------------------------------------------------
    def lock_account(self, account: str, *, wait: float = 0.0) -> None:
        """Take the account's lock (fcntl, released when the process dies); AccountBusy if held.

        `wait` seconds are spent retrying before giving up.
        """
        import fcntl
        import hashlib

        if account in self._locks:
            return
        lock_dir = os.path.join(self.dir, "locks")
        os.makedirs(lock_dir, mode=0o700, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in account)[:60]
        digest = hashlib.sha256(account.encode()).hexdigest()[:8]
        path = os.path.join(lock_dir, f"{safe}-{digest}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                    os.close(fd)
                    who = f" (pid {holder})" if holder.isdigit() else ""
                    raise AccountBusy(f"another fetch{who} is working on this account") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._locks[account] = fd

    def unlock_account(self, account: str) -> None:
        fd = self._locks.pop(account, None)
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the fcntl lock


def open_state(settings, *, synchronous: str = "FULL"):
    """The state backend for `settings`: PostgreSQL (fetchdeliver.storage.pgstate.PgState) when
    [storage] url is set, so every node shares the fetch state and the memories; otherwise the
    sqlite State in the state directory. Both have the same public methods."""
    url = (settings.data.get("storage") or {}).get("url")
    if url:
        from fetchdeliver.storage.pgstate import PgState

        return PgState(url, settings.state_dir)
    return State(settings.state_dir, synchronous=synchronous)


class State(AccountLocks):
    """The state database. One instance per process; not shared across threads."""

    def __init__(self, state_dir: str, *, synchronous: str = "FULL") -> None:
        self.dir = state_dir
        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise StateError(f"cannot create the state directory {state_dir}: {e.strerror}") from None
        self.path = os.path.join(state_dir, "state.sqlite")
        try:
            self.db = open_database(self.path, synchronous=synchronous)
            with self._tx():
                for stmt in SCHEMA.strip().split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.Error as e:
            raise StateError(f"state database {self.path}: {e}") from None
        self._locks: dict[str, int] = {}

    def close(self) -> None:
        for fd in self._locks.values():
            os.close(fd)
        self._locks.clear()
        self.db.close()

    def __enter__(self) -> "State":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _tx(self):
        return Transaction(self.db, self.path)

    # -- IMAP -----------------------------------------------------------------------
    def imap_uidvalidity(self, account: str, folder: str) -> int | None:
        row = self.db.execute("SELECT uidvalidity FROM imap_folder WHERE account=? AND folder=?",
                              (account, folder)).fetchone()
        return row[0] if row else None

    def imap_reset_folder(self, account: str, folder: str, uidvalidity: int,
                          seen_uids: Sequence[int] = ()) -> None:
        """Start tracking `folder` under `uidvalidity`, forgetting UIDs of any earlier one."""
        now = int(time.time())
        with self._tx():
            self.db.execute("DELETE FROM imap_seen WHERE account=? AND folder=?", (account, folder))
            self.db.execute("INSERT OR REPLACE INTO imap_folder VALUES (?,?,?)", (account, folder, uidvalidity))
            self.db.executemany("INSERT OR IGNORE INTO imap_seen VALUES (?,?,?,?)",
                                [(account, folder, int(u), now) for u in seen_uids])

    def imap_seen(self, account: str, folder: str) -> set[int]:
        return {r[0] for r in self.db.execute(
            "SELECT uid FROM imap_seen WHERE account=? AND folder=?", (account, folder))}

    def imap_forget(self, account: str, folder: str, uids) -> None:
        """Drop UIDs that are gone from the server (UIDs are never reused within a UIDVALIDITY)."""
        uids = list(uids)
        if uids:
            with self._tx():
                self.db.executemany("DELETE FROM imap_seen WHERE account=? AND folder=? AND uid=?",
                                    [(account, folder, int(u)) for u in uids])

    def imap_sync_point(self, account: str, folder: str) -> tuple[int, int, int, float] | None:
        """(UIDVALIDITY, HIGHESTMODSEQ, UIDNEXT, when) after the last complete pass over `folder` (CONDSTORE)."""
        row = self.db.execute("SELECT uidvalidity, highestmodseq, uidnext, at FROM imap_sync WHERE account=? AND "
                              "folder=?", (account, folder)).fetchone()
        return tuple(row) if row else None

    def set_imap_sync_point(self, account: str, folder: str, point: tuple[int, int, int] | None) -> None:
        """Remember (or with None forget) the point at which `folder` was completely fetched."""
        with self._tx():
            if point is None:
                self.db.execute("DELETE FROM imap_sync WHERE account=? AND folder=?", (account, folder))
            else:
                self.db.execute("INSERT OR REPLACE INTO imap_sync VALUES (?,?,?,?,?,?)",
                                (account, folder, *(int(x) for x in point[:3]), time.time()))

    # -- JMAP -----------------------------------------------------------------------
    # Email ids are recorded like UIDLs (pop3_seen/pop3_forget); this is the watermark.
    def jmap_sync_point(self, account: str) -> tuple[str, str, str, float] | None:
        """(JMAP accountId, scope, Email state, when the folders were last listed) after the last complete
        pass (`Email/changes` since it)."""
        row = self.db.execute("SELECT jmap_account, scope, state, at FROM jmap_sync WHERE account=?",
                              (account,)).fetchone()
        return tuple(row) if row else None

    def set_jmap_sync_point(self, account: str, point: tuple[str, str, str] | None, *,
                            at: float | None = None) -> None:
        """Remember (or with None forget) (accountId, scope, Email state) of a complete pass; `at`: when
        the folders were last listed completely (default: now)."""
        with self._tx():
            if point is None:
                self.db.execute("DELETE FROM jmap_sync WHERE account=?", (account,))
            else:
                self.db.execute("INSERT OR REPLACE INTO jmap_sync VALUES (?,?,?,?,?)",
                                (account, *(str(x) for x in point[:3]), time.time() if at is None else at))

    # -- POP3 -----------------------------------------------------------------------
    def pop3_seen(self, account: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT uidl FROM pop3_seen WHERE account=?", (account,))}

    def pop3_forget(self, account: str, uidls) -> None:
        uidls = list(uidls)
        if uidls:
            with self._tx():
                self.db.executemany("DELETE FROM pop3_seen WHERE account=? AND uidl=?",
                                    [(account, u) for u in uidls])

    # -- the delivery protocol ---------------------------------------------------------
    def is_delivered(self, account: str, key: tuple[str, int, str]) -> bool:
        return self.db.execute(
            "SELECT 1 FROM delivered WHERE account=? AND message_id=? AND size=? AND digest=?",
            (account, *key)).fetchone() is not None

    def add_pending(self, account: str, pending: list[Pending]) -> None:
        """Commit the intent to deliver these messages (before any of them is delivered)."""
        if not pending:
            return
        with self._tx():
            self.db.executemany(
                "INSERT INTO pending VALUES (?,?,?,?,?,?,?,?,?)",
                [(p.token, account, p.folder, p.uidvalidity, p.uid, *p.key, p.at) for p in pending])

    def pending(self, account: str) -> list[Pending]:
        rows = self.db.execute("SELECT token, folder, uidvalidity, uid, message_id, size, digest, at "
                               "FROM pending WHERE account=? ORDER BY at", (account,)).fetchall()
        return [Pending(r[0], r[1], r[2], r[3], (r[4], r[5], r[6]), r[7]) for r in rows]

    def complete(self, account: str, delivered: Sequence[Pending] = (), failed: Sequence[Pending] = (),
                 seen: Sequence[tuple[str, int | None, str]] = ()) -> None:
        """One commit: `delivered` become remembered (duplicate memory + UID/UIDL), `failed` are
        forgotten (they will be fetched again), `seen` are (folder, uidvalidity, uid) to record as
        fetched without a delivery (duplicates)."""
        now = int(time.time())
        with self._tx():
            for p in delivered:
                self.db.execute("INSERT OR IGNORE INTO delivered VALUES (?,?,?,?,?)", (account, *p.key, now))
                self._record_seen(account, p.folder, p.uidvalidity, p.uid, now)
            for folder, uidvalidity, uid in seen:
                self._record_seen(account, folder, uidvalidity, uid, now)
            tokens = [(p.token,) for p in (*delivered, *failed)]
            self.db.executemany("DELETE FROM pending WHERE token=?", tokens)

    def _record_seen(self, account: str, folder: str, uidvalidity: int | None, uid: str, now: int) -> None:
        if uidvalidity is None:  # POP3
            self.db.execute("INSERT OR IGNORE INTO pop3_seen VALUES (?,?,?)", (account, uid, now))
            return
        # Only under the UIDVALIDITY the folder is tracked with; an older one's UIDs mean nothing now.
        if self.imap_uidvalidity(account, folder) == uidvalidity:
            self.db.execute("INSERT OR IGNORE INTO imap_seen VALUES (?,?,?,?)",
                            (account, folder, int(uid), now))

    def drop_pending(self, pending: list[Pending]) -> None:
        if pending:
            with self._tx():
                self.db.executemany("DELETE FROM pending WHERE token=?", [(p.token,) for p in pending])

    # -- memories for Sieve ---------------------------------------------------------
    def remember(self, kind: str, key: str, seconds: float, *, now: float | None = None) -> bool:
        """True if (kind, key) was remembered and has not expired; otherwise remember it for
        `seconds` and return False. One atomic step, safe across processes."""
        now = time.time() if now is None else now
        with self._tx():
            row = self.db.execute("SELECT expires FROM memory WHERE kind=? AND key=?", (kind, key)).fetchone()
            if row is not None and row[0] > now:
                return True
            self.db.execute("INSERT OR REPLACE INTO memory VALUES (?,?,?)", (kind, key, now + seconds))
            return False

    def recalls(self, kind: str, keys: list[str], *, now: float | None = None) -> set[str]:
        """Which of `keys` are remembered (unexpired) under `kind`; remembers nothing new."""
        now = time.time() if now is None else now
        out: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            out |= {r[0] for r in self.db.execute(
                f"SELECT key FROM memory WHERE kind=? AND expires > ? AND key IN ({marks})", (kind, now, *chunk))}
        return out

    def duplicate_seen(self, key: str, seconds: float) -> bool:
        """Sieve `duplicate` (RFC 7352): was this id seen within its period? Records it if not."""
        return self.remember("duplicate", key, seconds)

    def vacation_seen(self, key: str, seconds: float) -> bool:
        """Sieve `vacation`: was a reply for this (sender, handle) key sent within `seconds`?"""
        return self.remember("vacation", key, seconds)

    def forget(self, kind: str, key: str) -> None:
        with self._tx():
            self.db.execute("DELETE FROM memory WHERE kind=? AND key=?", (kind, key))

    def expire_memory(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._tx():
            return self.db.execute("DELETE FROM memory WHERE expires <= ?", (now,)).rowcount


class Transaction:
    """`with Transaction(db, path):` BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception).

    sqlite errors come out as `error` ("<what> database PATH: ..."), the project's
    exception for that database (StateError here, QueueError for the outbound queue).
    """

    __slots__ = ("db", "path", "error", "what")

    def __init__(self, db: sqlite3.Connection, path: str, error: type = StateError, what: str = "state") -> None:
        self.db = db
        self.path = path
        self.error = error
        self.what = what

    def __enter__(self):
        # IMMEDIATE: take the write lock now, so two processes never both read-then-write stale data.
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise self.error(f"{self.what} database {self.path}: {e}") from None
        return self.db

    def __exit__(self, exc_type, exc, tb):
        try:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        except sqlite3.Error as e:
            raise self.error(f"{self.what} database {self.path}: {e}") from None
        if isinstance(exc, sqlite3.Error):
            raise self.error(f"{self.what} database {self.path}: {exc}") from exc
        return False
