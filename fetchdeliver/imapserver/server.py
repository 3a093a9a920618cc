"""The asyncio IMAP server: listeners (plain with STARTTLS, implicit TLS), sessions, logins, stores.

    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(path))
    server = Server(cfg); await server.start(); server.addresses  -> [("127.0.0.1", 40123, False)]

Plugins: an Authenticator may also define `storage_for(account) -> Storage`,
which then decides which mail a login sees (see imapserver/plugin.py).
"""

from __future__ import annotations

import asyncio

from fetchdeliver import netlimits, serversetup
from fetchdeliver.errors import ConfigError
from fetchdeliver.imapserver.session import NOT_AUTH, Session
from fetchdeliver.imapserver.watch import Watcher


def _log():
    import logging

    return logging.getLogger("fetchdeliver.imapserver")


class ServerConfig:
    def __init__(self, *, listen=("127.0.0.1:1143",), tls_listen=(), ssl_context=None, authenticator=None,
                 default_mail: str | None = None, allow_plaintext_auth: bool = False,
                 login_failure_delay: float = 2.0, idle_timeout: float = 1800.0, idle_poll: float = 30.0,
                 max_line: int = 65536, max_literal: int = 64 * 1024 * 1024,
                 append_limit: int | None = None, literal_plus: bool = True,
                 max_connections: int | None = None,
                 max_connections_per_ip: int = netlimits.DEFAULT_MAX_CONNECTIONS_PER_IP,
                 login_timeout: float = netlimits.DEFAULT_LOGIN_TIMEOUT,
                 login_failure_max_delay: float = netlimits.DEFAULT_LOGIN_FAILURE_MAX_DELAY,
                 login_failure_rate: tuple[int, float] | None = netlimits.DEFAULT_LOGIN_FAILURE_RATE) -> None:
        self.listen = list(listen)
        self.tls_listen = list(tls_listen)
        self.ssl_context = ssl_context
        self.authenticator = authenticator
        self.default_mail = default_mail       # "maildir:PATH" / "mbox:PATH" for users without their own
        self.allow_plaintext_auth = allow_plaintext_auth
        self.login_failure_delay = login_failure_delay
        self.idle_timeout = idle_timeout
        self.idle_poll = idle_poll             # IDLE re-checks this often even without a file event
        self.max_line = max_line
        self.max_literal = max_literal
        self.append_limit = append_limit      # APPENDLIMIT (RFC 7889); None: max_literal
        self.literal_plus = literal_plus      # False: LITERAL- (RFC 7888), {n+} only up to 4096 bytes
        # None: 1000, or fewer when the open-file limit cannot hold that many (netlimits.fit_max_connections)
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.login_timeout = login_timeout          # from connecting to a successful login (TLS handshake too)
        self.login_failure_max_delay = login_failure_max_delay
        self.login_failure_rate = login_failure_rate  # (count, seconds) for addresses with recent failures
        self.quota_settings = None     # config.Settings with a [quota] table: quotas (storage/quota.py)
        self.imapsieve = None          # imapsieve.ImapSieveConfig from [imapsieve] (RFC 6785)


def split_address(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def postgres_location(storage: dict) -> str:
    """The [storage] table as one postgres mail location (its blobs settings in the query)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(storage["url"])
    query = parse_qsl(parts.query, keep_blank_values=True)
    for key in ("blobs", "blob_min_size"):
        if key in storage and not any(k == key for k, _ in query):
            query.append((key, str(storage[key])))
    return urlunsplit(parts._replace(query=urlencode(query)))


def location_for_user(location: str, user: str) -> str:
    """A postgresql:// location without ?mailuser= names the logged-in user's mail (the default
    for every user when [storage] url is set); other locations are the same for every user."""
    if not location.startswith(("postgresql://", "postgres://")):
        return location
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(location)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "mailuser" for k, _ in query):
        return location
    query.append(("mailuser", user))
    return urlunsplit(parts._replace(query=urlencode(query)))


def storage_from_location(location: str):
    """A Storage for "maildir:PATH", "mbox:PATH" or a plugin's "NAME:ARGS" (storage.open_store)."""
    from fetchdeliver.storage import open_store

    return open_store(location)


class Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.watcher = Watcher()
        from fetchdeliver.imapserver.cache import MessageCache

        self.cache = MessageCache()
        from fetchdeliver.imapserver.recent import RecentTracker

        self.recent = RecentTracker()   # \Recent for what COPY/MOVE/APPEND added (imapserver/recent.py)
        self.addresses: list[tuple[str, int, bool]] = []
        self.listeners: list[netlimits.Listener] = []
        self.sessions: set[asyncio.Task] = set()
        self.limits = netlimits.connection_limits(config)
        self.throttle = netlimits.login_throttle(config)

    def authenticate(self, user: str, password: str):
        if self.config.authenticator is None:
            return None
        return self.config.authenticator.authenticate(user, password)

    async def check_login(self, peer: str | None, user: str, password: str):
        """The Account for a correct login, else None; slowed after failures (netlimits.LoginThrottle).

        Raises netlimits.LoginThrottled when the password is not checked at all for now."""
        return await self.throttle.attempt(peer, user,
                                           lambda: asyncio.to_thread(self.authenticate, user, password))

    def storage_for(self, account):
        auth = self.config.authenticator
        custom = getattr(auth, "storage_for", None)
        if custom is not None:
            return custom(account)
        location = account.mail or self.config.default_mail
        if not location:
            raise ConfigError(f"no mail location for user {account.user!r}: give userdb_mail=maildir:PATH "
                              "in the passwd-file or set [delivery] maildir or [storage] url")
        store = storage_from_location(location_for_user(location, account.user))
        if self.config.quota_settings is not None:   # [quota]: APPEND/COPY checked, GETQUOTA answered
            from fetchdeliver.storage.quota import attach_quota

            attach_quota(store, self.config.quota_settings, account.user)
        return store

    async def start(self) -> list[tuple[str, int, bool]]:
        cfg = self.config
        self.limits.max_total = netlimits.fit_max_connections(cfg.max_connections, "imap")
        # Over a cap: a BYE on plain IMAP; before a TLS handshake nothing can be said.
        listeners, addresses = netlimits.open_listeners(
            "imap", ((cfg.listen, False), (cfg.tls_listen, True)), limits=self.limits,
            accepted=self._accepted, refusal=lambda why: f"* BYE [UNAVAILABLE] {why}\r\n".encode(), logger=_log())
        self.listeners.extend(listeners)
        self.addresses.extend(addresses)
        return self.addresses

    def _accepted(self, conn, slot, tls: bool) -> None:
        cfg = self.config
        netlimits.spawn(self.sessions, netlimits.serve_connection(
            conn, slot, session=lambda reader, writer: Session(self, reader, writer, tls),
            logged_in=lambda session: session.state != NOT_AUTH,
            timeout_line=b"* BYE Login timeout: log in sooner after connecting.\r\n",
            login_timeout=cfg.login_timeout, ssl_context=cfg.ssl_context if tls else None,
            max_line=cfg.max_line, logger=_log()))

    async def serve_forever(self) -> None:
        await asyncio.gather(*(lst.wait() for lst in self.listeners))

    async def stop(self) -> None:
        await serversetup.stop_listening(self.listeners, self.sessions)
        self.watcher.stop()


class ThreadedServer(serversetup.ThreadedServer):
    """A Server on its own event loop in a background thread (tests, embedding)."""

    def __init__(self, config: ServerConfig) -> None:
        super().__init__(Server(config), "imap-server")
