"""What happens to a submitted message once its DATA is in (runs in a worker thread).

1. A copy goes into the sender's Sent mailbox (sent.save_sent_copy).
2. Remote recipients go into the persistent outbound queue (fsynced, committed).
3. Local recipients are delivered at once through the engine, with their own Sieve rules;
   one that fails temporarily is queued instead (the queue delivers it locally later), one
   whose rules reject the message gets a bounce into the sender's INBOX.

Only then is the answer 250. A failure in 1 or 2 undoes what was done and answers 451, so
the client keeps the message and tries again. The queue is also told how to reach local
recipients (`route`), so bounces and delay notices for a user land in their INBOX.
"""

from __future__ import annotations

import logging

from fetchdeliver.errors import ConfigError, FetchdeliverError
from fetchdeliver.sources.lmtp import LMTPService, reply_text
from fetchdeliver.submission.sent import save_sent_copy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.config import Settings
    from fetchdeliver.imapserver.auth import Account
    from fetchdeliver.outbound.queue import OutboundQueue
    from fetchdeliver.submission.identity import Directory

log = logging.getLogger("fetchdeliver.submission")


class LocalDelivery(LMTPService):
    """The LMTP server's per-recipient delivery (contexts, Sieve, mbox locks), with the two trace
    headers of a final delivery; the submission's own Received: is already on top."""

    def trace_headers(self, sender: str, rcpt: str, helo: str, peer: str, sid: str | None = None) -> bytes:
        return f"Return-Path: <{sender}>\nDelivered-To: {rcpt}\n".encode("utf-8", "surrogateescape")


def to_lf(raw: bytes) -> bytes:
    """Maildir and mbox keep LF line ends (as the LMTP server stores them)."""
    return raw.replace(b"\r\n", b"\n")


class Dispatcher:
    def __init__(self, settings: "Settings", queue: "OutboundQueue", directory: "Directory", *,
                 save_sent: bool = True, sent_mailbox: str = "Sent") -> None:
        self.settings = settings
        self.queue = queue
        self.directory = directory
        self.save_sent = save_sent
        self.sent_mailbox = sent_mailbox
        self.local = LocalDelivery(settings, outbound=queue, workers=1)
        self._warned_no_store = False

    # -- the submission ------------------------------------------------------------------------
    def accept(self, account: "Account", sender: str, rcpts: list[str], raw: bytes, *, helo: str,
               peer: str) -> str:
        """Queue / deliver / file `raw` (CRLF, headers added); return the SMTP reply to DATA."""
        origin = f"submission {account.user}"
        targets = [(r, self.directory.local_target(r)) for r in rcpts]
        queued: list[str] = []
        receipts = []
        lf = None
        try:
            # The Sent copy first: taking it back is local, while a queued row may be on its way
            # to the relay the moment it is committed.
            if self.save_sent:
                lf = to_lf(raw)
                receipt = self._sent_copy(account, lf)
                if receipt is not None:
                    receipts.append(receipt)
            for r, t in targets:
                if t is None:
                    queued.append(self.queue.enqueue(sender, r, raw, kind="submission", origin=origin))
        except (FetchdeliverError, OSError) as e:
            log.error("%s: not accepted: %s", origin, e)
            self._undo(queued, receipts)
            return f"451 4.3.0 {reply_text(str(e))}; please try again later"
        delivered = []
        for r, t in targets:
            if t is None:
                continue
            if lf is None:
                lf = to_lf(raw)
            reply = self.local.deliver(lf, sender, r, t, helo, peer)
            if reply.startswith("250"):
                delivered.append(r)
                continue
            try:
                if reply.startswith("5"):
                    queued.append(self._bounce(sender, r, reply, raw, origin))
                else:
                    log.warning("%s: <%s> delivery deferred to the queue: %s", origin, r, reply)
                    queued.append(self.queue.enqueue(sender, r, raw, kind="submission", origin=origin))
            except (FetchdeliverError, OSError) as e:
                log.error("%s: not accepted: %s", origin, e)
                self._undo(queued, receipts)
                return f"451 4.3.0 {reply_text(str(e))}; please try again later"
        log.info("%s: <%s> accepted for %d recipient(s): %d queued, %d delivered locally, %d bytes",
                 origin, sender, len(rcpts), len(queued), len(delivered), len(raw))
        ids = " ".join(queued) if queued else "delivered"
        return f"250 2.0.0 Ok: queued as {ids}"

    def _sent_copy(self, account: "Account", lf: bytes):
        try:
            return save_sent_copy(account, lf, self.settings, default_mailbox=self.sent_mailbox)
        except ConfigError as e:
            if not self._warned_no_store:
                self._warned_no_store = True
                log.warning("no Sent copy for %s: %s", account.user, e)
            return None

    def _bounce(self, sender: str, rcpt: str, reply: str, raw: bytes, origin: str) -> str:
        import time

        from fetchdeliver.outbound import compose

        text = compose.dsn(action="failed", sender=sender, recipient=rcpt, error=reply, original=raw,
                           hostname=self.queue.settings.hostname, arrival=time.time())
        log.warning("%s: <%s> refused the message: %s", origin, rcpt, reply)
        return self.queue.enqueue("", sender, text, kind="dsn", origin=f"bounce ({origin})")

    def _undo(self, queued: list[str], receipts: list) -> None:
        for qid in queued:
            try:
                self.queue.remove(qid)
            except Exception as e:  # noqa: BLE001 (best effort; the queue reports its own errors)
                log.warning("could not take %s out of the queue again: %s", qid, e)
        for r in receipts:
            try:
                r.rollback()
            except OSError as e:
                log.warning("could not remove the Sent copy %r again: %s", r, e)

    # -- the queue's way to local recipients -----------------------------------------------------
    def route(self, sender: str, rcpt: str, raw: bytes):
        """For OutboundQueue.local_delivery: deliver to a local recipient, or None for the network."""
        from fetchdeliver.outbound import smtp

        t = self.directory.local_target(rcpt)
        if t is None:
            return None
        reply = self.local.deliver(to_lf(raw), sender, rcpt, t, "localhost", "127.0.0.1")
        if reply.startswith("250"):
            return smtp.Result(smtp.SENT, f"delivered locally: {reply}")
        return smtp.Result(smtp.PERM if reply.startswith("5") else smtp.TEMP, f"local delivery: {reply}")

    def close(self) -> None:
        self.local.shutdown()
