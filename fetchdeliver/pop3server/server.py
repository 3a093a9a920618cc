"""The asyncio POP3 server: listeners (plain with STLS, implicit TLS), logins, one session per mailbox.

    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(path))
    server = Server(cfg); await server.start(); server.addresses  -> [("127.0.0.1", 40123, False)]

Logins and mail come from the IMAP server's interface (imapserver/auth.py, imapserver/plugin.py):
an Authenticator checks the password and may decide, with `storage_for(account)`, which store a
login sees; otherwise the account's `mail` location or [delivery]'s is opened (storage.open_store).
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from fetchdeliver import netlimits, serversetup
from fetchdeliver.errors import ConfigError
from fetchdeliver.pop3server.session import AUTHORIZATION, InUse, Session
from fetchdeliver.pop3server.settings import DEFAULT_UIDL_FORMAT
from fetchdeliver.pop3server.saved_uidls import SavedUidls
from fetchdeliver.pop3server.sizes import SizeCache
from fetchdeliver.pop3server.uidl import compile_format

if TYPE_CHECKING:
    from fetchdeliver.config import Settings


def _log():
    import logging

    return logging.getLogger("fetchdeliver.pop3server")


class ServerConfig(netlimits.LimitSettings):
    """Also the connection and login limits of netlimits.LimitSettings (max_connections, login_timeout, ...)."""

    def __init__(self, *, listen=("127.0.0.1:1110",), tls_listen=(), ssl_context=None, authenticator=None,
                 default_mail: str | None = None, allow_plaintext_auth: bool = False,
                 login_failure_delay: float = 2.0, idle_timeout: float = 600.0, mailbox: str = "INBOX",
                 uidl_format: str = DEFAULT_UIDL_FORMAT, mark_seen: bool = True, expire=None,
                 login_delay: float = 0, max_line: int = 8192, **limits) -> None:
        self.set_limits(**limits)
        self.listen = list(listen)
        self.tls_listen = list(tls_listen)
        self.ssl_context = ssl_context
        self.authenticator = authenticator
        self.default_mail = default_mail       # "maildir:PATH" / "mbox:PATH" for users without their own
        self.allow_plaintext_auth = allow_plaintext_auth
        self.login_failure_delay = login_failure_delay
        self.idle_timeout = idle_timeout
        self.mailbox = mailbox
        self.uidl_format = uidl_format
        self.mark_seen = mark_seen
        self.expire = expire                   # "never" (advertised), None (not advertised) or days
        self.login_delay = login_delay
        self.max_line = max_line
        self.quota_settings: Settings | None = None   # with [quota]: a DELE gives the room back


KEEP_OPEN = 32   # mailboxes kept open between POP3 sessions (each holds its message list and index)


def split_address(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class MailboxLock:
    """One POP3 session per mailbox: within this process by key, across processes by flock(2) on the
    mailbox's directory when it has one (a Maildir folder; no file is created)."""

    _held: set[str] = set()
    _guard = threading.Lock()

    def __init__(self, key: str, directory: str | None) -> None:
        self.key: str | None = key
        self.fd: int | None = None
        with MailboxLock._guard:
            if key in MailboxLock._held:
                raise InUse("Mailbox is locked by another POP3 session.")
            MailboxLock._held.add(key)
        if directory and os.path.isdir(directory):
            import fcntl

            try:
                fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return   # not lockable here: the in-process lock still holds
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return   # a file system without flock: the in-process lock still holds
                self._drop()
                raise InUse("Mailbox is locked by another POP3 session.") from None
            self.fd = fd

    def _drop(self) -> None:
        with MailboxLock._guard:
            MailboxLock._held.discard(self.key)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)   # closing the descriptor drops the flock
            self.fd = None
        if self.key is not None:
            self._drop()
            self.key = None


class Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.uidl = compile_format(config.uidl_format)
        self.addresses: list[tuple[str, int, bool]] = []
        self.listeners: list[netlimits.Listener] = []
        self.sessions: set[asyncio.Task] = set()
        self.limits = netlimits.connection_limits(config)
        self.throttle = netlimits.login_throttle(config)
        self._last_login: dict[str, float] = {}
        self.sizes = SizeCache()
        self.saved_uidls = SavedUidls()
        self._idle: OrderedDict[str, Any] = OrderedDict()   # mailboxes kept open between sessions
        self._idle_guard = threading.Lock()
        self._idents: dict[int, str] = {}     # id(open mailbox) -> its key in _idle
        self._closing = False

    # -- logins and mailboxes -------------------------------------------------------------------

    def authenticate(self, user: str, password: str):
        if self.config.authenticator is None:
            return None
        return self.config.authenticator.authenticate(user, password)

    async def check_login(self, peer: str | None, user: str, password: str):
        """The Account for a correct login, else None; slowed after failures (netlimits.LoginThrottle).

        Raises netlimits.LoginThrottled when the password is not checked at all for now."""
        return await self.throttle.attempt(peer, user,
                                           lambda: asyncio.to_thread(self.authenticate, user, password))

    def login_delay_left(self, user: str) -> float:
        """Seconds until `user` may log in again under LOGIN-DELAY (0 when allowed now)."""
        delay = self.config.login_delay
        last = self._last_login.get(user)
        if not delay or last is None:
            return 0.0
        return max(0.0, last + delay - time.monotonic())

    def logged_in(self, user: str) -> None:
        if self.config.login_delay:
            self._last_login[user] = time.monotonic()

    def location_for(self, account) -> str | None:
        return account.mail or self.config.default_mail

    def storage_for(self, account):
        auth = self.config.authenticator
        custom = getattr(auth, "storage_for", None)
        if custom is not None:
            return custom(account)
        location = self.location_for(account)
        if not location:
            raise ConfigError(f"no mail location for user {account.user!r}: give userdb_mail=maildir:PATH "
                              "in the passwd-file or set [delivery] maildir")
        from fetchdeliver.storage import open_store

        store = open_store(location)
        if self.config.quota_settings is not None:   # [quota]: maildirsize follows DELE (as Dovecot's)
            from fetchdeliver.storage.quota import attach_quota

            attach_quota(store, self.config.quota_settings, account.user)
        return store

    def open_mailbox(self, account):
        """(mailbox, lock, snapshot, saved UIDLs) for a login; InUse when another POP3 session has it.

        A mailbox of a mail location (not a plugin's store) is kept open between its sessions
        (`keep_mailbox`): the next login then costs a `sync()`, not a reload of the index."""
        name = self.config.mailbox
        custom = getattr(self.config.authenticator, "storage_for", None) is not None
        ident = None if custom else f"loc:{self.location_for(account)}\0{name}"
        with self._idle_guard:
            mailbox = self._idle.pop(ident, None) if ident is not None else None
        if mailbox is None:
            mailbox = self.storage_for(account).open(name)
        try:
            where = getattr(mailbox, "path", None)
            key = f"path:{os.path.realpath(where)}" if isinstance(where, str) else \
                ident or f"user:{account.user}\0{name}"
            lock = MailboxLock(key, where if isinstance(where, str) else None)
            try:
                msgs = list(mailbox.sync())
                saved = self.saved_uidls.for_folder(where) if isinstance(where, str) and os.path.isdir(where) \
                    else {}
            except BaseException:
                lock.release()
                raise
        except BaseException:
            mailbox.close()
            raise
        if ident is not None:
            with self._idle_guard:
                self._idents[id(mailbox)] = ident     # for keep_mailbox()
        return mailbox, lock, msgs, saved

    def keep_mailbox(self, mailbox) -> None:
        """A session is done with `mailbox`: keep it open for the next login (the least recently
        used beyond KEEP_OPEN are closed), or close it when it cannot be reused."""
        evicted = []
        with self._idle_guard:
            ident = self._idents.pop(id(mailbox), None)
            if ident is None or self._closing or ident in self._idle:
                evicted.append(mailbox)
            else:
                self._idle[ident] = mailbox
                while len(self._idle) > KEEP_OPEN:
                    evicted.append(self._idle.popitem(last=False)[1])
        for m in evicted:
            m.close()

    def close_idle_mailboxes(self) -> None:
        with self._idle_guard:
            self._closing = True
            boxes, self._idle = list(self._idle.values()), OrderedDict()
        for m in boxes:
            try:
                m.close()
            except Exception:  # noqa: BLE001 - stopping: close the others anyway
                _log().exception("closing a mailbox")

    # -- listening -------------------------------------------------------------------------------

    async def start(self) -> list[tuple[str, int, bool]]:
        cfg = self.config
        self.limits.max_total = netlimits.fit_max_connections(cfg.max_connections, "pop3")
        listeners, addresses = netlimits.open_listeners(
            "pop3", ((cfg.listen, False), (cfg.tls_listen, True)), limits=self.limits,
            accepted=self._accepted, refusal=lambda why: f"-ERR [SYS/TEMP] {why}\r\n".encode(), logger=_log())
        self.listeners.extend(listeners)
        self.addresses.extend(addresses)
        return self.addresses

    def _accepted(self, conn, slot, tls: bool) -> None:
        """One admitted connection: its session under the login deadline; the slot is given back at the end.
        A session cancelled (the server stopping, the deadline) deletes nothing: only QUIT does."""
        cfg = self.config
        netlimits.spawn(self.sessions, netlimits.serve_connection(
            conn, slot, session=lambda reader, writer: Session(self, reader, writer, tls),
            logged_in=lambda session: session.state != AUTHORIZATION,
            timeout_line=b"-ERR Login timeout: log in sooner after connecting.\r\n",
            login_timeout=cfg.login_timeout, ssl_context=cfg.ssl_context if tls else None,
            max_line=cfg.max_line, logger=_log()))

    async def serve_forever(self) -> None:
        await asyncio.gather(*(lst.wait() for lst in self.listeners))

    async def stop(self) -> None:
        await serversetup.stop_listening(self.listeners, self.sessions)
        self.close_idle_mailboxes()


class ThreadedServer(serversetup.ThreadedServer):
    """A Server on its own event loop in a background thread (tests, embedding)."""

    def __init__(self, config: ServerConfig) -> None:
        super().__init__(Server(config), "pop3-server")
