"""The submission server (RFC 6409) on aiosmtpd: listeners, the session, the hooks.

    server = Server(cfg, queue); await server.start()  -> [("127.0.0.1", 40123, False), ...]

Extensions: SIZE, 8BITMIME, SMTPUTF8, PIPELINING, ENHANCEDSTATUSCODES, CHUNKING (BDAT is
ours: aiosmtpd has none), STARTTLS (when a certificate is set), AUTH with the IMAP server's
mechanisms (fetchdeliver/sasl.py: PLAIN, LOGIN, SCRAM-SHA-256/1, OAUTHBEARER/XOAUTH2). Not offered: DSN (aiosmtpd refuses the RET/ENVID/NOTIFY/ORCPT
parameters, and the queue does not carry them).

Rules: AUTH only over TLS or from a loopback address (unless allow_plaintext_auth); MAIL,
RCPT and DATA only after a login (530 5.7.0); the envelope sender and every From: address
must be the user's (553 5.7.1); at most max_recipients per message (452 4.5.3) and
rate_limit messages per user (451 4.7.1). A client that goes away before the final dot
leaves nothing behind. Limits as the other servers (fetchdeliver/netlimits.py): connections
overall and per address (421 4.3.2 over a cap), a login deadline (421 4.4.2), failed logins
answered later each time per address and user, the third failure on a connection closes it.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

from aiosmtpd.smtp import MISSING, SMTP

from fetchdeliver import netlimits
from fetchdeliver import sasl as saslmod
from fetchdeliver import serversetup
from fetchdeliver.errors import ConfigError
from fetchdeliver.message import Message
from fetchdeliver.sources.lmtp import reply_text
from fetchdeliver.submission import headers, sasl
from fetchdeliver.submission.identity import Directory, RateLimiter, bare

log = logging.getLogger("fetchdeliver.submission")

# Enhanced status codes (RFC 3463) for the replies aiosmtpd builds without one.
ENHANCED = {
    "221": "2.0.0", "250": "2.0.0", "251": "2.1.5", "252": "2.5.0",
    "421": "4.3.2", "450": "4.2.0", "451": "4.3.0", "452": "4.3.1",
    "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
    "530": "5.7.0", "550": "5.0.0", "552": "5.3.4", "553": "5.1.3", "554": "5.0.0", "555": "5.5.4",
}


MAX_FAILED_LOGINS = 3


def has_enhanced(text: str) -> bool:
    parts = text.split(" ", 1)[0].split(".")
    return len(parts) == 3 and all(p.isdigit() for p in parts)


class SubmissionConfig(netlimits.LimitSettings):
    def __init__(self, *, settings, authenticator, listen=("127.0.0.1:587",), tls_listen=(), ssl_context=None,
                 allow_plaintext_auth: bool = False, login_failure_delay: float = 2.0,
                 aliases: dict | None = None, max_message_size: int = 35 * 1024 * 1024,
                 max_recipients: int = 100, rate: tuple[int, int] = (200, 3600), save_sent: bool = True,
                 sent_mailbox: str = "Sent", received_header: bool = True, hostname: str | None = None,
                 timeout: float = 300.0, workers: int = 4, **limits) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.listen = list(listen)
        self.tls_listen = list(tls_listen)
        self.ssl_context = ssl_context
        self.allow_plaintext_auth = allow_plaintext_auth
        self.login_failure_delay = login_failure_delay
        self.aliases = dict(aliases or {})
        self.max_message_size = max_message_size
        self.max_recipients = max_recipients
        self.rate = rate
        self.save_sent = save_sent
        self.sent_mailbox = sent_mailbox
        self.received_header = received_header
        self.hostname = hostname or os.uname().nodename
        self.timeout = timeout
        self.workers = workers
        # max_connections, max_connections_per_ip, login_timeout, login_failure_* (netlimits): given,
        # else from the [submission] table of `settings`, with [imap]'s defaults.
        table = dict(getattr(settings, "data", None) or {}).get("submission") or {}
        opts = netlimits.limit_options(table)
        opts["login_failure_delay"] = login_failure_delay
        opts.update(limits)
        self.set_limits(**opts)


def split_address(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def _is_loopback(peer) -> bool:
    try:
        return ipaddress.ip_address(peer[0]).is_loopback
    except (TypeError, ValueError, IndexError):
        return False


class SubmissionSession(SMTP):
    # The StreamReader's buffer: DATA lines up to 64 KiB are kept (RFC 5321 says 1000, but a
    # client's long line is delivered, not refused); commands stay limited to 512 bytes.
    line_length_limit = 65536

    def __init__(self, server: "Server", implicit_tls: bool, **kwargs) -> None:
        self.server = server
        self.implicit_tls = implicit_tls
        self.account = None
        self.identity = None
        self.failed_user = ""
        self.failed_logins = 0
        self._in_ehlo = False
        self.slot: netlimits.Slot | None = None    # its place under the connection caps
        self._deadline: asyncio.TimerHandle | None = None
        super().__init__(_Handler(server), **kwargs)

    # -- state ---------------------------------------------------------------------------
    @property
    def secure(self) -> bool:
        t = self.transport
        return self.implicit_tls or (t is not None and t.get_extra_info("ssl_object") is not None)

    def may_authenticate(self) -> bool:
        return (self.secure or self.server.config.allow_plaintext_auth
                or _is_loopback(self.session.peer if self.session else None))

    def connection_made(self, transport) -> None:
        # A STARTTLS makes a new aiosmtpd session: the login (none yet) starts over too.
        self.account = None
        self.identity = None
        super().connection_made(transport)
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(self.server.config.login_timeout,
                                                                   self._login_expired)

    def _login_expired(self) -> None:
        if self.account is not None or self.transport is None:
            return
        try:
            self.transport.write(b"421 4.4.2 Login timeout, closing connection\r\n")
        finally:
            self.transport.close()

    def connection_lost(self, error) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self.slot is not None:
            self.slot.release()
            self.slot = None
        super().connection_lost(error)

    def mechanisms(self) -> list[str]:
        return sasl.mechanisms(self.server.config.authenticator, self.may_authenticate())

    async def push(self, status) -> None:
        if isinstance(status, str) and not self._in_ehlo and status[3:4] == " " and status[:3] in ENHANCED \
                and not has_enhanced(status[4:]):
            status = f"{status[:3]} {ENHANCED[status[:3]]} {status[4:]}"
        await super().push(status)

    async def _need_login(self) -> bool:
        if self.account is None:
            await self.push("530 5.7.0 Authentication required")
            return True
        return False

    # -- commands --------------------------------------------------------------------------
    async def smtp_EHLO(self, arg: str) -> None:
        self._in_ehlo = True
        try:
            await super().smtp_EHLO(arg)
        finally:
            self._in_ehlo = False

    async def smtp_AUTH(self, arg: str) -> None:
        if await self.check_helo_needed("EHLO"):
            return
        if not self.session.extended_smtp:
            await self.push("503 5.5.1 Send EHLO first")
            return
        if not self.may_authenticate():
            await self.push("538 5.7.11 Encryption required for requested authentication mechanism")
            return
        if self.account is not None:
            await self.push("503 5.5.1 Already authenticated")
            return
        if self.envelope.mail_from:
            await self.push("503 5.5.1 AUTH not allowed during a mail transaction")
            return
        args = (arg or "").split()
        if not args or len(args) > 2:
            await self.push("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
            return
        mech = args[0].upper()
        if mech not in sasl.mechanisms(self.server.config.authenticator, True):
            await self.push("504 5.5.4 Unrecognized authentication type")
            return
        if mech not in self.mechanisms():
            await self.push("538 5.7.11 Encryption required for requested authentication mechanism")
            return
        peer = self.session.peer[0] if isinstance(self.session.peer, tuple) else None
        answered = []

        async def exchange(challenge: bytes) -> bytes | None:
            got = await self.challenge_auth(challenge)
            if got is MISSING:   # "*" or bad base64: aiosmtpd has answered 501
                answered.append(True)
                return None
            return got

        async def check(user, verify):   # the same throttle as the other servers (netlimits)
            return await self.server.throttle.attempt(peer, user, verify)

        user = ""
        try:
            initial = sasl.decode_initial(args[1]) if len(args) == 2 else None
            user, account = await saslmod.authenticate(mech, initial, exchange, self.server.config.authenticator,
                                                       check)
        except sasl.BadResponse as e:
            await self.push(f"501 5.5.2 {e}")
            return
        except saslmod.Cancelled:
            if not answered:
                await self.push("501 5.7.0 Auth aborted")
            return
        except saslmod.AuthorizationFailed:
            account = None    # no proxy logins: a failure like a wrong password
        except saslmod.SaslError as e:
            if not answered:
                await self.push(f"501 5.5.2 {e}")
            return
        except netlimits.LoginThrottled as e:
            await self._failed(f"454 4.7.0 {e}")
            return
        except Exception as e:  # noqa: BLE001 - the backend's failure is the server's, not the user's
            log.error("authentication backend failed: %s", e)
            await self.push("454 4.7.0 Temporary authentication failure")
            return
        if account is None:
            log.warning("login failed for %r from %s (AUTH %s)", user, peer, mech)
            await self._failed("535 5.7.8 Authentication credentials invalid")
            return
        self.account = account
        self.identity = self.server.directory.identity(account)
        self.session.authenticated = True
        self.session.auth_data = account.user
        log.info("%s logged in from %s (AUTH %s%s)", account.user, peer, mech, ", TLS" if self.secure else "")
        await self.push("235 2.7.0 Authentication successful")

    async def _failed(self, reply: str) -> None:
        """A failed (or throttled) login; the third on a connection ends it (as ManageSieve and Pigeonhole)."""
        self.failed_logins += 1
        if self.failed_logins >= MAX_FAILED_LOGINS:
            await self.push("421 4.7.0 Too many failed logins, closing connection")
            self.transport.close()
            return
        await self.push(reply)

    async def smtp_MAIL(self, arg) -> None:
        if await self.check_helo_needed() or await self._need_login():
            return
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg) -> None:
        if await self.check_helo_needed() or await self._need_login():
            return
        await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg) -> None:
        if await self.check_helo_needed() or await self._need_login() or await self._refuse_data_after_bdat():
            return
        await super().smtp_DATA(arg)

    async def smtp_BDAT(self, arg) -> None:
        """CHUNKING (RFC 3030): `BDAT size [LAST]` then exactly `size` octets, no dot-stuffing.
        The chunks are read even when the command is refused, so the session stays in step."""
        parts = (arg or "").split()
        if not parts or len(parts) > 2 or not parts[0].isdigit() or \
                (len(parts) == 2 and parts[1].upper() != "LAST"):
            await self.push("501 5.5.4 Syntax: BDAT size [LAST]")
            return
        size, last = int(parts[0]), len(parts) == 2
        buf = getattr(self.envelope, "bdat", None) or b""
        keep = not self.data_size_limit or len(buf) + size <= self.data_size_limit
        chunk = bytearray()
        left = size
        try:
            while left:  # in pieces: a chunk larger than the limit is read and dropped, never held
                piece = await self._reader.readexactly(min(left, 1 << 16))
                left -= len(piece)
                if keep:
                    chunk += piece
                self._reset_timeout()
        except asyncio.IncompleteReadError:
            self.transport.close()  # gone in the middle of a chunk: nothing was accepted
            return
        if not keep:
            self.envelope.bdat_too_big = True
        if not self.session.host_name or self.account is None or not self.envelope.rcpt_tos:
            self.envelope.bdat_refused = True
        if getattr(self.envelope, "bdat_refused", False):
            if self.account is None:
                await self.push("530 5.7.0 Authentication required")
            else:
                await self.push("503 5.5.1 Error: need MAIL and RCPT before BDAT")
            if last:
                self._set_post_data_state()
            return
        buf = getattr(self.envelope, "bdat", None)
        if buf is None:
            buf = self.envelope.bdat = bytearray()
        if getattr(self.envelope, "bdat_too_big", False):
            buf.clear()
        else:
            buf += chunk
        if not last:
            await self.push(f"250 2.0.0 {size} octets received")
            return
        if getattr(self.envelope, "bdat_too_big", False):
            self._set_post_data_state()
            await self.push(f"552 5.3.4 Message larger than {self.data_size_limit} octets")
            return
        self.envelope.original_content = self.envelope.content = bytes(buf)
        status = await self.event_handler.handle_DATA(self, self.session, self.envelope)
        self._set_post_data_state()
        await self.push(status)

    async def _refuse_data_after_bdat(self) -> bool:
        if getattr(self.envelope, "bdat", None) is not None or getattr(self.envelope, "bdat_refused", False):
            await self.push("503 5.5.1 Error: DATA after BDAT (send the rest with BDAT)")
            return True
        return False

    async def smtp_VRFY(self, arg) -> None:
        await self.push("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery")

    async def handle_exception(self, error: Exception) -> str:
        log.exception("%r: submission session error", self.session.peer if self.session else None)
        return f"451 4.3.0 Internal error: {reply_text(str(error))}"


class _Handler:
    """aiosmtpd hooks: the greeting's extensions and the submission checks."""

    def __init__(self, server: "Server") -> None:
        self.server = server

    async def handle_EHLO(self, smtp, session, envelope, hostname, responses):
        session.host_name = hostname
        out = [r for r in responses[:-1] if not r[4:].upper().startswith("AUTH")]
        if smtp.may_authenticate():
            out.append("250-AUTH " + " ".join(smtp.mechanisms()))
        out += ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250-CHUNKING", "250 HELP"]
        return out

    async def handle_MAIL(self, smtp, session, envelope, address, mail_options):
        ident = smtp.identity
        if not ident.owns(address):
            log.warning("%s tried to send as <%s>", ident.user, address)
            return f"553 5.7.1 <{reply_text(address, 200)}>: sender address not owned by user {ident.user}"
        if not self.server.limiter.allows(ident.user):
            count, period = self.server.config.rate
            log.warning("%s is over the rate limit (%d messages in %d s)", ident.user, count, period)
            return f"451 4.7.1 Rate limit reached ({count} messages per {period} s); try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, smtp, session, envelope, address, rcpt_options):
        if rcpt_options:
            return "555 5.5.4 RCPT TO parameters not recognized or not implemented"
        if len(envelope.rcpt_tos) >= self.server.config.max_recipients:
            return f"452 4.5.3 Too many recipients (at most {self.server.config.max_recipients} per message)"
        if not bare(address) or "@" not in address:
            return f"553 5.1.3 <{reply_text(address, 200)}>: a recipient needs a domain"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, smtp, session, envelope):
        cfg = self.server.config
        ident = smtp.identity
        raw = envelope.original_content
        msg = Message(raw)
        bad = [a for a in headers.from_addresses(msg) if not ident.owns(a)]
        if bad:
            log.warning("%s tried to send with From: %s", ident.user, ", ".join(bad))
            return f"553 5.7.1 From: <{reply_text(bad[0], 200)}> is not an address of user {ident.user}"
        peer = session.peer[0] if isinstance(session.peer, tuple) else "unknown"
        received = None
        if cfg.received_header:
            received = headers.received_line(helo=session.host_name or "", peer=peer, hostname=cfg.hostname,
                                             tls=smtp.secure, user=ident.user, qid=os.urandom(6).hex())
        raw = headers.prepend(raw, headers.additions(msg, hostname=cfg.hostname, received=received))
        sender = envelope.mail_from
        rcpts = list(envelope.rcpt_tos)
        account = smtp.account
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        # Shielded: a client that hangs up now does not stop what is half done (it is finished
        # or undone as a whole; the client, without a 250, sends again).
        job = functools.partial(self.server.dispatcher.accept, account, sender, rcpts, raw,
                                helo=session.host_name or "", peer=peer)
        reply = await asyncio.shield(loop.run_in_executor(self.server.executor, job))
        if reply.startswith("250"):
            self.server.limiter.record(ident.user)
        log.debug("%s: DATA %d bytes in %.3f s: %s", ident.user, len(raw), time.monotonic() - started, reply)
        return reply


