"""The outbound queue in PostgreSQL ([storage] url): every node queues into one table and sends from
it; each queued message is sent by one node at a time.

    fd_queue        rows: id, kind, envelope, schedule, last error, the lease (lease_until, holder)
    fd_queue_body   the bytes to send, by queue id

The logic (retry schedule, delay notices, bounces) is OutboundQueue's; only where the rows and
bodies live differs. A message counts as queued when its row and body committed (one transaction).
A node claims a due row with `UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED)`: of nodes
racing for one row exactly one gets it, the others skip it without waiting. A node killed while
sending leaves its lease, which expires after `[storage] queue_lease` seconds (default 3600, as the
sqlite queue); another node then sends the message again. Sent means the relay answered 250 and
the row was deleted: a node killed between the two sends that message twice (a duplicate, never a
loss; no SMTP client can do better). Lease times are the nodes' clocks (keep them in NTP sync).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from fetchdeliver.errors import TemporaryDeliveryError
from fetchdeliver.outbound.queue import _COLUMNS, LEASE, ORPHAN_AGE, OutboundQueue, QueueError, QueueItem
from fetchdeliver.outbound.settings import OutboundSettings

log = logging.getLogger(__name__)


class PgOutboundQueue(OutboundQueue):
    def __init__(self, settings: OutboundSettings, url: str, *, lease: float = LEASE) -> None:
        from fetchdeliver.storage.leases import node_name
        from fetchdeliver.storage.postgres import PostgresStore

        self.settings = settings
        self.url = url
        self.lease = lease
        self.dir = self.msg_dir = self.path = "PostgreSQL (fd_queue)"   # named in messages and receipts
        self._store = PostgresStore(url, user="-")
        self.node = node_name()
        self._local = threading.local()
        self.wakeup = threading.Event()
        self.local_delivery = None

    def _tx(self):
        from fetchdeliver.storage.pgstate import Transaction

        return Transaction(self._store)

    def _run(self, sql: str, args=(), *, fetch: str = ""):
        try:
            with self._tx() as c:
                cur = c.execute(sql, args)
                if fetch == "one":
                    return cur.fetchone()
                if fetch == "all":
                    return cur.fetchall()
                return cur.rowcount
        except TemporaryDeliveryError as e:
            raise QueueError(f"outbound queue: {e}") from None

    def close(self) -> None:
        pass

    # -- adding ----------------------------------------------------------------------------
    def enqueue(self, sender: str, recipient: str, raw: bytes, *, kind: str = "redirect",
                origin: str = "", now: float | None = None) -> str:
        now = time.time() if now is None else now
        qid = f"{int(now):x}{os.urandom(6).hex()}".upper()
        try:
            with self._tx() as c:
                c.execute("INSERT INTO fd_queue_body (id, body) VALUES (%s, %s)", (qid, raw))
                c.execute(f"INSERT INTO fd_queue ({_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,0,'',0,0,%s,%s)",
                          (qid, kind, sender, recipient, now, now, len(raw), origin))
        except TemporaryDeliveryError as e:
            raise QueueError(f"outbound queue: {e}") from None
        self.wakeup.set()
        log.info("queued %s (%s) <%s> -> <%s>, %d bytes", qid, kind, sender, recipient, len(raw))
        return qid

    def _write_file(self, qid: str, raw: bytes) -> str:
        """A notice's or bounce's body, committed before its row (an orphan body is swept by cleanup)."""
        self._run("INSERT INTO fd_queue_body (id, body) VALUES (%s, %s)", (qid, raw))
        return qid

    def remove(self, qid: str) -> bool:
        with self._tx() as c:
            n = c.execute("DELETE FROM fd_queue WHERE id = %s", (qid,)).rowcount
            c.execute("DELETE FROM fd_queue_body WHERE id = %s", (qid,))
        return bool(n)

    def retry_now(self, qid: str) -> bool:
        return self._run("UPDATE fd_queue SET next_attempt = %s WHERE id = %s", (time.time(), qid)) == 1

    def items(self) -> list[QueueItem]:
        return [QueueItem(r) for r in self._run(f"SELECT {_COLUMNS} FROM fd_queue ORDER BY created", fetch="all")]

    def get(self, qid: str) -> QueueItem | None:
        row = self._run(f"SELECT {_COLUMNS} FROM fd_queue WHERE id = %s", (qid,), fetch="one")
        return QueueItem(row) if row else None

    def message(self, qid: str) -> bytes:
        row = self._run("SELECT body FROM fd_queue_body WHERE id = %s", (qid,), fetch="one")
        if row is None:
            raise FileNotFoundError(f"queue body {qid}")
        return bytes(row[0])

    # -- vacation memory: shared by every node ----------------------------------------------
    def _vacation_seen(self, key: str, seconds: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        row = self._run("INSERT INTO fd_memory (kind, key, expires) VALUES ('queue-vacation', %s, %s) "
                        "ON CONFLICT (kind, key) DO UPDATE SET expires = excluded.expires "
                        "WHERE fd_memory.expires <= %s RETURNING 1", (key, now + seconds, now), fetch="one")
        return row is None

    def _vacation_forget(self, key: str) -> None:
        self._run("DELETE FROM fd_memory WHERE kind = 'queue-vacation' AND key = %s", (key,))

    # -- sending ------------------------------------------------------------------------------
    def due(self, now: float | None = None, *, all_items: bool = False) -> list[QueueItem]:
        now = time.time() if now is None else now
        if all_items:
            rows = self._run(f"SELECT {_COLUMNS} FROM fd_queue WHERE lease_until <= %s ORDER BY next_attempt",
                             (now,), fetch="all")
        else:
            rows = self._run(f"SELECT {_COLUMNS} FROM fd_queue WHERE next_attempt <= %s AND lease_until <= %s "
                             "ORDER BY next_attempt", (now, now), fetch="all")
        return [QueueItem(r) for r in rows]

    def _claim(self, qid: str, now: float) -> bool:
        """Take the row's lease if nobody holds it; a row another node is claiming right now is
        skipped (SKIP LOCKED), not waited for."""
        row = self._run("UPDATE fd_queue SET lease_until = %s, holder = %s WHERE id = "
                        "(SELECT id FROM fd_queue WHERE id = %s AND lease_until <= %s FOR UPDATE SKIP LOCKED) "
                        "RETURNING 1", (now + self.lease, self.node, qid, now), fetch="one")
        return row is not None

    def _defer_rows(self, item: QueueItem, attempts: int, next_attempt: float, error: str,
                    notice_id: str | None, notice_size: int, now: float) -> None:
        with self._tx() as c:
            c.execute("UPDATE fd_queue SET attempts = %s, next_attempt = %s, last_error = %s, lease_until = 0, "
                      "holder = '', delay_notified = %s WHERE id = %s",
                      (attempts, next_attempt, error, 1 if (notice_id or item.delay_notified) else 0, item.id))
            if notice_id:
                c.execute(f"INSERT INTO fd_queue ({_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,0,'',0,0,%s,%s)",
                          (notice_id, "dsn", "", item.sender, now, now, notice_size, f"delay notice {item.id}"))

    def _bounce_rows(self, item: QueueItem, bounce_id: str | None, bounce_size: int, now: float) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM fd_queue WHERE id = %s", (item.id,))
            c.execute("DELETE FROM fd_queue_body WHERE id = %s", (item.id,))
            if bounce_id:
                c.execute(f"INSERT INTO fd_queue ({_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,0,'',0,0,%s,%s)",
                          (bounce_id, "dsn", "", item.sender, now, now, bounce_size, f"bounce of {item.id}"))

    def _delete(self, qid: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM fd_queue WHERE id = %s", (qid,))
            c.execute("DELETE FROM fd_queue_body WHERE id = %s", (qid,))

    def next_due(self) -> float | None:
        row = self._run("SELECT min(greatest(next_attempt, lease_until)) FROM fd_queue", fetch="one")
        return row[0] if row else None

    def cleanup(self, now: float | None = None) -> int:
        """Remove bodies no row refers to (a crash between a notice's body and its row)."""
        return self._run("DELETE FROM fd_queue_body b WHERE NOT EXISTS (SELECT 1 FROM fd_queue q WHERE q.id = b.id) "
                         "AND b.created < now() - %s * interval '1 second'", (ORPHAN_AGE,))
