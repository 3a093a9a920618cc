"""The state database in PostgreSQL ([storage] url): the same public methods as
fetchdeliver.state.State, so every node shares what was fetched and delivered.

- fetch state per account and folder (POP3 UIDLs, IMAP UIDVALIDITY + UIDs): a node that takes an
  account over (its lease expired, fetchdeliver/storage/leases.py) knows what the others fetched,
  also with `after = "keep"`;
- the duplicate memory (Message-ID + size + SHA-256) per account;
- pending deliveries: committed before a message is delivered, with the token that goes into its
  Received: header. Any node's next run of the account finds them (`pending()`), looks for the
  tokens in the postgres store (`PostgresStore.find_tokens`) and records instead of delivering again;
- Sieve memories (duplicate, vacation): `remember()` is one INSERT ... ON CONFLICT, atomic across
  nodes.

Tables: schema steps 5 and 7 of fetchdeliver/storage/pgschema.py (`fetchdeliver db migrate`). A database
that is away raises TemporaryDeliveryError (a FetchdeliverError): the fetch stops the account with
an error line and acts on nothing at the source.

The account locks stay local (fcntl files under the state directory): across nodes the fetch lease
keeps two nodes off one account. One database is one namespace, as one state directory is.
"""

from __future__ import annotations

import logging
import os
import time

from fetchdeliver.state import POP3_FOLDER, AccountLocks, Pending

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger(__name__)

__all__ = ["PgState", "POP3_FOLDER"]