class Server:
    def __init__(self, config: SubmissionConfig, queue) -> None:
        from fetchdeliver.submission.dispatch import Dispatcher

        if queue is None:
            raise ConfigError("the submission service needs the outbound queue ([relay] / [queue]), "
                              "which could not be opened", key="submission")
        self.config = config
        self.queue = queue
        self.directory = Directory(config.settings, config.authenticator, config.aliases)
        self.dispatcher = Dispatcher(config.settings, queue, self.directory, save_sent=config.save_sent,
                                     sent_mailbox=config.sent_mailbox)
        queue.local_delivery = self.dispatcher.route
        self.limiter = RateLimiter(*config.rate)
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="submission")
        self.addresses: list[tuple[str, int, bool]] = []
        self.limits = netlimits.connection_limits(config)
        self.throttle = netlimits.login_throttle(config)
        self._listeners: list[netlimits.Listener] = []
        self._tasks: set = set()

    def _factory(self, implicit_tls: bool, slot: netlimits.Slot | None = None):
        cfg = self.config
        session = SubmissionSession(self, implicit_tls, data_size_limit=cfg.max_message_size, enable_SMTPUTF8=True,
                                 hostname=cfg.hostname, ident="fetchdeliver ESMTP submission",
                                 tls_context=None if implicit_tls else cfg.ssl_context,
                                 timeout=float(cfg.timeout), auth_require_tls=False,
                                 loop=asyncio.get_running_loop())
        session.slot = slot
        return session

    @staticmethod
    def refusal(reason: str) -> bytes:
        """The line a connection over a cap gets before it is closed."""
        return f"421 4.3.2 {reply_text(reason)}\r\n".encode()

    def _accepted(self, conn, slot: netlimits.Slot, tls: bool) -> None:
        netlimits.spawn(self._tasks, self._serve(conn, slot, tls))

    async def _serve(self, conn, slot: netlimits.Slot, tls: bool) -> None:
        conn.setblocking(False)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: self._factory(tls, slot), conn, ssl=self.config.ssl_context if tls else None,
                ssl_handshake_timeout=max(1.0, min(self.config.login_timeout, 60.0)) if tls else None)
        except (OSError, asyncio.TimeoutError) as e:   # a failed TLS handshake, a peer gone already
            log.debug("connection from %s ended before the session: %s", slot.ip, e)
            conn.close()
            slot.release()    # given back once only (Slot.release is idempotent)

    async def start(self) -> list[tuple[str, int, bool]]:
        cfg = self.config
        if cfg.max_connections is None:
            self.limits.max_total = netlimits.fit_max_connections(None, "submission")
        try:
            self._listeners, self.addresses = netlimits.open_listeners(
                "submission", ((cfg.listen, False), (cfg.tls_listen, True)), limits=self.limits,
                accepted=self._accepted, refusal=self.refusal, logger=log)
        except ConfigError as e:
            raise ConfigError(e.detail, key="submission.listen") from None
        return self.addresses

    async def serve_forever(self) -> None:
        await asyncio.gather(*(lst.wait() for lst in self._listeners))

    async def stop(self) -> None:
        for lst in self._listeners:
            lst.close()
        self._listeners.clear()
        for t in list(self._tasks):
            t.cancel()
        # Accepted messages being queued finish before we return.
        await asyncio.get_running_loop().run_in_executor(None, self.executor.shutdown, True)
        if self.queue.local_delivery == self.dispatcher.route:
            self.queue.local_delivery = None
        self.dispatcher.close()


class ThreadedServer(serversetup.ThreadedServer):
    """A Server on its own event loop in a background thread (tests, benchmarks)."""

    def __init__(self, config: SubmissionConfig, queue) -> None:
        super().__init__(Server(config, queue), "submission-server", stop_timeout=30)
