"""The persistent outbound queue: one sqlite table plus one file per queued message.

Layout under the state directory:

    outbound/queue.sqlite         rows: id, kind, envelope, schedule, last error
    outbound/messages/<id>        the bytes to send (written and fsynced first)

A message counts as queued (and the engine may call the action done) only when
its file and directory are fsynced and its row is committed (synchronous=FULL).
A crash before the commit leaves an orphan file that `cleanup()` removes; a
crash after it leaves a row that the next run sends. A row being sent carries a
lease, so two processes (the LMTP server's runner and `queue flush`) never send
the same row at once; a lease left by a crash expires.

Sending: delivered rows are deleted; a temporary failure waits by the retry
schedule ([queue] retry), sends one delay notice after `delay_notice` and
bounces after `bounce_after`; a permanent failure bounces at once. Bounces
and delay notices are RFC 3464 DSNs with the null sender, and are never sent
to the null sender.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time

from fetchdeliver.storage.base import Receipt
from fetchdeliver.delivery.fsio import fsync_dir
from fetchdeliver.errors import PermanentDeliveryError, TemporaryDeliveryError
from fetchdeliver.outbound import compose
from fetchdeliver.outbound.settings import OutboundSettings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.config import Settings
    from fetchdeliver.message import Message

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
    created REAL NOT NULL, next_attempt REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '', delay_notified INTEGER NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0, size INTEGER NOT NULL, origin TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS queue_due ON queue (next_attempt);
CREATE TABLE IF NOT EXISTS vacation (key TEXT PRIMARY KEY, expires REAL NOT NULL) WITHOUT ROWID;
"""

LEASE = 3600.0           # a send that takes longer than this is assumed dead
ORPHAN_AGE = 3600.0      # message files without a row older than this are removed


class QueueError(TemporaryDeliveryError):
    """The queue database or its message files cannot be used (a temporary failure for the engine)."""


class QueueItem:
    __slots__ = ("id", "kind", "sender", "recipient", "created", "next_attempt", "attempts", "last_error",
                 "delay_notified", "lease_until", "size", "origin")

    def __init__(self, row) -> None:
        (self.id, self.kind, self.sender, self.recipient, self.created, self.next_attempt, self.attempts,
         self.last_error, self.delay_notified, self.lease_until, self.size, self.origin) = row

    def __repr__(self) -> str:
        return f"QueueItem({self.id!r}, {self.kind!r}, {self.sender!r} -> {self.recipient!r})"


_COLUMNS = ("id, kind, sender, recipient, created, next_attempt, attempts, last_error, delay_notified, "
            "lease_until, size, origin")


