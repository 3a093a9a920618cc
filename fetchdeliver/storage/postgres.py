"""The `postgres` store: a user's mailboxes in PostgreSQL (psycopg 3 and its connection pool).

Location: `postgresql://DBUSER@HOST:PORT/DB?mailuser=alice` (the libpq URL; `mailuser`
names the mail user, default the login name of the process). Several nodes may use one
database at once:

- Bodies are stored byte-exact in `fd_blob`, keyed by their SHA-256: one LMTP
  transaction to 50 recipients stores the body once.
- UIDs and MODSEQs come from the mailbox row (`UPDATE fd_mailbox SET uidnext = uidnext + 1
  ... RETURNING`), inside the transaction that inserts the message: the row lock serialises
  writers, so two nodes never hand out one UID; UIDVALIDITY from a sequence.
- `deliver()`/`append()` return only after COMMIT; a database that is away raises
  TemporaryDeliveryError (LMTP 4xx, MDA exit 75) and nothing is half-stored, because the
  blob, the message row and the UID counter change in the one transaction.
- The IMAP server's cached parts (ENVELOPE, BODYSTRUCTURE, BODY, header fields) are kept
  in the message row and `fd_field`, as the Maildir index keeps them; expunged UIDs with
  their MODSEQ in `fd_expunged` (QRESYNC's VANISHED).
- Each commit that changes a mailbox sends `NOTIFY fd_mailbox, '<id>'` (queued by the UPDATE that
  allocates its UID/MODSEQ, in the same round trip).

The schema is created by `fetchdeliver db migrate` (storage/pgschema.py).
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import threading
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fetchdeliver.errors import ConfigError, MailboxNotFound, TemporaryDeliveryError
from fetchdeliver.errors import QuotaExceeded
from fetchdeliver.storage.base import (
    SPECIAL_USE_NAMES,
    SYSTEM_FLAGS,
    MailboxEntry,
    MessageInfo,
    Quota,
    QuotaStatus,
    Receipt,
    StorageError,
    Mailbox,
    Store,
    add_children_attributes,
    canonical_flag,
)
from fetchdeliver.storage.index import COLUMNS, HEADERS, Memo   # one lazy cached-parts dict for both stores

log = logging.getLogger(__name__)

_POOLS: dict[str, object] = {}
_POOLS_LOCK = threading.Lock()
_CHECKED: set[str] = set()


class _MessageCache:
    """Recently read messages of this process, by (database, mailbox id, UID): a message row never
    changes its bytes and a UID is never reused in a mailbox (ids come from a sequence), so an
    entry cannot go stale; it only spares the round trip when sessions (a phone and a desktop, a
    client that fetches the header and then the body) read the same message again. Bounded by
    MAX_BYTES; messages above MAX_ONE are not kept."""

    MAX_BYTES = 32 << 20
    MAX_ONE = 1 << 20

    def __init__(self) -> None:
        from collections import OrderedDict

        self.lock = threading.Lock()
        self.items: OrderedDict[tuple, bytes] = OrderedDict()
        self.size = 0

    def get(self, key: tuple) -> bytes | None:
        with self.lock:
            raw = self.items.get(key)
            if raw is not None:
                self.items.move_to_end(key)
            return raw

    def put(self, key: tuple, raw: bytes) -> None:
        if len(raw) > self.MAX_ONE:
            return
        with self.lock:
            if key in self.items:
                return
            self.items[key] = raw
            self.size += len(raw)
            while self.size > self.MAX_BYTES:
                _, old = self.items.popitem(last=False)
                self.size -= len(old)


_MESSAGES = _MessageCache()


def split_location(url: str) -> tuple[str, str | None]:
    """("postgresql://..." without our own parameters, mail user or None)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    user = None
    rest = []
    for k, v in query:
        if k == "mailuser":
            user = v
        elif k not in OWN_PARAMS:
            rest.append((k, v))
    return urlunsplit(parts._replace(query=urlencode(rest))), user


OWN_PARAMS = ("mailuser", "blobs", "blob_min_size")


def blobs_from_location(url: str):
    """The BlobStore named by `?blobs=s3://...` (and `blob_min_size=`), or None."""
    q = dict(parse_qsl(urlsplit(url).query))
    if not q.get("blobs"):
        return None
    from fetchdeliver.storage.blobs import DEFAULT_MIN_SIZE, BlobStore

    return BlobStore(q["blobs"], int(q.get("blob_min_size", DEFAULT_MIN_SIZE)))


def _redact(url: str) -> str:
    p = urlsplit(url)
    if p.password:
        netloc = p.netloc.replace(":" + p.password + "@", ":***@")
        return urlunsplit(p._replace(netloc=netloc))
    return url


def pool_for(dsn: str, checked: bool = True):
    """The process's connection pool for `dsn` (opened on first use).

    Two per database: the delivery face's pool checks a connection before lending it (one round
    trip), so that the first delivery after a database restart succeeds instead of failing on a
    dead connection; the access face's pool (IMAP reads, a round trip or two per command) does
    not, and a command that meets a dead connection answers NO [UNAVAILABLE] once. Only the
    access face's connections are in autocommit (every write of it is in conn.transaction())."""
    key = (dsn, checked)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            from psycopg_pool import ConnectionPool

            # The access face's connections are in autocommit: a read is then one round trip, not
            # three (psycopg's implicit BEGIN, the SELECT, the pool's COMMIT); its writes all run
            # in `with conn.transaction()`, which still makes them atomic.
            pool = ConnectionPool(dsn, min_size=1, max_size=8, open=True, timeout=5,
                                  check=ConnectionPool.check_connection if checked else None,
                                  kwargs=None if checked else {"autocommit": True},
                                  name="fetchdeliver" if checked else "fetchdeliver-access")
            _POOLS[key] = pool
        return pool


def close_pools() -> None:
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
        _CHECKED.clear()
    for p in pools:
        p.close()


