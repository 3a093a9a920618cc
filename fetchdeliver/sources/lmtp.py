"""The LMTP server (RFC 2033) on aiosmtpd: an MTA hands us mail, each recipient gets its own answer.

One asyncio loop speaks the protocol; Sieve and delivery (blocking, fsync-bound)
run in a thread pool, so slow disks do not stall other sessions. After DATA
every accepted recipient gets one reply, in RCPT order:

    250 2.0.0  durable in its store (file and directory fsynced)
    550 5.7.1  a Sieve reject / ereject (the reason follows)
    451 4.3.0  a temporary failure (452 4.3.1 when the disk is full): the MTA retries
    552 5.2.2  the recipient is over quota (452 4.2.2 with [quota] tempfail = true)
    552 5.3.4  the message is larger than [lmtp] max_message_size

Bytes: the message is kept exactly as it came on the wire, minus the
dot-stuffing. Like Dovecot's LMTP (measured against dovecot-lmtpd 2.3.19:
CRLF becomes LF, a bare LF or bare CR stays as it is) we store LF line ends,
the native form of Maildir and mbox; `[lmtp] keep_crlf = true` stores CRLF.
On top go the trace headers a final delivery adds, the same three Dovecot
adds: Return-Path, Delivered-To and Received.

aiosmtpd's own DATA reader is replaced: it would turn a line over 1000 bytes
into "500 Line too long", where we must deliver it, and it answers once where
LMTP needs one answer per recipient.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from aiosmtpd.lmtp import LMTP

from fetchdeliver import engine
from fetchdeliver.errors import FetchdeliverError
from fetchdeliver.message import Message
from fetchdeliver.recipients import Recipient, RecipientMap, lmtp_options
from fetchdeliver.sources.base import Envelope, Fetched

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from fetchdeliver.config import Settings
    from fetchdeliver.sources.base import Handle, Run

log = logging.getLogger(__name__)

# Enhanced status codes (RFC 3463) for replies aiosmtpd builds without one.
_ENHANCED = {
    "221": "2.0.0", "250": "2.0.0", "251": "2.1.5", "252": "2.5.0",
    "421": "4.3.2", "450": "4.2.0", "451": "4.3.0", "452": "4.3.1",
    "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
    "530": "5.7.0", "550": "5.0.0", "552": "5.3.4", "553": "5.1.3", "554": "5.0.0", "555": "5.5.4",
}


def _has_enhanced(text: str) -> bool:
    parts = text.split(" ", 1)[0].split(".")
    return len(parts) == 3 and all(p.isdigit() for p in parts)


def reply_text(text: str, limit: int = 400) -> str:
    """One safe reply line: no CR/LF, printable ASCII, bounded length."""
    s = " ".join(str(text).split())
    s = "".join(c if " " <= c <= "~" else "?" for c in s)
    return s[:limit]


class LmtpTransaction:
    """One LMTP transaction after DATA, as a Source (sources/base.py): one message per accepted
    recipient, its handle the recipient's position in RCPT order.

    `ack` is a 2xx (durable in its store) or 5xx (a Sieve reject: the MTA bounces) answer for
    that recipient, `release` a 4xx (the MTA keeps the message and retries); `answer()` sets
    the reply line first. A recipient neither acked nor released is answered 451: the
    connection never ends a transaction with a recipient silently accepted.
    """

    def __init__(self, body: bytes, sender: str, recipients: list[str]) -> None:
        self.body = body
        self.sender = sender
        self.recipients = recipients
        self._lines: dict[int, str] = {}
        self._final: dict[int, str] = {}

    def connect(self) -> None:
        """The session is already there: DATA has been read."""

    def batches(self, run: "Run | None" = None) -> "Iterator[Sequence[Fetched]]":
        yield [Fetched(i, self.body, rcpt, envelope=Envelope(self.sender, [rcpt]))
               for i, rcpt in enumerate(self.recipients)]

    def answer(self, handle: int, line: str) -> None:
        """The reply line for a recipient (given to ack or release next)."""
        self._lines[handle] = line

    def ack(self, handles: "Sequence[Handle]") -> None:
        for h in handles:
            if isinstance(h, int):
                line = self._lines.get(h, "")
                if line[:1] not in ("2", "5"):
                    line = f"250 2.0.0 <{reply_text(self.recipients[h], 200)}> delivered"
                self._final[h] = line

    def release(self, handles: "Sequence[Handle]") -> None:
        for h in handles:
            if isinstance(h, int):
                line = self._lines.get(h, "")
                if line[:1] != "4":
                    line = f"451 4.3.0 <{reply_text(self.recipients[h], 200)}> temporary failure"
                self._final[h] = line

    def close(self, *, quit: bool = True) -> None:
        """Nothing to close: the session goes on with the next transaction."""

    def replies(self) -> list[str]:
        """One reply line per recipient, in RCPT order (RFC 2033 section 4.2)."""
        return [self._final.get(i) or f"451 4.3.0 <{reply_text(r, 200)}> internal error: no answer"
                for i, r in enumerate(self.recipients)]


class _ThreadState:
    """The state database for the engine, one sqlite connection per worker thread."""

    def __init__(self, settings) -> None:
        self._settings = settings
        self._local = threading.local()

    def _get(self):
        st = getattr(self._local, "state", None)
        if st is None:
            from fetchdeliver.state import open_state

            st = self._local.state = open_state(self._settings)   # PostgreSQL with [storage] url
        return st

    def __getattr__(self, name):
        return getattr(self._get(), name)


class LMTPService:
    """Everything sessions share: settings, recipient map, per-recipient contexts, the worker pool."""

    def __init__(self, settings: "Settings", *, outbound=None, workers: int | None = None) -> None:
        self.settings = settings
        self.options = lmtp_options(settings)
        self.recipients = RecipientMap.from_settings(settings)
        self.hostname: str = self.options["hostname"]
        self.outbound = outbound
        self.state = _ThreadState(settings)
        self.executor = ThreadPoolExecutor(max_workers=workers or self.options["workers"],
                                           thread_name_prefix="lmtp-deliver")
        self.sessions = 0
        self.on_session_end = None    # called when a session ends (the pre-fork dispatcher counts)
        self._contexts: dict[str, object] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._build_lock = threading.Lock()
        self._listeners: list = []
        self._socket_paths: list[str] = []     # Unix sockets we created (removed on close)
        # Connection caps: checked where connections are accepted (in the pre-fork parent for all
        # processes); over them a client gets 421 and is closed. See fetchdeliver/netlimits.py.
        from fetchdeliver.netlimits import ConnectionLimits

        total = self.options.get("max_connections") or self.options["max_sessions"]
        self.limits = ConnectionLimits(total, self.options.get("max_connections_per_ip") or total)

    # -- per-recipient wiring ---------------------------------------------------------
    def check(self) -> None:
        """Build every recipient's context now, so a bad store or script shows at start-up."""
        targets = self.recipients.recipients or [self.recipients.catch_all]
        for r in targets:
            self.context_for(r)

    def context_for(self, r: Recipient):
        ctx = self._contexts.get(r.key)
        if ctx is not None:
            return ctx
        with self._build_lock:
            ctx = self._contexts.get(r.key)
            if ctx is None:
                ctx = self._build_context(r)
                self._contexts[r.key] = ctx
                if getattr(ctx.store, "kind", "") == "mbox":
                    # fcntl locks do not exclude threads of one process: serialise mbox writers here.
                    self._locks[r.key] = threading.Lock()
        return ctx

    def _build_context(self, r: Recipient):
        from fetchdeliver.pipeline import build_context, build_store

        s = self.settings
        if r is self.recipients.catch_all:
            ctx = build_context(s)
        else:
            ctx = build_context(s, maildir=r.maildir, mbox=r.mbox, rules=r.rules or "",
                                default_mailbox=r.default_mailbox, quota_user=r.key)
            if r.mbox:
                d = s.delivery
                ctx.store = build_store(mbox=r.mbox, mbox_folders=r.mbox_folders,
                                        fsync=d.get("fsync", True), lock_timeout=d.get("lock_timeout"))
            elif not r.maildir and getattr(ctx.store, "kind", "") == "postgres":
                ctx.store = ctx.store.for_user(r.key)   # one database, a mail user per recipient
            if "quota" in s.data and not r.mbox and getattr(ctx.store, "kind", "") == "postgres":
                from fetchdeliver.storage.quota import attach_quota

                attach_quota(ctx.store, s, r.key)      # the store was replaced above
        ctx.state = self.state
        ctx.outbound = self.outbound
        if ctx.script_error:
            log.error("recipient %s: %s -- every message for it goes to INBOX until the rules are fixed "
                      "(see `fetchdeliver config check`)", ", ".join(r.addresses) or "*", ctx.script_error)
        return ctx

    # -- one delivery (runs in a worker thread) ------------------------------------------
    def trace_headers(self, sender: str, rcpt: str, helo: str, peer: str, sid: str | None = None) -> bytes:
        from email.utils import formatdate

        eol = "\r\n" if self.options["keep_crlf"] else "\n"
        sid = sid or os.urandom(9).hex()
        lines = [f"Return-Path: <{sender}>", f"Delivered-To: {rcpt}",
                 f"Received: from {helo or 'unknown'} ([{peer}])", f"\tby {self.hostname} with LMTP",
                 f"\tid {sid}", f"\t(envelope-from <{sender}>)",
                 f"\tfor <{rcpt}>; {formatdate(localtime=True)}"]
        return (eol.join(lines) + eol).encode("utf-8", "surrogateescape")

    def deliver(self, body: bytes, sender: str, rcpt: str, target: Recipient, helo: str, peer: str) -> str:
        """Run one recipient's rules and delivery; return its LMTP reply line.

        Logs one line per recipient, as Postfix logs `status=sent`: the id (also in the
        Received: header we add), recipient, sender, result and where the message went.
        """
        sid = os.urandom(9).hex()
        started = time.monotonic()
        outcome = None
        try:
            outcome, reply = self._deliver(body, sender, rcpt, target, helo, peer, sid)
        except Exception as e:  # _deliver catches everything; this is the last guard
            reply = f"451 4.3.0 <{reply_text(rcpt, 200)}> internal error: {reply_text(e)}"
        code = reply[:1]
        status = {"2": "delivered", "5": "rejected"}.get(code, "deferred")
        where = ", ".join(outcome.where()) if outcome is not None and code == "2" else ""
        log.log(logging.WARNING if code == "4" else logging.INFO,
                "%s: to=<%s>, from=<%s>, %d bytes, %.3fs, status=%s%s (%s)", sid, rcpt, sender, len(body),
                time.monotonic() - started, status, f", folder={where or 'nowhere'}" if code == "2" else "",
                reply)
        return reply

    def _deliver(self, body: bytes, sender: str, rcpt: str, target: Recipient, helo: str, peer: str,
                 sid: str):
        try:
            ctx = self.context_for(target)
            raw = self.trace_headers(sender, rcpt, helo, peer, sid) + body
            msg = Message(raw, sender=sender, recipients=[rcpt], original_recipient=rcpt,
                          origin=f"lmtp[{peer}] <{rcpt}>")
            lock = self._locks.get(target.key)
            if lock is not None:
                with lock:
                    outcome = engine.process(msg, ctx)
            else:
                outcome = engine.process(msg, ctx)
        except FetchdeliverError as e:
            log.error("<%s>: %s", rcpt, e)
            return None, f"451 4.3.0 <{reply_text(rcpt, 200)}> {reply_text(e)}"
        except Exception as e:  # a bug must become a retry, never a lost message
            log.exception("<%s>: unexpected error", rcpt)
            return None, f"451 4.3.0 <{reply_text(rcpt, 200)}> internal error: {reply_text(e)}"
        who = f"<{reply_text(rcpt, 200)}>"
        if outcome.status == engine.DELIVERED:
            where = reply_text(', '.join(outcome.where()) or 'nowhere', 200)
            return outcome, f"250 2.0.0 {who} delivered to {where}"
        if outcome.status == engine.REJECTED:
            return outcome, f"550 5.7.1 {who} {reply_text(outcome.reason or 'rejected')}"
        if outcome.quota is not None:   # [quota] tempfail: 452 4.2.2, the MTA retries; else it bounces
            code = "452 4.2.2" if outcome.quota.temporary else "552 5.2.2"
            return outcome, f"{code} {who} {reply_text(outcome.quota)}"
        err = outcome.errors[-1] if outcome.errors else "temporary failure"
        low = err.lower()
        if "no space left" in low:
            return outcome, f"452 4.3.1 {who} {reply_text(err)}"
        if "quota" in low:
            return outcome, f"452 4.2.2 {who} {reply_text(err)}"
        return outcome, f"451 4.3.0 {who} {reply_text(err)}"

    # -- listening -------------------------------------------------------------------------
    def _factory(self, slot=None):
        o = self.options
        session = _Session(self, _Handler(self), data_size_limit=o["max_message_size"],
                           hostname=self.hostname, ident="fetchdeliver LMTP", timeout=float(o["timeout"]),
                           loop=asyncio.get_running_loop())
        session.slot = slot
        return session

    @staticmethod
    def refusal(reason: str) -> bytes:
        """The line a connection over a cap gets before it is closed."""
        return f"421 4.3.2 {reply_text(reason)}\r\n".encode()

    def listener(self, sock, on_socket=None):
        """A netlimits.Listener on `sock` within this service's limits (started by the caller)."""
        from fetchdeliver.netlimits import Listener

        name = sock.getsockname()
        where = name if isinstance(name, str) else f"{name[0]}:{name[1]}"
        return Listener(sock, on_socket or self._accepted, limits=self.limits, refusal=self.refusal,
                        name=f"lmtp {where}", logger=log)

    def _accepted(self, conn, slot) -> None:
        asyncio.ensure_future(self.serve_connection(conn, slot))

    async def _listen(self, sock) -> str:
        if "max_connections" not in self.options:
            from fetchdeliver.netlimits import fit_max_connections

            self.limits.max_total = min(self.limits.max_total, fit_max_connections(None, "lmtp"))
        lst = self.listener(sock).start()
        self._listeners.append(lst)
        name = sock.getsockname()
        return name if isinstance(name, str) else f"{name[0]}:{name[1]}"

    async def listen_tcp(self, host: str, port: int) -> tuple[str, int]:
        from fetchdeliver.netlimits import bind_tcp

        sock = bind_tcp(host, port)
        await self._listen(sock)
        addr = sock.getsockname()
        return addr[0], addr[1]

    async def listen_unix(self, path: str, mode: int | None = None) -> str:
        from fetchdeliver.netlimits import bind_unix

        o = self.options
        mode = mode if mode is not None else o.get("socket_mode", DEFAULT_SOCKET_MODE)
        sock = bind_unix(path, 0o600 if mode is None else mode)  # owner only until chown/chmod below
        try:
            set_socket_access(path, o.get("socket_owner"), o.get("socket_group"), mode)
        except OSError:
            sock.close()
            remove_socket(path)
            raise
        self._socket_paths.append(path)
        return await self._listen(sock)

    async def serve_connection(self, conn, slot=None) -> None:
        """Serve one accepted connection; `slot.release()` (netlimits) once it is closed."""
        conn.setblocking(False)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: self._factory(slot), conn)
        except BaseException:
            conn.close()
            if slot is not None:
                slot.release()
            raise

    async def listen_socket(self, sock) -> str:
        """Serve on a socket bound and listening already."""
        sock.setblocking(False)
        return await self._listen(sock)

    async def close(self) -> None:
        for lst in self._listeners:
            lst.close()
        self._listeners.clear()
        for path in self._socket_paths:
            remove_socket(path)
        self._socket_paths.clear()

    def shutdown(self) -> None:
        """Wait for running deliveries (they must finish before we may exit)."""
        self.executor.shutdown(wait=True)