class PgState(AccountLocks):
    """fetchdeliver.state.State's interface over PostgreSQL; safe to share between threads (pooled)."""

    def __init__(self, url: str, state_dir: str) -> None:
        from fetchdeliver.storage.leases import node_name
        from fetchdeliver.storage.postgres import PostgresStore

        self.url = url
        self.dir = state_dir                 # for the local account locks only
        self._locks: dict[str, int] = {}
        self._store = PostgresStore(url, user="-")     # its pooled connections
        self.node = node_name()

    def _tx(self):
        return Transaction(self._store)

    def close(self) -> None:
        for fd in self._locks.values():
            os.close(fd)
        self._locks.clear()

    def __enter__(self) -> "PgState":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- IMAP -----------------------------------------------------------------------
    def imap_uidvalidity(self, account: str, folder: str) -> int | None:
        with self._tx() as c:
            row = c.execute("SELECT uidvalidity FROM fd_fetch_folder WHERE account = %s AND folder = %s",
                            (account, folder)).fetchone()
        return int(row[0]) if row else None

    def imap_reset_folder(self, account: str, folder: str, uidvalidity: int, seen_uids: Sequence[int] = ()) -> None:
        """Start tracking `folder` under `uidvalidity`, forgetting UIDs of any earlier one."""
        with self._tx() as c:
            c.execute("DELETE FROM fd_fetch_imap WHERE account = %s AND folder = %s", (account, folder))
            c.execute("INSERT INTO fd_fetch_folder (account, folder, uidvalidity) VALUES (%s, %s, %s) "
                      "ON CONFLICT (account, folder) DO UPDATE SET uidvalidity = excluded.uidvalidity",
                      (account, folder, uidvalidity))
            uids = [int(u) for u in seen_uids]
            if uids:
                c.execute("INSERT INTO fd_fetch_imap (account, folder, uid) SELECT %s, %s, unnest(%s::bigint[]) "
                          "ON CONFLICT DO NOTHING", (account, folder, uids))

    def imap_seen(self, account: str, folder: str) -> set[int]:
        with self._tx() as c:
            return {int(r[0]) for r in c.execute(
                "SELECT uid FROM fd_fetch_imap WHERE account = %s AND folder = %s", (account, folder))}

    def imap_forget(self, account: str, folder: str, uids) -> None:
        uids = [int(u) for u in uids]
        if uids:
            with self._tx() as c:
                c.execute("DELETE FROM fd_fetch_imap WHERE account = %s AND folder = %s AND uid = ANY(%s)",
                          (account, folder, uids))

    def imap_sync_point(self, account: str, folder: str) -> tuple[int, int, int, float] | None:
        """(UIDVALIDITY, HIGHESTMODSEQ, UIDNEXT, when) after the last complete pass over `folder` (CONDSTORE)."""
        with self._tx() as c:
            row = c.execute("SELECT uidvalidity, highestmodseq, uidnext, at FROM fd_fetch_imap_sync "
                            "WHERE account = %s AND folder = %s", (account, folder)).fetchone()
        return (int(row[0]), int(row[1]), int(row[2]), float(row[3])) if row else None

    def set_imap_sync_point(self, account: str, folder: str, point: tuple[int, int, int] | None) -> None:
        """Remember (or with None forget) the point at which `folder` was completely fetched."""
        with self._tx() as c:
            if point is None:
                c.execute("DELETE FROM fd_fetch_imap_sync WHERE account = %s AND folder = %s", (account, folder))
            else:
                c.execute("INSERT INTO fd_fetch_imap_sync VALUES (%s, %s, %s, %s, %s, %s) "
                          "ON CONFLICT (account, folder) DO UPDATE SET uidvalidity = excluded.uidvalidity, "
                          "highestmodseq = excluded.highestmodseq, uidnext = excluded.uidnext, at = excluded.at",
                          (account, folder, *(int(x) for x in point[:3]), time.time()))

    # -- JMAP (Email ids are recorded like UIDLs; this is the watermark) -----------------
    def jmap_sync_point(self, account: str) -> tuple[str, str, str, float] | None:
        """(JMAP accountId, scope, Email state, when) after the last complete pass."""
        with self._tx() as c:
            row = c.execute("SELECT jmap_account, scope, state, at FROM fd_fetch_jmap_sync WHERE account = %s",
                            (account,)).fetchone()
        return (str(row[0]), str(row[1]), str(row[2]), float(row[3])) if row else None

    def set_jmap_sync_point(self, account: str, point: tuple[str, str, str] | None, *,
                            at: float | None = None) -> None:
        with self._tx() as c:
            if point is None:
                c.execute("DELETE FROM fd_fetch_jmap_sync WHERE account = %s", (account,))
            else:
                c.execute("INSERT INTO fd_fetch_jmap_sync VALUES (%s, %s, %s, %s, %s) ON CONFLICT (account) DO "
                          "UPDATE SET jmap_account = excluded.jmap_account, scope = excluded.scope, "
                          "state = excluded.state, at = excluded.at",
                          (account, *(str(x) for x in point[:3]), time.time() if at is None else at))

    # -- POP3 -----------------------------------------------------------------------
    def pop3_seen(self, account: str) -> set[str]:
        with self._tx() as c:
            return {r[0] for r in c.execute("SELECT uidl FROM fd_fetch_pop3 WHERE account = %s", (account,))}

    def pop3_forget(self, account: str, uidls) -> None:
        uidls = list(uidls)
        if uidls:
            with self._tx() as c:
                c.execute("DELETE FROM fd_fetch_pop3 WHERE account = %s AND uidl = ANY(%s)", (account, uidls))

    # -- the delivery protocol ---------------------------------------------------------
    def is_delivered(self, account: str, key: tuple[str, int, str]) -> bool:
        with self._tx() as c:
            return c.execute("SELECT 1 FROM fd_fetch_delivered WHERE account = %s AND message_id = %s "
                             "AND size = %s AND digest = %s", (account, *key)).fetchone() is not None

    def add_pending(self, account: str, pending: list[Pending]) -> None:
        """Commit the intent to deliver these messages (before any of them is delivered)."""
        if not pending:
            return
        with self._tx() as c:
            with c.cursor() as cur:
                cur.executemany(
                    "INSERT INTO fd_fetch_pending (token, account, folder, uidvalidity, uid, message_id, size, "
                    "digest, at, node) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [(p.token, account, p.folder, p.uidvalidity, p.uid, *p.key, p.at, self.node)
                     for p in pending])

    def pending(self, account: str) -> list[Pending]:
        with self._tx() as c:
            rows = c.execute("SELECT token, folder, uidvalidity, uid, message_id, size, digest, at "
                             "FROM fd_fetch_pending WHERE account = %s ORDER BY at", (account,)).fetchall()
        return [Pending(r[0], r[1], r[2], r[3], (r[4], r[5], r[6]), r[7]) for r in rows]

    def complete(self, account: str, delivered: Sequence[Pending] = (), failed: Sequence[Pending] = (),
                 seen: Sequence[tuple[str, int | None, str]] = ()) -> None:
        """One commit: `delivered` become remembered (duplicate memory + UID/UIDL), `failed` are
        forgotten (fetched again), `seen` are (folder, uidvalidity, uid) recorded without a delivery."""
        with self._tx() as c:
            with c.cursor() as cur:
                if delivered:
                    cur.executemany("INSERT INTO fd_fetch_delivered (account, message_id, size, digest) "
                                    "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                                    [(account, *p.key) for p in delivered])
                locs = [(p.folder, p.uidvalidity, p.uid) for p in delivered] + list(seen)
                pop3 = [(account, uid) for _, uv, uid in locs if uv is None]
                imap = [(account, folder, int(uid), account, folder, uv) for folder, uv, uid in locs
                        if uv is not None]
                if pop3:
                    cur.executemany("INSERT INTO fd_fetch_pop3 (account, uidl) VALUES (%s, %s) "
                                    "ON CONFLICT DO NOTHING", pop3)
                if imap:
                    # Only under the UIDVALIDITY the folder is tracked with; an older one's UIDs mean nothing.
                    cur.executemany("INSERT INTO fd_fetch_imap (account, folder, uid) SELECT %s, %s, %s "
                                    "WHERE EXISTS (SELECT 1 FROM fd_fetch_folder WHERE account = %s "
                                    "AND folder = %s AND uidvalidity = %s) ON CONFLICT DO NOTHING", imap)
                tokens = [p.token for p in (*delivered, *failed)]
                if tokens:
                    cur.execute("DELETE FROM fd_fetch_pending WHERE token = ANY(%s)", (tokens,))

    def drop_pending(self, pending: list[Pending]) -> None:
        if pending:
            with self._tx() as c:
                c.execute("DELETE FROM fd_fetch_pending WHERE token = ANY(%s)", ([p.token for p in pending],))

    # -- memories for Sieve ---------------------------------------------------------
    def remember(self, kind: str, key: str, seconds: float, *, now: float | None = None) -> bool:
        """True if (kind, key) was remembered and has not expired; otherwise remember it for
        `seconds` and return False. One statement: atomic across nodes."""
        now = time.time() if now is None else now
        with self._tx() as c:
            row = c.execute("INSERT INTO fd_memory (kind, key, expires) VALUES (%s, %s, %s) "
                            "ON CONFLICT (kind, key) DO UPDATE SET expires = excluded.expires "
                            "WHERE fd_memory.expires <= %s RETURNING 1",
                            (kind, key, now + seconds, now)).fetchone()
        return row is None

    def recalls(self, kind: str, keys: list[str], *, now: float | None = None) -> set[str]:
        """Which of `keys` are remembered (unexpired) under `kind`; remembers nothing new."""
        now = time.time() if now is None else now
        with self._tx() as c:
            return {r[0] for r in c.execute("SELECT key FROM fd_memory WHERE kind = %s AND expires > %s "
                                            "AND key = ANY(%s)", (kind, now, list(keys)))}

    def duplicate_seen(self, key: str, seconds: float) -> bool:
        return self.remember("duplicate", key, seconds)

    def vacation_seen(self, key: str, seconds: float) -> bool:
        return self.remember("vacation", key, seconds)

    def forget(self, kind: str, key: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM fd_memory WHERE kind = %s AND key = %s", (kind, key))

    def expire_memory(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._tx() as c:
            return c.execute("DELETE FROM fd_memory WHERE expires <= %s", (now,)).rowcount


class Transaction:
    """`with Transaction(store) as conn`: a pooled connection in a transaction (committed on leaving,
    rolled back on an exception); an unreachable database is TemporaryDeliveryError."""

    def __init__(self, store) -> None:
        self.borrow = store.connection()
        self.tx = None

    def __enter__(self):
        conn = self.borrow.__enter__()
        try:
            self.tx = conn.transaction()
            self.tx.__enter__()
        except BaseException as e:
            self.borrow.__exit__(type(e), e, e.__traceback__)
            raise
        return conn

    def __exit__(self, et, ev, tb):
        try:
            self.tx.__exit__(et, ev, tb)
        except BaseException as e:
            self.borrow.__exit__(type(e), e, e.__traceback__)
            raise
        return self.borrow.__exit__(et, ev, tb)