def _unavailable(e: Exception, url: str) -> TemporaryDeliveryError:
    return TemporaryDeliveryError(f"PostgreSQL at {_redact(url)} is not available: {e}".strip())


def rfc822_size(raw: bytes) -> int:
    return len(raw) + raw.count(b"\n") - raw.count(b"\r\n")


def _is_transient(e: Exception) -> bool:
    import psycopg

    return isinstance(e, (psycopg.OperationalError, psycopg.errors.SerializationFailure,
                          psycopg.errors.DeadlockDetected)) or type(e).__name__ == "PoolTimeout"


def _access(method):
    """For the access face (IMAP...): a database that is away is StorageError UNAVAILABLE (the
    session answers NO and keeps serving), not the delivery face's TemporaryDeliveryError."""
    import functools

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except TemporaryDeliveryError as e:
            raise StorageError(str(e), "UNAVAILABLE") from e

    return wrapper


class _Listener:
    """LISTEN fd_mailbox for one database, in a daemon thread: a NOTIFY (a commit on any node)
    touches `<dir>/<mailbox id>/changed`, which the IMAP server's file watcher sees (IDLE wakes
    within a second, whichever node delivered). Reconnects after a database restart."""

    def __init__(self, dsn: str) -> None:
        import atexit
        import tempfile

        self.dsn = dsn
        self.ready = threading.Event()      # set while LISTEN is in force
        self.generation = 0                 # LISTENs so far: a new one may have missed NOTIFYs
        self.counts: dict[int, int] = {}    # NOTIFYs (and this process's own commits) per mailbox id
        self.dir = tempfile.mkdtemp(prefix="fetchdeliver-notify-")
        atexit.register(self._cleanup)
        self.thread = threading.Thread(target=self._run, name="fetchdeliver-pg-listen", daemon=True)
        self.thread.start()

    def path(self, mailbox_id: int) -> str:
        import os

        d = os.path.join(self.dir, str(mailbox_id))
        os.makedirs(d, exist_ok=True)
        return d

    def token(self, mailbox_id: int) -> tuple | None:
        """Changes iff a NOTIFY for the mailbox arrived (or LISTEN was re-established); None while
        not listening. PostgresMailbox.sync() asks the database only when it changed."""
        if not self.ready.is_set():
            return None
        return self.generation, self.counts.get(mailbox_id, 0)

    def note(self, mailbox_id: int) -> None:
        """A commit of this process changed the mailbox: its other sessions look again at once,
        without waiting for the NOTIFY to come round."""
        with _POOLS_LOCK:
            self.counts[mailbox_id] = self.counts.get(mailbox_id, 0) + 1

    def _touch(self, mailbox_id: str) -> None:
        import os

        if not mailbox_id.isdigit():
            return
        self.note(int(mailbox_id))
        d = os.path.join(self.dir, mailbox_id)
        if os.path.isdir(d):   # someone watches this mailbox
            with open(os.path.join(d, "changed"), "ab") as f:
                f.write(b".")

    def _run(self) -> None:
        import psycopg

        delay = 0.5
        while True:
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
                    conn.execute("LISTEN fd_mailbox")
                    self.generation += 1
                    self.ready.set()
                    delay = 0.5
                    for n in conn.notifies():
                        self._touch(n.payload)
            except Exception as e:   # the database went away: listen again when it is back
                self.ready.clear()
                log.debug("LISTEN fd_mailbox: %s; again in %.1fs", e, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10)

    def _cleanup(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


_LISTENERS: dict[str, _Listener] = {}


def changed(dsn: str, *mailbox_ids: int) -> None:
    """After a commit that changed these mailboxes: this process's sessions see it at once."""
    li = _LISTENERS.get(dsn)
    if li is not None:
        for i in mailbox_ids:
            li.note(i)


def listener_for(dsn: str) -> _Listener:
    with _POOLS_LOCK:
        li = _LISTENERS.get(dsn)
        if li is None:
            li = _LISTENERS[dsn] = _Listener(dsn)
        return li


class PostgresStore(Store):
    kind = "postgres"
    separator = "/"

    def __init__(self, url: str, user: str | None = None, blobs=None) -> None:
        dsn, url_user = split_location(url)
        self.blobs = blobs if blobs is not None else blobs_from_location(url)   # BlobStore or None
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"not a PostgreSQL URL: {url!r} (expected postgresql://USER@HOST/DB)",
                              key="storage.url")
        self.url = dsn
        self.user = user or url_user or getpass.getuser()
        self._user_id: int | None = None

    def for_user(self, user: str) -> "PostgresStore":
        """The same database, another mail user's mailboxes."""
        return PostgresStore(self.url, user=user, blobs=self.blobs)

    # -- connections --------------------------------------------------------------------------------

    def connection(self, checked: bool = True):
        """A pooled connection (context manager); transient failures become TemporaryDeliveryError.
        checked=False: from the access face's pool (see pool_for)."""
        return _Borrow(self, checked)

    def user_id(self, conn) -> int:
        if self._user_id is None:
            row = conn.execute("SELECT id FROM fd_user WHERE name = %s", (self.user,)).fetchone()
            if row is not None:
                self._user_id = row[0]
                return row[0]
            # created in the caller's transaction: not cached, the transaction may yet roll back
            conn.execute("INSERT INTO fd_user (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                         (self.user,))
            return conn.execute("SELECT id FROM fd_user WHERE name = %s", (self.user,)).fetchone()[0]
        return self._user_id

    def _mailbox_row(self, conn, name: str, create: bool = False, special_use=()):
        uid = self.user_id(conn)
        name = _normalise(name)
        row = conn.execute("SELECT id, uidvalidity FROM fd_mailbox WHERE user_id = %s AND name = %s",
                           (uid, name)).fetchone()
        if row is None and (create or name == "INBOX"):
            conn.execute("INSERT INTO fd_mailbox (user_id, name, uidvalidity, special_use) "
                         "VALUES (%s, %s, nextval('fd_uidvalidity'), %s) ON CONFLICT DO NOTHING",
                         (uid, name, list(special_use)))
            row = conn.execute("SELECT id, uidvalidity FROM fd_mailbox WHERE user_id = %s AND name = %s",
                               (uid, name)).fetchone()
        return row

    # -- delivery face ------------------------------------------------------------------------------

    def deliver(self, raw: bytes, mailbox: str = "INBOX", flags=(), *, sender: str = "",
                create: bool = True) -> Receipt:
        quota = self.quota
        if quota is not None:
            quota.check(rfc822_size(raw))    # refused before a blob is uploaded
        with self.connection() as conn:
            with conn.transaction():
                row = self._mailbox_row(conn, mailbox, create=create)
                if row is None:
                    raise MailboxNotFound(f"mailbox {mailbox!r} of {self.user} does not exist")
                uid = insert_message(conn, row[0], raw, flags, time.time(), blobs=self.blobs)
                if quota is not None:
                    quota.enforce(conn, rfc822_size(raw), 1)   # raises: the transaction rolls back
        mbox_id = row[0]
        changed(self.url, mbox_id)

        def undo():
            with self.connection() as c, c.transaction():
                expunge_uids(c, mbox_id, [uid])
            changed(self.url, mbox_id)

        return Receipt("postgres", mailbox, None, undo=undo, uid=uid)

    def find_tokens(self, wanted, since: float) -> set[str]:
        """Which fetch tokens (fetchdeliver/fetch.py's crash recovery) are in this user's messages
        stored since `since`. The token is in the Received: field at the top, kept in the row's
        prefix; a row is there only if its whole transaction committed, so found means delivered."""
        tokens = [t.encode() for t in wanted]
        found: set[str] = set()
        with self.connection() as conn:
            rows = conn.execute("SELECT m.prefix FROM fd_message m JOIN fd_mailbox b ON b.id = m.mailbox_id "
                                "JOIN fd_user u ON u.id = b.user_id WHERE u.name = %s AND m.internaldate >= %s",
                                (self.user, since)).fetchall()
        for (prefix,) in rows:
            prefix = bytes(prefix)
            found.update(t.decode() for t in tokens if t in prefix)
        return found

    def describe(self, mailbox: str) -> str:
        return f"mailbox {mailbox!r} of {self.user} in {_redact(self.url)}"

    # -- access face --------------------------------------------------------------------------------

    @_access
    def list(self) -> list[MailboxEntry]:
        with self.connection() as conn:
            with conn.transaction():
                self._mailbox_row(conn, "INBOX")
                rows = conn.execute("SELECT name, special_use FROM fd_mailbox WHERE user_id = %s",
                                    (self.user_id(conn),)).fetchall()
        return add_children_attributes([MailboxEntry(n, su) for n, su in rows], self.separator)

    def open(self, name: str, readonly: bool = False) -> "PostgresMailbox":
        try:
            with self.connection() as conn:
                with conn.transaction():
                    row = self._mailbox_row(conn, name)
        except TemporaryDeliveryError as e:
            raise StorageError(str(e), "UNAVAILABLE") from e
        if row is None:
            raise StorageError(f"Mailbox doesn't exist: {name}", "NONEXISTENT")
        return PostgresMailbox(self, _normalise(name), row[0], row[1], readonly)

    def exists(self, name: str) -> bool:
        with self.connection() as conn:
            return conn.execute("SELECT 1 FROM fd_mailbox WHERE user_id = %s AND name = %s",
                                (self.user_id(conn), _normalise(name))).fetchone() is not None \
                or _normalise(name) == "INBOX"

    @_access
    def create(self, name: str, special_use: tuple[str, ...] = ()) -> None:
        name = _normalise(name)
        if not name or name.startswith("/") or name.endswith("/") or "//" in name:
            raise StorageError(f"invalid mailbox name {name!r}", "CANNOT")
        if not special_use:
            su = SPECIAL_USE_NAMES.get(name.lower())
            special_use = (su,) if su else ()
        with self.connection() as conn, conn.transaction():
            if conn.execute("SELECT 1 FROM fd_mailbox WHERE user_id = %s AND name = %s",
                            (self.user_id(conn), name)).fetchone():
                raise StorageError(f"Mailbox already exists: {name}", "ALREADYEXISTS")
            self._mailbox_row(conn, name, create=True, special_use=special_use)

    @_access
    def delete(self, name: str) -> None:
        name = _normalise(name)
        if name == "INBOX":
            raise StorageError("INBOX cannot be deleted", "CANNOT")
        with self.connection() as conn, conn.transaction():
            uid = self.user_id(conn)
            if conn.execute("SELECT 1 FROM fd_mailbox WHERE user_id = %s AND name LIKE %s",
                            (uid, _like_prefix(name))).fetchone():
                raise StorageError(f"Mailbox has children, delete them first: {name}", "INUSE")
            row = conn.execute("DELETE FROM fd_mailbox WHERE user_id = %s AND name = %s RETURNING id",
                               (uid, name)).fetchone()
            if row is None:
                raise StorageError(f"Mailbox doesn't exist: {name}", "NONEXISTENT")
            _collect_blobs(conn)

    @_access
    def rename(self, old: str, new: str) -> None:
        old, new = _normalise(old), _normalise(new)
        with self.connection() as conn, conn.transaction():
            uid = self.user_id(conn)
            if conn.execute("SELECT 1 FROM fd_mailbox WHERE user_id = %s AND name = %s",
                            (uid, new)).fetchone():
                raise StorageError(f"Mailbox already exists: {new}", "ALREADYEXISTS")
            if old == "INBOX":
                # RFC 3501: RENAME INBOX moves its messages into a new mailbox; INBOX stays, empty.
                src = self._mailbox_row(conn, "INBOX")
                dst = self._mailbox_row(conn, new, create=True)
                msgs = conn.execute("SELECT uid FROM fd_message WHERE mailbox_id = %s ORDER BY uid",
                                    (src[0],)).fetchall()
                copy_rows(conn, src[0], dst[0], [r[0] for r in msgs])
                expunge_uids(conn, src[0], [r[0] for r in msgs])
                return
            n = conn.execute("UPDATE fd_mailbox SET name = %s || substr(name, %s) WHERE user_id = %s "
                             "AND (name = %s OR name LIKE %s)",
                             (new, len(old) + 1, uid, old, _like_prefix(old))).rowcount
            if n == 0:
                raise StorageError(f"Mailbox doesn't exist: {old}", "NONEXISTENT")

    @_access
    def subscriptions(self) -> list[str]:
        with self.connection() as conn:
            return [r[0] for r in conn.execute("SELECT name FROM fd_subscription WHERE user_id = %s "
                                               "ORDER BY name", (self.user_id(conn),))]

    @_access
    def subscribe(self, name: str) -> None:
        with self.connection() as conn, conn.transaction():
            conn.execute("INSERT INTO fd_subscription VALUES (%s, %s) ON CONFLICT DO NOTHING",
                         (self.user_id(conn), _normalise(name)))

    @_access
    def unsubscribe(self, name: str) -> None:
        with self.connection() as conn, conn.transaction():
            conn.execute("DELETE FROM fd_subscription WHERE user_id = %s AND name = %s",
                         (self.user_id(conn), _normalise(name)))

    # -- for `store copy` ---------------------------------------------------------------------------

    @_access
    def ensure_mailbox(self, name: str, uidvalidity: int | None = None) -> "PostgresMailbox":
        """Open `name`, creating it; an empty mailbox takes `uidvalidity` when given."""
        with self.connection() as conn, conn.transaction():
            row = self._mailbox_row(conn, name, create=True)
            if uidvalidity is not None and row[1] != uidvalidity:
                n = conn.execute("UPDATE fd_mailbox SET uidvalidity = %s WHERE id = %s AND NOT EXISTS "
                                 "(SELECT 1 FROM fd_message WHERE mailbox_id = %s) AND NOT EXISTS "
                                 "(SELECT 1 FROM fd_expunged WHERE mailbox_id = %s)",
                                 (uidvalidity, row[0], row[0], row[0])).rowcount
                if n:
                    row = (row[0], uidvalidity)
        return PostgresMailbox(self, _normalise(name), row[0], row[1], False)


class PostgresQuota(Quota):
    """A user's quota in PostgreSQL: usage in `fd_quota` (kept by triggers in every transaction that
    inserts or deletes a message, so all nodes see one number), limits from [quota] / the
    passwd-file, else the row's own (set by IMAP SETQUOTA). The check that counts is `enforce()`,
    inside the delivering transaction after the insert: the trigger's row lock serialises one
    user's deliveries across nodes, so two cannot both take the last free bytes."""

    def __init__(self, store: "PostgresStore", limits=None, *, tempfail: bool = False) -> None:
        self.store = store
        self._limits = limits or (lambda: None)
        self.tempfail = tempfail

    def _row(self, conn) -> tuple[int, int, int | None, int | None]:
        row = conn.execute("SELECT bytes, messages, bytes_limit, messages_limit FROM fd_quota "
                           "WHERE user_id = %s", (self.store.user_id(conn),)).fetchone()
        return (int(row[0]), int(row[1]), row[2], row[3]) if row else (0, 0, None, None)

    def _status(self, conn) -> QuotaStatus:
        used, count, own_bytes, own_count = self._row(conn)
        limits = self._limits()
        if limits is None:
            limits = (own_bytes or None, own_count or None)
        return QuotaStatus(self.root, used, count, *limits)

    def status(self) -> QuotaStatus:
        with self.store.connection() as conn:
            return self._status(conn)

    def enforce(self, conn, size: int, count: int, *, grace: bool = True) -> None:
        """In the caller's transaction, after its inserts: QuotaExceeded if the user is now over.
        `grace`: for deliveries, not for IMAP APPEND/COPY (as Dovecot)."""
        if self.moving:
            return
        st = self._status(conn)
        before = QuotaStatus(st.root, st.bytes - size, st.messages - count, st.bytes_limit, st.messages_limit)
        resource = before.over_by(size, count, self.grace_bytes(before) if grace else 0)
        if resource is not None:
            raise self.exceeded(before, resource, size)

    def set_limits(self, bytes_limit: int | None, messages_limit: int | None) -> None:
        """The user's own limits (IMAP SETQUOTA); None removes one. Refused where [quota] sets them."""
        if self._limits() is not None:
            raise StorageError("the limits come from the configuration ([quota] or the passwd-file)", "CANNOT")
        with self.store.connection() as conn, conn.transaction():
            conn.execute("INSERT INTO fd_quota AS q (user_id, bytes_limit, messages_limit) VALUES (%s, %s, %s) "
                         "ON CONFLICT (user_id) DO UPDATE SET bytes_limit = excluded.bytes_limit, "
                         "messages_limit = excluded.messages_limit",
                         (self.store.user_id(conn), bytes_limit, messages_limit))


class _Borrow:
    """`with store.connection() as conn`: a pooled connection; driver and pool failures that a
    retry may cure become TemporaryDeliveryError."""

    def __init__(self, store: PostgresStore, checked: bool = True) -> None:
        self.store = store
        self.checked = checked
        self.cm = None

    def __enter__(self):
        try:
            self.cm = pool_for(self.store.url, self.checked).connection()
            conn = self.cm.__enter__()
        except Exception as e:
            if _is_transient(e):
                raise _unavailable(e, self.store.url) from e
            raise
        if self.store.url in _CHECKED:
            return conn
        try:
            from fetchdeliver.storage import pgschema

            pgschema.check(conn)
            _CHECKED.add(self.store.url)
            return conn
        except BaseException as e:
            self.cm.__exit__(type(e), e, e.__traceback__)
            if _is_transient(e):
                raise _unavailable(e, self.store.url) from e
            raise

    def __exit__(self, et, ev, tb):
        try:
            self.cm.__exit__(et, ev, tb)
        except Exception as e:
            if et is None and _is_transient(e):
                raise _unavailable(e, self.store.url) from e
            if et is None:
                raise
        if ev is not None and _is_transient(ev):
            raise _unavailable(ev, self.store.url) from ev
        return False


def _normalise(name: str) -> str:
    return "INBOX" if name.upper() == "INBOX" else name


def _like_prefix(name: str) -> str:
    return name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"


def _flags(flags) -> list[str]:
    return sorted({canonical_flag(f) for f in flags if f and f != "\\Recent"})


TRACE_FIELDS = (b"return-path:", b"delivered-to:", b"received:", b"x-original-to:")
MAX_PREFIX = 16 * 1024


def split_trace(raw: bytes) -> tuple[bytes, bytes]:
    """(the trace header fields at the top, the rest). One LMTP transaction to 50 recipients adds a
    different Delivered-To to each copy: the rest is the same bytes, stored once."""
    pos = 0
    low = raw[:MAX_PREFIX].lower()
    while low.startswith(TRACE_FIELDS, pos):
        nl = low.find(b"\n", pos)
        while nl >= 0 and low[nl + 1:nl + 2] in (b" ", b"\t"):
            nl = low.find(b"\n", nl + 1)
        if nl < 0:
            break
        pos = nl + 1
    return raw[:pos], raw[pos:]


SWEEP_LOCK = 0x66645F7377656570   # "fd_sweep": uploads share it, `store sweep` holds it alone


def store_blob(conn, raw: bytes, blobs=None) -> bytes:
    """The body's SHA-256, stored once (a body already there is not sent again): in the row, or,
    from `blobs.min_size` bytes on, in the blob store (uploaded before the row is written)."""
    digest = hashlib.sha256(raw).digest()
    if conn.execute("SELECT 1 FROM fd_blob WHERE sha256 = %s", (digest,)).fetchone() is None:
        if blobs is not None and len(raw) >= blobs.min_size:
            # Held from before the upload to the commit: `store sweep` (storage/sweep.py) takes it
            # exclusively, so it never deletes an object whose row is about to be committed.
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (SWEEP_LOCK,))
            ref = blobs.put(digest, raw)
            conn.execute("INSERT INTO fd_blob (sha256, size, body, s3) VALUES (%s, %s, NULL, %s) "
                         "ON CONFLICT DO NOTHING", (digest, len(raw), ref))
        else:
            conn.execute("INSERT INTO fd_blob (sha256, size, body) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                         (digest, len(raw), raw))
    return digest


def next_uid_modseq(conn, mailbox_id: int, n: int = 1, uid: int | None = None) -> tuple[int, int]:
    """Allocate n UIDs (or the given UID, for `store copy`) and one MODSEQ under the mailbox's row lock.
    Every change of a mailbox comes through here, so this statement also queues the mailbox's
    NOTIFY (sent at COMMIT, dropped by a rollback): no round trip of its own."""
    if uid is None:
        row = conn.execute("UPDATE fd_mailbox SET uidnext = uidnext + %s, highestmodseq = highestmodseq + 1 "
                           "WHERE id = %s RETURNING uidnext - %s, highestmodseq, "
                           "pg_notify('fd_mailbox', id::text)", (n, mailbox_id, n)).fetchone()
    else:
        row = conn.execute("UPDATE fd_mailbox SET uidnext = greatest(uidnext, %s + 1), "
                           "highestmodseq = highestmodseq + 1 WHERE id = %s RETURNING %s::bigint, highestmodseq, "
                           "pg_notify('fd_mailbox', id::text)", (uid, mailbox_id, uid)).fetchone()
    if row is None:
        raise StorageError("the mailbox was deleted meanwhile", "NONEXISTENT")
    return row[0], row[1]


def insert_message(conn, mailbox_id: int, raw: bytes, flags, internaldate: float,
                   uid: int | None = None, blobs=None) -> int:
    """Insert one message in the caller's transaction; its UID. NOTIFY goes out at COMMIT
    (queued by next_uid_modseq)."""
    prefix, rest = split_trace(raw)
    digest = store_blob(conn, rest, blobs)
    uid, modseq = next_uid_modseq(conn, mailbox_id, 1, uid)
    conn.execute("INSERT INTO fd_message (mailbox_id, uid, prefix, sha256, flags, internaldate, size, modseq) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                 (mailbox_id, uid, prefix, digest, _flags(flags), internaldate, rfc822_size(raw), modseq))
    return uid


def copy_rows(conn, src_id: int, dst_id: int, uids: list[int]) -> list[int]:
    """Copy messages between mailboxes inside the database (the body is shared, not copied)."""
    if not uids:
        return []
    first, modseq = next_uid_modseq(conn, dst_id, len(uids))
    new = list(range(first, first + len(uids)))
    conn.execute("""
        INSERT INTO fd_message (mailbox_id, uid, prefix, sha256, flags, internaldate, size, modseq,
                                envelope, bodystructure, body)
        SELECT %s, n.new_uid, m.prefix, m.sha256, m.flags, m.internaldate, m.size, %s, m.envelope, m.bodystructure, m.body
        FROM unnest(%s::bigint[], %s::bigint[]) AS n(old_uid, new_uid)
        JOIN fd_message m ON m.mailbox_id = %s AND m.uid = n.old_uid""",
                 (dst_id, modseq, uids, new, src_id))
    return new


def expunge_uids(conn, mailbox_id: int, uids: list[int]) -> None:
    if not uids:
        return
    _, modseq = next_uid_modseq(conn, mailbox_id, 0)
    gone = conn.execute("DELETE FROM fd_message WHERE mailbox_id = %s AND uid = ANY(%s) RETURNING uid, sha256",
                        (mailbox_id, list(uids))).fetchall()
    if gone:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO fd_expunged VALUES (%s, %s, %s) ON CONFLICT (mailbox_id, uid) "
                            "DO UPDATE SET modseq = excluded.modseq", [(mailbox_id, u, modseq) for u, _ in gone])
        _collect_blobs(conn, [d for _, d in gone])


def _collect_blobs(conn, digests=None) -> None:
    """Delete bodies no message refers to any more (those of `digests`, or all)."""
    if digests is None:
        conn.execute("DELETE FROM fd_blob b WHERE NOT EXISTS (SELECT 1 FROM fd_message m WHERE m.sha256 = b.sha256)")
    else:
        conn.execute("DELETE FROM fd_blob b WHERE b.sha256 = ANY(%s) AND NOT EXISTS "
                     "(SELECT 1 FROM fd_message m WHERE m.sha256 = b.sha256)", (list(set(digests)),))


class PostgresMailbox(Mailbox):
    def __init__(self, store: PostgresStore, name: str, mailbox_id: int, uidvalidity: int,
                 readonly: bool) -> None:
        self.store = store
        self.name = name
        self.id = mailbox_id
        self.uidvalidity = uidvalidity
        self.readonly = readonly
        self._msgs: list[MessageInfo] = []
        self._by_uid: dict[int, MessageInfo] = {}
        self._modseq = -1
        self._uidnext = 1
        self._memo: _MemoTable | None = None
        self._pos: dict[int, int] = {}          # UID -> index in _msgs
        self._ahead: dict[int, tuple] = {}      # rows read ahead (see read())
        self._last_read = 0
        self._token: tuple | None = None     # the listener's token at the last check (see sync())
        self._checked = 0.0

    READ_AHEAD = 32
    READ_AHEAD_BYTES = 1 << 21

    def _conn(self):
        return self.store.connection(checked=False)

    def _temp(self, e: Exception) -> StorageError:
        return StorageError(str(e), "UNAVAILABLE")

    STALE_AFTER = 1.0   # seconds: re-checked at least this often, NOTIFY or not (a lost one costs no more)
    _SYNC = ("SELECT 0, highestmodseq, uidnext, NULL::text[], NULL::float8, NULL::bigint, NULL::bytea "
             "FROM fd_mailbox WHERE id = %s "
             "UNION ALL SELECT 1, uid, modseq, flags, internaldate, size, sha256 FROM fd_message "
             "WHERE mailbox_id = %s AND modseq > %s "
             "UNION ALL SELECT 2, uid, modseq, NULL, NULL, NULL, NULL FROM fd_expunged "
             "WHERE mailbox_id = %s AND modseq > %s")

    def sync(self) -> list[MessageInfo]:
        """The mailbox's messages, in UID order; the very list of the last call when nothing changed.

        One round trip, one snapshot: the mailbox row and the messages changed or expunged since
        the HIGHESTMODSEQ last seen (every change bumps it under the mailbox row's lock, so commits
        come in MODSEQ order and the delta misses nothing). None at all while this process LISTENs
        (_Listener), no NOTIFY for the mailbox came since the last check, and that check is less
        than STALE_AFTER old: a commit on any node announces itself before its client hears OK."""
        token = listener_for(self.store.url).token(self.id)
        now = time.monotonic()
        if token is not None and token == self._token and now - self._checked < self.STALE_AFTER:
            return self._msgs
        first = self._modseq < 0
        since = 0 if first else self._modseq
        try:
            with self._conn() as conn:
                rows = conn.execute(self._SYNC, (self.id, self.id, since, self.id,
                                                 1 << 62 if first else since)).fetchall()
        except TemporaryDeliveryError as e:
            raise self._temp(e) from e
        head = [r for r in rows if r[0] == 0]
        if not head:
            raise StorageError(f"Mailbox was deleted: {self.name}", "NONEXISTENT")
        self._token, self._checked = token, now
        highest, uidnext = head[0][1], head[0][2]
        if highest == self._modseq:
            self._uidnext = uidnext
            return self._msgs
        old = self._by_uid
        by_uid = {} if first else dict(old)
        last = self._msgs[-1].uid if self._msgs and not first else 0
        appended = True         # every new UID above the last one: the list grows at its end
        replaced = False
        for kind, uid, modseq, flags, idate, size, digest in rows:
            if kind == 1:
                fs = frozenset(flags)
                m = old.get(uid)
                if m is None or m.flags != fs or m.modseq != modseq:
                    if m is not None or uid <= last:
                        replaced = True
                    by_uid[uid] = MessageInfo(uid, fs, idate, digest, size, modseq)
                elif first:
                    by_uid[uid] = m
            elif kind == 2 and by_uid.pop(uid, None) is not None:
                replaced = True
        self._modseq, self._uidnext = highest, uidnext
        if first or replaced:
            msgs = sorted(by_uid.values(), key=lambda m: m.uid)
            appended = False
        else:
            msgs = self._msgs + sorted((m for u, m in by_uid.items() if u > last), key=lambda m: m.uid)
        if not first and not replaced and len(msgs) == len(self._msgs):
            return self._msgs   # only a MODSEQ went by (e.g. a change already applied here)
        self._msgs = msgs
        self._by_uid = by_uid
        if appended:
            self._pos.update((m.uid, i) for i, m in enumerate(msgs[len(self._pos):], len(self._pos)))
        else:
            self._pos = {m.uid: i for i, m in enumerate(msgs)}
            self._ahead = {}
        if self._memo is not None:
            self._memo.forget(set(old) - set(by_uid))
        return msgs

    @_access
    def uidnext(self) -> int:
        self.sync()
        return self._uidnext

    @_access
    def keywords(self) -> list[str]:
        return sorted({f for m in self.sync() for f in m.flags} - set(SYSTEM_FLAGS))

    def read(self, msg: MessageInfo) -> bytes:
        """The message's bytes. Reads in UID order (SEARCH on text or uncached headers, FETCH
        1:* BODY[]) are read ahead: the next messages of the mailbox, up to READ_AHEAD of them
        and READ_AHEAD_BYTES, come in the same round trip. A lone read fetches one message."""
        key = (self.store.url, self.id, msg.uid)
        raw = _MESSAGES.get(key)
        if raw is not None:
            self._last_read = msg.uid
            return raw
        raw = self._read(msg)
        _MESSAGES.put(key, raw)
        return raw

    def _read(self, msg: MessageInfo) -> bytes:
        try:
            row = self._ahead.pop(msg.uid, None)
            if row is None:
                uids = self._next_uids(msg)
                with self._conn() as conn:
                    rows = conn.execute("SELECT m.uid, m.prefix, b.body, b.s3, b.sha256 FROM fd_message m "
                                        "JOIN fd_blob b ON b.sha256 = m.sha256 WHERE m.mailbox_id = %s "
                                        "AND m.uid = ANY(%s)", (self.id, uids)).fetchall()
                self._ahead = {r[0]: r[1:] for r in rows}
                row = self._ahead.pop(msg.uid, None)
            self._last_read = msg.uid
            if row is None:
                raise StorageError(f"message UID {msg.uid} is gone", "EXPUNGEISSUED")
            if row[1] is not None:
                return bytes(row[0]) + bytes(row[1])
            blobs = self.store.blobs
            if blobs is None:   # stored by a node with a blob store; the reference says where
                from fetchdeliver.storage.blobs import BlobStore

                blobs = self.store.blobs = BlobStore(row[2].rsplit("/", 1)[0])
            return bytes(row[0]) + blobs.get(row[2], bytes(row[3]))
        except TemporaryDeliveryError as e:
            raise self._temp(e) from e

    def _next_uids(self, msg: MessageInfo) -> list[int]:
        """[msg.uid], and when the previous read was of the message before it, the messages after
        it (the read-ahead; bodies in the blob store are fetched only when read)."""
        uids = [msg.uid]
        pos = self._pos.get(msg.uid)
        if pos is None or pos == 0 or self._msgs[pos - 1].uid != self._last_read:
            return uids
        budget = self.READ_AHEAD_BYTES - (msg._size or 0)
        for m in self._msgs[pos + 1:pos + self.READ_AHEAD]:
            budget -= m._size or 0
            if budget < 0:
                break
            uids.append(m.uid)
        return uids

    def size(self, msg: MessageInfo) -> int:
        if msg._size is None:
            return super().size(msg)
        return msg._size

    @_access
    def set_flags(self, changes) -> None:
        if not changes:
            return
        with self._conn() as conn, conn.transaction():
            _, modseq = next_uid_modseq(conn, self.id, 0)
            with conn.cursor() as cur:
                cur.executemany("UPDATE fd_message SET flags = %s, modseq = %s WHERE mailbox_id = %s AND uid = %s",
                                [(_flags(f), modseq, self.id, m.uid) for m, f in changes])
        changed(self.store.url, self.id)
        for m, f in changes:
            m.flags = frozenset(_flags(f))
            m.modseq = modseq

    def append(self, raw: bytes, flags=(), internaldate: float | None = None) -> int:
        quota = self.store.quota
        try:
            if quota is not None:
                quota.check(rfc822_size(raw), grace=False)
            with self._conn() as conn, conn.transaction():
                uid = insert_message(conn, self.id, raw, flags,
                                     time.time() if internaldate is None else internaldate,
                                     blobs=self.store.blobs)
                if quota is not None:
                    quota.enforce(conn, rfc822_size(raw), 1, grace=False)
            changed(self.store.url, self.id)
            return uid
        except QuotaExceeded as e:
            raise StorageError(str(e), "OVERQUOTA") from e
        except TemporaryDeliveryError as e:
            raise self._temp(e) from e

    @_access
    def append_uid(self, uid: int, raw: bytes, flags, internaldate: float) -> int:
        """Append with a chosen UID (`store copy`); StorageError if the UID is taken or expunged."""
        import psycopg

        try:
            with self._conn() as conn, conn.transaction():
                if conn.execute("SELECT 1 FROM fd_expunged WHERE mailbox_id = %s AND uid = %s",
                                (self.id, uid)).fetchone():
                    raise StorageError(f"UID {uid} was used before in {self.name}", "CANNOT")
                uid = insert_message(conn, self.id, raw, flags, internaldate, uid=uid,
                                     blobs=self.store.blobs)
            changed(self.store.url, self.id)
            return uid
        except psycopg.errors.UniqueViolation as e:
            raise StorageError(f"UID {uid} is taken in {self.name}", "CANNOT") from e

    @_access
    def copy_to(self, msgs, dest) -> list[int]:
        if isinstance(dest, PostgresMailbox) and dest.store.url == self.store.url:
            quota = dest.store.quota
            with self._conn() as conn, conn.transaction():
                uids = copy_rows(conn, self.id, dest.id, [m.uid for m in msgs])
                if quota is not None and uids:
                    size = conn.execute("SELECT coalesce(sum(size), 0) FROM fd_message WHERE mailbox_id = %s "
                                        "AND uid = ANY(%s)", (dest.id, uids)).fetchone()[0]
                    try:
                        quota.enforce(conn, int(size), len(uids), grace=False)
                    except QuotaExceeded as e:
                        raise StorageError(str(e), "OVERQUOTA") from e
            changed(self.store.url, dest.id)
            return uids
        return super().copy_to(msgs, dest)

    @_access
    def expunge(self, msgs) -> None:
        with self._conn() as conn, conn.transaction():
            expunge_uids(conn, self.id, [m.uid for m in msgs])
        changed(self.store.url, self.id)

    @_access
    def highestmodseq(self) -> int:
        self.sync()
        return self._modseq

    def watch_paths(self) -> list[str]:
        """A directory touched whenever a NOTIFY for this mailbox arrives (see _Listener)."""
        li = listener_for(self.store.url)
        li.ready.wait(5)   # a commit right after IDLE's "+" is then announced
        return [li.path(self.id)]

    @_access
    def vanished_since(self, modseq: int) -> list[int]:
        with self._conn() as conn:
            return [r[0] for r in conn.execute("SELECT uid FROM fd_expunged WHERE mailbox_id = %s AND "
                                               "modseq > %s ORDER BY uid", (self.id, modseq))]

    # -- cached parts -------------------------------------------------------------------------------

    def cached(self, msg: MessageInfo) -> dict | None:
        if self._memo is None:
            self._memo = _MemoTable(self)
        return self._memo.memo(msg.uid)

    def flush_cached(self) -> None:
        if self._memo is not None and self._memo.dirty:
            try:
                self._memo.flush()
            except (TemporaryDeliveryError, StorageError) as e:
                log.warning("%s: cached parts not written: %s", self.name, e)   # a cache: lost is fine

    def cached_fields(self, name: str):
        if self._memo is None:
            self._memo = _MemoTable(self)
        return self._memo.all_fields(name)


class _MemoTable:
    """Cached facts of one mailbox, loaded a column (or a header field) at a time for the whole
    mailbox, as the Maildir index does (storage/index.py)."""

    def __init__(self, mbox: PostgresMailbox) -> None:
        self.mbox = mbox
        self.memos: dict[int, Memo] = {}
        self.loaded: set[str] = set()
        self.dirty: dict[int, set] = {}
        self.with_fields: set[int] | None = None
        self.fields: dict[str, dict[int, list]] = {}

    def memo(self, uid: int) -> "Memo":
        m = self.memos.get(uid)
        if m is None:
            m = self.memos[uid] = Memo(self, uid)  # the index's lazy dict, over this table
        return m

    def _query(self, sql: str, args=()) -> list:
        try:
            with self.mbox.store.connection(checked=False) as conn:
                return conn.execute(sql, args).fetchall()
        except TemporaryDeliveryError as e:
            log.warning("%s: cannot read cached parts: %s", self.mbox.name, e)
            return []

    def load(self, key: str) -> None:
        self.loaded.add(key)
        col = COLUMNS[key]
        for uid, value in self._query(f"SELECT uid, {col} FROM fd_message WHERE mailbox_id = %s "
                                      f"AND {col} IS NOT NULL", (self.mbox.id,)):
            m = self.memo(uid)
            if dict.get(m, key) is None:
                dict.__setitem__(m, key, bytes(value))

    def _with_fields(self) -> set[int]:
        if self.with_fields is None:
            self.with_fields = {r[0] for r in self._query("SELECT uid FROM fd_message WHERE mailbox_id = %s "
                                                          "AND hdr", (self.mbox.id,))}
        return self.with_fields

    def _field_values(self, name: str) -> dict[int, list]:
        values = self.fields.get(name)
        if values is None:
            values = self.fields[name] = {}
            for u, v in self._query("SELECT uid, value FROM fd_field WHERE mailbox_id = %s AND name = %s "
                                    "ORDER BY uid, pos", (self.mbox.id, name)):
                values.setdefault(u, []).append(bytes(v))
        return values

    def all_fields(self, name: str):
        with_fields = self._with_fields()
        values = self._field_values(name)
        for uid, m in self.memos.items():
            h = dict.get(m, HEADERS)
            if h is not None and uid not in with_fields:
                values[uid] = list(h.get(name, []))
        return with_fields | {u for u, m in self.memos.items() if dict.get(m, HEADERS) is not None}, values

    def field(self, uid: int, name: str):
        if uid not in self._with_fields():
            return None
        return self._field_values(name).get(uid, [])

    def forget(self, uids) -> None:
        for uid in uids:
            self.memos.pop(uid, None)
            self.dirty.pop(uid, None)
            if self.with_fields is not None:
                self.with_fields.discard(uid)

    def flush(self) -> None:
        """Write the parts cached since the last flush in one transaction and a few round trips
        (not two per message): one UPDATE claims the header fields of the messages that have none
        yet (another session may have written them first; an expunged message is skipped), one
        pipelined batch inserts their fields, one per column writes the columns, in UID order.
        A failure loses cached facts only (the caller logs it)."""
        dirty, self.dirty = self.dirty, {}
        mid = self.mbox.id
        heads: dict[int, dict] = {}
        cols: dict[str, list] = {}
        for uid in sorted(dirty):
            m = self.memos.get(uid)
            if m is None:
                continue
            for key in dirty[uid]:
                value = dict.get(m, key)
                if key == HEADERS:
                    if value is not None:
                        heads[uid] = value
                elif isinstance(value, (bytes, bytearray, memoryview)):
                    cols.setdefault(key, []).append((bytes(value), mid, uid))
        if not heads and not cols:
            return
        claimed: list[int] = []
        with self.mbox.store.connection() as conn, conn.transaction():
            if heads:
                claimed = sorted(r[0] for r in conn.execute(
                    "UPDATE fd_message SET hdr = true WHERE mailbox_id = %s AND uid = ANY(%s) AND NOT hdr "
                    "RETURNING uid", (mid, list(heads))).fetchall())
                rows = [(mid, uid, i, n, bytes(v)) for uid in claimed for i, (n, v) in
                        enumerate((n, v) for n, vals in heads[uid].items() for v in vals)]
                if rows:
                    with conn.cursor() as cur:
                        cur.executemany("INSERT INTO fd_field VALUES (%s, %s, %s, %s, %s)", rows)
            for key, args in cols.items():
                with conn.cursor() as cur:
                    cur.executemany(f"UPDATE fd_message SET {COLUMNS[key]} = %s WHERE mailbox_id = %s "
                                    f"AND uid = %s", args)
        for uid in claimed:
            if self.with_fields is not None:
                self.with_fields.add(uid)
            for n, vals in heads[uid].items():
                if n in self.fields:
                    self.fields[n][uid] = list(vals)


def from_location(args: str) -> PostgresStore:
    """Entry point for the locations "postgresql://..." and "postgres://..." (args after the colon)."""
    return PostgresStore("postgresql:" + args)