class OutboundQueue:
    """The queue; safe to share between threads (one sqlite connection per thread)."""

    lease = LEASE

    def __init__(self, settings: OutboundSettings) -> None:
        self.settings = settings
        self.dir = os.path.join(settings.state_dir, "outbound")
        self.msg_dir = os.path.join(self.dir, "messages")
        self.path = os.path.join(self.dir, "queue.sqlite")
        self._local = threading.local()
        self.wakeup = threading.Event()   # set when something new is queued
        # Optional: (sender, rcpt, raw) -> smtp.Result, or None to send over the network. The
        # submission server sets it so that mail (and bounces) for its local users stay local.
        self.local_delivery = None
        try:
            os.makedirs(self.msg_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise QueueError(f"cannot create the queue directory {self.msg_dir}: {e.strerror}") from None
        db = self._db()
        with _tx(db, self.path):
            for stmt in SCHEMA.strip().split(";"):
                if stmt.strip():
                    db.execute(stmt)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "OutboundQueue":
        """The queue for `settings`: in PostgreSQL with [storage] url (every node sends from one
        queue, fetchdeliver/outbound/pgqueue.py), else the sqlite queue in the state directory."""
        storage = settings.data.get("storage") or {}
        if cls is OutboundQueue and storage.get("url"):
            from fetchdeliver.outbound.pgqueue import PgOutboundQueue

            return PgOutboundQueue(OutboundSettings.from_settings(settings), storage["url"],
                                   lease=float(storage.get("queue_lease", LEASE)))
        return cls(OutboundSettings.from_settings(settings))

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                from fetchdeliver.state import open_database

                db = open_database(self.path)
            except sqlite3.Error as e:
                raise QueueError(f"queue database {self.path}: {e}") from None
            self._local.db = db
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- adding ----------------------------------------------------------------------------
    def enqueue(self, sender: str, recipient: str, raw: bytes, *, kind: str = "redirect",
                origin: str = "", now: float | None = None) -> str:
        """Queue one message for one recipient; durable on return. Returns the queue id."""
        now = time.time() if now is None else now
        qid = f"{int(now):x}{os.urandom(6).hex()}".upper()
        path = self._write_file(qid, raw)
        try:
            db = self._db()
            with _tx(db, self.path):
                db.execute(f"INSERT INTO queue ({_COLUMNS}) VALUES (?,?,?,?,?,?,0,'',0,0,?,?)",
                           (qid, kind, sender, recipient, now, now, len(raw), origin))
        except BaseException:
            _unlink(path)
            raise
        self.wakeup.set()
        log.info("queued %s (%s) <%s> -> <%s>, %d bytes", qid, kind, sender, recipient, len(raw))
        return qid

    def _write_file(self, qid: str, raw: bytes) -> str:
        path = os.path.join(self.msg_dir, qid)
        tmp = os.path.join(self.msg_dir, f".tmp.{qid}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(raw)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            fsync_dir(self.msg_dir)
        except OSError as e:
            _unlink(tmp)
            raise TemporaryDeliveryError(f"cannot write to the outbound queue {self.msg_dir}: "
                                         f"{e.strerror or e}") from None
        return path

    def remove(self, qid: str) -> bool:
        db = self._db()
        with _tx(db, self.path):
            n = db.execute("DELETE FROM queue WHERE id=?", (qid,)).rowcount
        if n:
            _unlink(os.path.join(self.msg_dir, qid))
        return bool(n)

    def retry_now(self, qid: str) -> bool:
        """Make `qid` due now (the web page's "retry now"); False when it is not queued."""
        db = self._db()
        with _tx(db, self.path):
            return db.execute("UPDATE queue SET next_attempt=? WHERE id=?", (time.time(), qid)).rowcount == 1

    def items(self) -> list[QueueItem]:
        rows = self._db().execute(f"SELECT {_COLUMNS} FROM queue ORDER BY created").fetchall()
        return [QueueItem(r) for r in rows]

    def get(self, qid: str) -> QueueItem | None:
        row = self._db().execute(f"SELECT {_COLUMNS} FROM queue WHERE id=?", (qid,)).fetchone()
        return QueueItem(row) if row else None

    def message(self, qid: str) -> bytes:
        with open(os.path.join(self.msg_dir, qid), "rb") as f:
            return f.read()

    # -- the engine's hook ------------------------------------------------------------------
    def submit_action(self, action, message: "Message"):
        """Queue what a redirect / vacation / notify action sends. A Receipt, or None when nothing
        is to be sent (a vacation reply the rules of RFC 5230 forbid); DeliveryError on failure."""
        t = action.type
        host = self.settings.hostname
        local = compose.local_address(message, host)
        try:
            if t == "redirect":
                return self._redirect(action, message, local)
            if t == "vacation":
                return self._vacation(action, message, local)
            if t == "notify":
                return self._notify(action, message, local)
            if t == "report":
                raw = compose.feedback_report(action, message, local, host)
                qid = self.enqueue("", compose.bare(action.address), raw, kind="report", origin=message.origin)
                return self._receipt(qid, f"report <{compose.bare(action.address)}>")
        except sqlite3.Error as e:
            raise TemporaryDeliveryError(f"outbound queue {self.path}: {e}") from None
        raise PermanentDeliveryError(f"the outbound queue cannot carry out a {t!r} action")

    def _receipt(self, qid: str, what: str) -> Receipt:
        return Receipt("queue", what, os.path.join(self.msg_dir, qid), undo=lambda: self.remove(qid))

    def _redirect(self, action, message: "Message", local: str) -> Receipt:
        why = compose.redirect_loop(message, action.address, local)
        sv = self.settings.sieve
        final = (message.recipients or [local])[0]
        user_email = sv.get("user_email")
        if not why and compose.redirected_from_loop(message, user_email, final):
            why = "this user redirected it before (X-Sieve-Redirected-From): a mail loop"
        if why:
            raise PermanentDeliveryError(f"redirect to <{action.address}> refused: {why}")
        sender = compose.redirect_envelope_from(sv.get("redirect_envelope_from"), message.sender, final=final,
                                                original=message.original_recipient or final,
                                                user_email=user_email)
        raw = compose.redirect_raw(message, local, redirected_from=compose.bare(user_email or final))
        qid = self.enqueue(sender, compose.bare(action.address), raw, kind="redirect",
                           origin=message.origin)
        return self._receipt(qid, f"redirect <{compose.bare(action.address)}>")

    def _vacation(self, action, message: "Message", local: str):
        # RFC 5230 4.5: no reply to robots and lists, only to mail addressed to the user
        sv = self.settings.sieve
        why = compose.vacation_refusal(action, message, local, sv)
        if why:
            log.info("%s: no vacation reply: %s", message.origin, why)
            return None
        sender = compose.vacation_recipient(message, sv)[0]
        key = compose.vacation_key(action, local, sender)
        if self._vacation_seen(key, action.seconds):
            log.info("%s: no vacation reply: <%s> already got one within %d s", message.origin, sender,
                     action.seconds)
            return None
        raw = compose.vacation_reply(action, message, local, self.settings.hostname, sv)
        try:
            qid = self.enqueue(compose.vacation_envelope_from(message, sv), sender, raw, kind="vacation",
                               origin=message.origin)
        except BaseException:
            self._vacation_forget(key)
            raise

        def undo():
            self.remove(qid)
            self._vacation_forget(key)
        return Receipt("queue", f"vacation reply <{sender}>", os.path.join(self.msg_dir, qid), undo=undo)

    def _vacation_seen(self, key: str, seconds: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        db = self._db()
        with _tx(db, self.path):
            row = db.execute("SELECT expires FROM vacation WHERE key=?", (key,)).fetchone()
            if row is not None and row[0] > now:
                return True
            db.execute("INSERT OR REPLACE INTO vacation VALUES (?,?)", (key, now + seconds))
            db.execute("DELETE FROM vacation WHERE expires <= ?", (now,))
        return False

    def _vacation_forget(self, key: str) -> None:
        db = self._db()
        with _tx(db, self.path):
            db.execute("DELETE FROM vacation WHERE key=?", (key,))

    def _notify(self, action, message: "Message", local: str):
        if not action.method.lower().startswith("mailto:"):
            log.warning("%s: notify method %r is not supported (only mailto:)", message.origin, action.method)
            return None
        why = compose.notify_refusal(message)
        if why:
            log.info("%s: no notification: %s", message.origin, why)
            return None
        try:
            to, fields = compose.parse_mailto(action.method)
        except ValueError as e:
            raise PermanentDeliveryError(f"notify: {e}") from None
        if not to:
            raise PermanentDeliveryError(f"notify: {action.method!r} names no recipient")
        raw = compose.notify_mail(action, message, local, self.settings.hostname, to, fields)
        sv = self.settings.sieve
        final = (message.recipients or [local])[0]
        # Unset, notifications go from the null sender as before (RFC 3834's advice for automatic mail);
        # the key takes Pigeonhole's values ("postmaster", "sender", "recipient", "<addr>", ...)
        env_from = "" if not sv.get("notify_mailto_envelope_from") else compose.notify_envelope_from(
            sv.get("notify_mailto_envelope_from"), action.from_, message.sender, final=final,
            original=message.original_recipient or final, user_email=sv.get("user_email"),
            hostname=self.settings.hostname)
        ids = []
        try:
            for rcpt in to:
                ids.append(self.enqueue(env_from, rcpt, raw, kind="notify", origin=message.origin))
        except BaseException:
            for qid in ids:
                self.remove(qid)
            raise

        def undo():
            for qid in ids:
                self.remove(qid)
        return Receipt("queue", f"notify {', '.join(to)}", os.path.join(self.msg_dir, ids[0]), undo=undo)

    # -- sending ------------------------------------------------------------------------------
    def due(self, now: float | None = None, *, all_items: bool = False) -> list[QueueItem]:
        now = time.time() if now is None else now
        if all_items:
            rows = self._db().execute(f"SELECT {_COLUMNS} FROM queue WHERE lease_until <= ? "
                                      "ORDER BY next_attempt", (now,)).fetchall()
        else:
            rows = self._db().execute(f"SELECT {_COLUMNS} FROM queue WHERE next_attempt <= ? AND "
                                      "lease_until <= ? ORDER BY next_attempt", (now, now)).fetchall()
        return [QueueItem(r) for r in rows]

    def _claim(self, qid: str, now: float) -> bool:
        db = self._db()
        with _tx(db, self.path):
            return db.execute("UPDATE queue SET lease_until=? WHERE id=? AND lease_until <= ?",
                              (now + self.lease, qid, now)).rowcount == 1

    def run_once(self, now: float | None = None, *, flush: bool = False, sender_fn=None) -> dict:
        """Try every due item once (every item with `flush`). Returns counts by outcome."""
        from fetchdeliver.outbound import smtp

        send = sender_fn or self._send
        counts = {"sent": 0, "deferred": 0, "bounced": 0, "dropped": 0}
        for item in self.due(now, all_items=flush):
            t = time.time() if now is None else now
            if not self._claim(item.id, t):
                continue  # another process is sending it
            try:
                raw = self.message(item.id)
            except FileNotFoundError:
                log.error("queue %s: message file is missing; dropping the entry", item.id)
                self._delete(item.id)
                counts["dropped"] += 1
                continue
            try:
                result = send(self.settings, item.sender, item.recipient, raw)
            except Exception as e:  # a bug in sending must not lose the item
                log.exception("queue %s: sending failed", item.id)
                result = smtp.Result(smtp.TEMP, f"internal error: {e}")
            t = time.time() if now is None else now
            counts[self._settle(item, raw, result, t)] += 1
        return counts

    def _send(self, settings: OutboundSettings, sender: str, rcpt: str, raw: bytes):
        from fetchdeliver.outbound import smtp

        if self.local_delivery is not None:
            result = self.local_delivery(sender, rcpt, raw)
            if result is not None:
                return result
        return smtp.send(settings, sender, rcpt, raw)

    def _settle(self, item: QueueItem, raw: bytes, result, now: float) -> str:
        from fetchdeliver.outbound import smtp

        s = self.settings
        if result.status == smtp.SENT:
            log.info("queue %s: sent to <%s>: %s", item.id, item.recipient, result.text)
            self._delete(item.id)
            return "sent"
        if result.status == smtp.PERM or now - item.created >= s.bounce_after:
            log.warning("queue %s: giving up on <%s>: %s", item.id, item.recipient, result.text)
            self._bounce(item, raw, "failed", result.text, now)
            return "bounced"
        attempts = item.attempts + 1
        next_attempt = now + s.retry_delay(attempts)
        notice = None
        if (s.delay_notice and not item.delay_notified and now - item.created >= s.delay_notice
                and item.sender and item.kind != "dsn"):
            notice = compose.dsn(action="delayed", sender=item.sender, recipient=item.recipient,
                                 error=result.text, original=raw, hostname=s.hostname, arrival=item.created,
                                 retry_until=item.created + s.bounce_after)
        notice_id = None
        if notice is not None:
            notice_id = f"{int(now):x}{os.urandom(6).hex()}".upper()
            self._write_file(notice_id, notice)
        self._defer_rows(item, attempts, next_attempt, result.text, notice_id,
                         len(notice) if notice is not None else 0, now)
        log.info("queue %s: deferred <%s> (try %d, next in %d s): %s", item.id, item.recipient, attempts,
                 next_attempt - now, result.text)
        if notice_id:
            self.wakeup.set()
        return "deferred"

    def _defer_rows(self, item: QueueItem, attempts: int, next_attempt: float, error: str,
                    notice_id: str | None, notice_size: int, now: float) -> None:
        """One commit: the item's next try (lease given up), and its delay notice's row if any."""
        db = self._db()
        with _tx(db, self.path):
            db.execute("UPDATE queue SET attempts=?, next_attempt=?, last_error=?, lease_until=0, "
                       "delay_notified=? WHERE id=?",
                       (attempts, next_attempt, error, 1 if (notice_id or item.delay_notified) else 0, item.id))
            if notice_id:
                db.execute(f"INSERT INTO queue ({_COLUMNS}) VALUES (?,?,?,?,?,?,0,'',0,0,?,?)",
                           (notice_id, "dsn", "", item.sender, now, now, notice_size, f"delay notice {item.id}"))

    def _bounce_rows(self, item: QueueItem, bounce_id: str | None, bounce_size: int, now: float) -> None:
        """One commit: the item is gone, its bounce's row (if any) is queued."""
        db = self._db()
        with _tx(db, self.path):
            db.execute("DELETE FROM queue WHERE id=?", (item.id,))
            if bounce_id:
                db.execute(f"INSERT INTO queue ({_COLUMNS}) VALUES (?,?,?,?,?,?,0,'',0,0,?,?)",
                           (bounce_id, "dsn", "", item.sender, now, now, bounce_size, f"bounce of {item.id}"))
        _unlink(os.path.join(self.msg_dir, item.id))

    def _bounce(self, item: QueueItem, raw: bytes, action: str, error: str, now: float) -> None:
        bounce_id = None
        if item.sender and item.kind != "dsn":  # never to the null sender, never a bounce of a bounce
            text = compose.dsn(action=action, sender=item.sender, recipient=item.recipient, error=error,
                               original=raw, hostname=self.settings.hostname, arrival=item.created)
            bounce_id = f"{int(now):x}{os.urandom(6).hex()}".upper()
            self._write_file(bounce_id, text)
        self._bounce_rows(item, bounce_id, len(text) if bounce_id else 0, now)
        if bounce_id:
            self.wakeup.set()

    def _delete(self, qid: str) -> None:
        db = self._db()
        with _tx(db, self.path):
            db.execute("DELETE FROM queue WHERE id=?", (qid,))
        _unlink(os.path.join(self.msg_dir, qid))

    def next_due(self) -> float | None:
        row = self._db().execute("SELECT MIN(MAX(next_attempt, lease_until)) FROM queue").fetchone()
        return row[0] if row else None

    def cleanup(self, now: float | None = None) -> int:
        """Remove message files no row refers to (left by a crash before the commit)."""
        now = time.time() if now is None else now
        known = {r[0] for r in self._db().execute("SELECT id FROM queue")}
        removed = 0
        for e in os.scandir(self.msg_dir):
            qid = e.name[5:] if e.name.startswith(".tmp.") else e.name
            if qid in known and not e.name.startswith(".tmp."):
                continue
            try:
                if now - e.stat().st_mtime >= ORPHAN_AGE:
                    os.unlink(e.path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


class QueueRunner:
    """A background thread that sends due items; woken early when something is queued."""

    def __init__(self, queue: OutboundQueue) -> None:
        self.queue = queue
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbound-queue", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self.queue.wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.queue.cleanup()
        except OSError as e:
            log.warning("queue cleanup: %s", e)
        import errno

        from fetchdeliver.netlimits import LogLimiter

        limiter = LogLimiter(log)
        while not self._stop.is_set():
            self.queue.wakeup.clear()
            try:
                self.queue.run_once()
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    # Out of file descriptors (a flood of connections): the items stay queued and
                    # are tried at the next run; one line a minute, not a traceback per run.
                    limiter.warning("fds", "outbound queue run postponed: %s", e.strerror or e)
                else:
                    log.exception("outbound queue run failed")
            except Exception:
                log.exception("outbound queue run failed")
            wait = float(self.queue.settings.interval)
            nxt = self.queue.next_due()
            if nxt is not None:
                wait = max(0.05, min(wait, nxt - time.time()))
            self.queue.wakeup.wait(wait)
        self.queue.close()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _tx(db: sqlite3.Connection, path: str):
    from fetchdeliver.state import Transaction

    return Transaction(db, path, QueueError, "queue")