DEFAULT_SOCKET_MODE = 0o660


def prepare_socket_path(path: str) -> None:
    """Remove a socket left by an earlier run and create the directory (never removes a non-socket)."""
    import stat

    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def set_socket_access(path: str, owner: str | None = None, group: str | None = None,
                      mode: int | None = DEFAULT_SOCKET_MODE) -> None:
    """chown/chmod a freshly bound socket: Postfix's lmtp client (user `postfix`) must be able to
    connect. Owner and group are names or numbers; an unknown one, or a chown without the right
    to do it, is an OSError that names the socket and what was asked."""
    import grp
    import pwd

    uid = gid = -1
    try:
        if owner is not None:
            uid = int(owner) if str(owner).isdigit() else pwd.getpwnam(owner).pw_uid
        if group is not None:
            gid = int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise OSError(f"[lmtp] socket_owner / socket_group: no such user or group "
                      f"({owner or '-'}:{group or '-'})") from None
    if uid != -1 or gid != -1:
        try:
            os.chown(path, uid, gid)
        except OSError as e:
            raise OSError(f"cannot give the socket {path} to {owner or '-'}:{group or '-'}: {e.strerror} "
                          "(only root may; run `fetchdeliver lmtp` as root or as that user)") from None
    os.chmod(path, DEFAULT_SOCKET_MODE if mode is None else mode)


def remove_socket(path: str) -> None:
    """Remove our socket on exit (only if it is still a socket)."""
    import stat

    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


class _Handler:
    """aiosmtpd hooks: the greeting's extensions, the envelope, the recipient check."""

    def __init__(self, service: LMTPService) -> None:
        self.service = service

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        last = responses[-1][4:]  # "250 HELP"
        out = [r for r in responses[:-1]]
        out += ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", f"250 {last}"]
        return out

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.targets = []
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        target = self.service.recipients.lookup(address)
        if target is None:
            return f"550 5.1.1 <{reply_text(address, 200)}> User doesn't exist"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.targets.append(target)
        return "250 2.1.5 Ok"


# A plain <local@domain> or <local> (nearly every address an MTA sends), dot-atoms only.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDR = re.compile(rf"\s*<({_ATOM}(?:\.{_ATOM})*(?:@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)?)>\s*(.*)\Z", re.S)


class _Session(LMTP):
    # The StreamReader's buffer limit. Commands are still limited to 512 bytes by
    # aiosmtpd; DATA lines of any length are read in pieces by smtp_DATA below.
    line_length_limit = 65536

    def __init__(self, service: LMTPService, handler, **kwargs) -> None:
        self.service = service
        self.slot = None               # its place under the connection caps (netlimits.Slot)
        self._counted = False
        self._in_lhlo = False
        super().__init__(handler, **kwargs)

    def connection_made(self, transport) -> None:
        if not self._counted:
            self._counted = True
            self.service.sessions += 1
        super().connection_made(transport)

    def connection_lost(self, error) -> None:
        if self.slot is not None:
            self.slot.release()
        if self._counted:
            self._counted = False
            self.service.sessions -= 1
            if self.service.on_session_end is not None:
                self.service.on_session_end()
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if self.service.sessions > self.service.options["max_sessions"]:
            await self.push("421 4.3.2 Too many sessions, try again later")
            self.transport.close()
            return
        await super()._handle_client()

    def _getaddr(self, arg: str):
        # aiosmtpd parses every MAIL/RCPT address with email's full RFC 5322 parser, a fifth of
        # our CPU per message; a plain address gives the same answer from one regex. Anything
        # else (quoted local parts, address literals, <>) still goes to aiosmtpd.
        m = _PLAIN_ADDR.match(arg) if arg else None
        if m is None:
            try:
                return super()._getaddr(arg)
            except Exception:  # email's parser trips over e.g. "<" or "1@[" (IndexError, ...): 501, not 500
                return None, None
        addr = m.group(1)
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, m.group(2)

    async def push(self, status) -> None:
        if isinstance(status, str) and not self._in_lhlo and status[3:4] == " " \
                and status[:3] in _ENHANCED and not _has_enhanced(status[4:]) \
                and not status.startswith("220"):
            status = f"{status[:3]} {_ENHANCED[status[:3]]} {status[4:]}"
        await super().push(status)

    async def smtp_LHLO(self, arg: str) -> None:
        if not arg:
            await self.push("501 Syntax: LHLO hostname")
            return
        self._in_lhlo = True
        try:
            await super().smtp_LHLO(arg)
        finally:
            self._in_lhlo = False

    async def check_helo_needed(self, helo: str = "LHLO") -> bool:
        return await super().check_helo_needed("LHLO")

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        env = self.envelope
        if not env.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        limit = self.data_size_limit
        reader = self._reader
        # Read up to each ".\r\n" rather than line by line (a 2 MiB line or a 13 KB message is one
        # or a few reads); it ends the data when it starts a line: at the very start, or after CRLF.
        parts: list[bytes] = []
        size = 0
        tail = b""
        too_big = False
        mark = 0
        while True:
            try:
                chunk = await reader.readuntil(b".\r\n")
                ends = True
            except asyncio.LimitOverrunError as e:
                chunk = await reader.read(e.consumed)  # no ".\r\n" in the buffer yet: take what is there
                ends = False
            except asyncio.IncompleteReadError:
                # The client went away before the final dot: nothing was accepted.
                self.transport.close()
                return
            size += len(chunk)
            last = chunk[-5:] if len(chunk) >= 5 else (tail + chunk)[-5:]
            if ends and (size == 3 or last[:2] == b"\r\n"):
                if not too_big:
                    parts.append(chunk)
                break
            tail = last
            if too_big:
                pass
            elif limit and size > limit + 5:
                too_big = True
                parts.clear()  # keep reading to the dot, keep nothing
            else:
                parts.append(chunk)
            if size - mark > 1 << 20:
                mark = size
                self._reset_timeout()  # a big message is not an idle session
        if not too_big:
            data = b"".join(parts)[:-3]  # the terminator's ".\r\n" (its CRLF ends the last line)
            parts.clear()
            # RFC 5321 4.5.2 transparency: a line's leading dot is removed
            if data[:1] == b".":
                data = data[1:]
            data = data.replace(b"\r\n.", b"\r\n")
            if limit and len(data) > limit:
                too_big = True
        targets = list(getattr(env, "targets", []))
        rcpts = list(env.rcpt_tos)
        sender = env.mail_from or ""
        if sender == "<>":
            sender = ""
        self._set_post_data_state()
        if too_big:
            await self.push("\r\n".join(f"552 5.3.4 <{reply_text(r, 200)}> message larger than "
                                        f"{limit} bytes" for r in rcpts))
            return
        body = data
        if not self.service.options["keep_crlf"]:
            body = body.replace(b"\r\n", b"\n")
        peer = self.session.peer
        peer_text = peer[0] if isinstance(peer, tuple) and peer else "unix-socket"
        helo = self.session.host_name or ""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        txn = LmtpTransaction(body, sender, rcpts)
        (batch,) = txn.batches()
        futures = [loop.run_in_executor(self.service.executor, self.service.deliver, f.raw, sender, f.uid, t,
                                        helo, peer_text) for f, t in zip(batch, targets)]
        replies = await asyncio.gather(*futures, return_exceptions=True)
        for f, rep in zip(batch, replies):
            if isinstance(rep, BaseException):
                rep = f"451 4.3.0 <{reply_text(f.uid, 200)}> internal error: {reply_text(rep)}"
            txn.answer(f.handle, rep)
            if rep[:1] == "4":
                txn.release([f.handle])     # the MTA keeps the message for this recipient
            else:
                txn.ack([f.handle])         # 250: durable; 550: rejected by the rules (the MTA bounces)
        lines = txn.replies()
        log.debug("%s: from <%s>, %d bytes, %d recipients, %.3fs: %s", peer_text, sender, len(body),
                 len(rcpts), time.monotonic() - started, "; ".join(x[:3] for x in lines))
        self._reset_timeout()
        await self.push("\r\n".join(lines))

    async def handle_exception(self, error: Exception) -> str:
        log.exception("%r: LMTP session error", self.session.peer if self.session else None)
        return f"451 4.3.0 Internal error: {reply_text(error)}"


class ServerThread:
    """Run an LMTPService's loop in a background thread (tests, benchmarks, the daemon)."""

    def __init__(self, service: LMTPService) -> None:
        self.service = service
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="lmtp-loop", daemon=True)
        self.thread.start()

    def _run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def listen_tcp(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        return self._run(self.service.listen_tcp(host, port))

    def listen_unix(self, path: str) -> str:
        return self._run(self.service.listen_unix(path))

    def stop(self) -> None:
        try:
            self._run(self.service.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            self.service.shutdown()
            self.loop.close()


async def serve(service: LMTPService, *, listen: str | None = None, socket_path: str | None = None,
                sock=None, stop: asyncio.Event | None = None, on_ready=None) -> None:
    """Listen (or use the bound `sock`) and serve until `stop` is set; `on_ready(where)` once listening."""
    from fetchdeliver.recipients import parse_listen

    if sock is not None:
        where = await service.listen_socket(sock)
    elif socket_path:
        where = await service.listen_unix(socket_path)
    else:
        host, port = parse_listen(listen or "127.0.0.1:2424")
        h, p = await service.listen_tcp(host, port)
        where = f"{h}:{p}"
    log.info("LMTP server listening on %s", where)
    if on_ready is not None:
        on_ready(where)
    stop = stop or asyncio.Event()
    await stop.wait()
    await service.close()
