"""The asyncio ManageSieve server: listeners (plain with STARTTLS, implicit TLS), logins, script stores.

    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(path))
    server = Server(cfg); await server.start(); server.addresses  -> [("127.0.0.1", 40123, False)]

Logins are the IMAP server's: the same Authenticator interface
(fetchdeliver.imapserver.auth), so one passwd-file (or one `backend` plugin)
serves both. A backend may also define `sieve_dir_for(account) -> str` to
choose where a user's scripts live.
"""

from __future__ import annotations

import asyncio
import os

from fetchdeliver import netlimits, serversetup
from fetchdeliver.errors import ConfigError
from fetchdeliver.managesieve.storage import PostgresScriptStore, ScriptStore


def _log():
    import logging

    return logging.getLogger("fetchdeliver.managesieve")


class ServerConfig(netlimits.LimitSettings):
    """Also the connection and login limits of netlimits.LimitSettings (max_connections, login_timeout, ...)."""

    def __init__(self, *, listen=("127.0.0.1:4190",), tls_listen=(), ssl_context=None, authenticator=None,
                 allow_plaintext_auth: bool = False, login_failure_delay: float = 2.0,
                 idle_timeout: float = 1800.0, sieve_dir: str = "~", max_scripts: int = 100,
                 max_script_size: int = 1024 * 1024, sieve_options: dict | None = None,
                 max_line: int = 8192, compile_cache_dir: str | None = None,
                 storage_url: str | None = None, **limits) -> None:
        self.set_limits(**limits)
        self.storage_url = storage_url    # [storage] url: scripts in PostgreSQL, not in sieve_dir
        self.listen = list(listen)
        self.tls_listen = list(tls_listen)
        self.ssl_context = ssl_context
        self.authenticator = authenticator
        self.allow_plaintext_auth = allow_plaintext_auth
        self.login_failure_delay = login_failure_delay
        self.idle_timeout = idle_timeout
        self.sieve_dir = sieve_dir
        self.max_scripts = max_scripts
        self.max_script_size = max_script_size
        self.sieve_options = dict(sieve_options or {})   # the [sieve] table: extensions, include dirs
        self.max_line = max_line
        # The compiled-script cache deliveries read (keyed by the text's SHA-256): a script checked here
        # is not compiled again by SETACTIVE or by the first delivery that runs it. None: no cache.
        self.compile_cache_dir = compile_cache_dir

    @property
    def max_literal(self) -> int:
        """The largest literal kept after login (larger ones are read, dropped and refused)."""
        return self.max_script_size or 64 * 1024 * 1024


def split_address(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def expand_sieve_dir(template: str, account) -> str:
    """The per-user base directory: ~ is the account's home, %u the user, %n its local part, %d its domain."""
    user = account.user
    local, _, domain = user.partition("@")
    out, i = [], 0
    while i < len(template):
        c = template[i]
        if c == "%" and i + 1 < len(template):
            k = template[i + 1]
            rep = {"u": user, "n": local, "d": domain, "%": "%"}.get(k)
            if rep is None:
                raise ConfigError(f"unknown variable %{k} in sieve_dir {template!r} (use %u, %n, %d)",
                                  key="managesieve.sieve_dir")
            if k != "%" and ("/" in rep or rep in ("", ".", "..")):
                raise ConfigError(f"user name {user!r} cannot be used in a path", key="managesieve.sieve_dir")
            out.append(rep)
            i += 2
            continue
        out.append(c)
        i += 1
    path = "".join(out)
    if path == "~" or path.startswith("~/"):
        if not account.home:
            raise ConfigError(f"user {user!r} has no home directory in the passwd-file; set one, or give "
                              "[managesieve] sieve_dir a path such as \"/var/lib/sieve/%u\"",
                              key="managesieve.sieve_dir")
        path = account.home + path[1:]
    if not os.path.isabs(path):
        raise ConfigError(f"sieve_dir {template!r} gives a relative path {path!r} for {user!r}",
                          key="managesieve.sieve_dir")
    return os.path.normpath(path)


class Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.addresses: list[tuple[str, int, bool]] = []
        self.listeners: list[netlimits.Listener] = []
        self.sessions: set[asyncio.Task] = set()
        self.limits = netlimits.connection_limits(config)
        self.throttle = netlimits.login_throttle(config)
        self._extensions: list[str] | None = None

    # -- what sessions ask ---------------------------------------------------------------
    def authenticate(self, user: str, password: str):
        if self.config.authenticator is None:
            return None
        return self.config.authenticator.authenticate(user, password)

    async def check_login(self, peer: str | None, user: str, password: str):
        """The Account for a correct login, else None; slowed after failures (netlimits.LoginThrottle).

        Raises netlimits.LoginThrottled when the password is not checked at all for now."""
        return await self.throttle.attempt(peer, user,
                                           lambda: asyncio.to_thread(self.authenticate, user, password))

    def store_for(self, account) -> ScriptStore | PostgresScriptStore:
        cfg = self.config
        if cfg.storage_url:
            from fetchdeliver.storage.postgres import PostgresStore

            return PostgresScriptStore(PostgresStore(cfg.storage_url, user=account.user),
                                       max_scripts=cfg.max_scripts, max_script_size=cfg.max_script_size)
        custom = getattr(cfg.authenticator, "sieve_dir_for", None)
        base = custom(account) if custom is not None else expand_sieve_dir(cfg.sieve_dir, account)
        owner = (account.uid, account.gid) if account.uid is not None and account.gid is not None else None
        return ScriptStore(base, max_scripts=cfg.max_scripts, max_script_size=cfg.max_script_size, owner=owner)

    def sieve_extensions(self) -> list[str]:
        """What the interpreter really has, as enabled by [sieve] extensions (the SIEVE capability)."""
        if self._extensions is None:
            from fetchdeliver.sieve.registry import IMPLICIT, enabled_extensions

            self._extensions = sorted(enabled_extensions(self.config.sieve_options.get("extensions")) - IMPLICIT)
        return self._extensions

    def max_redirects(self) -> int:
        """The most redirects a script may do (the interpreter's limit; [sieve] max_redirects)."""
        from fetchdeliver.sieve.interpreter import MAX_REDIRECTS

        return int(self.config.sieve_options.get("max_redirects", MAX_REDIRECTS))

    def compile_errors(self, script: bytes, path: str, display: str) -> str | None:
        """None when `script` compiles; else one "NAME:LINE:COL: error: ..." line per problem."""
        from fetchdeliver.sieve import cache
        from fetchdeliver.sieve.compiler import compile_bytes
        from fetchdeliver.sieve.errors import SieveCompileError

        cache_dir = self.config.compile_cache_dir
        key = cache.key(script, self.config.sieve_options)
        if cache_dir and cache.load(cache_dir, key, path) is not None:
            return None
        try:
            compiled = compile_bytes(script, path, options=self.config.sieve_options)
        except SieveCompileError as e:
            lines = []
            for err in e.errors:
                where = display if err.file == path else err.file
                lines.append(f"{where}:{err.line}:{err.column}: error: {err.message}")
            return "\r\n".join(lines)
        if cache_dir:
            cache.store(cache_dir, key, compiled)
        return None

    # -- listening ---------------------------------------------------------------------------
    async def start(self) -> list[tuple[str, int, bool]]:
        from fetchdeliver.managesieve.protocol import quote

        cfg = self.config
        self.limits.max_total = netlimits.fit_max_connections(cfg.max_connections, "managesieve")
        listeners, addresses = netlimits.open_listeners(
            "managesieve", ((cfg.listen, False), (cfg.tls_listen, True)), limits=self.limits,
            accepted=self._accepted, refusal=lambda why: b"BYE " + quote(why) + b"\r\n", logger=_log())
        self.listeners.extend(listeners)
        self.addresses.extend(addresses)
        return self.addresses

    def _accepted(self, conn, slot, tls: bool) -> None:
        from fetchdeliver.managesieve.session import NOT_AUTH, Session

        cfg = self.config
        netlimits.spawn(self.sessions, netlimits.serve_connection(
            conn, slot, session=lambda reader, writer: Session(self, reader, writer, tls),
            logged_in=lambda session: session.state != NOT_AUTH,
            timeout_line=b'BYE "Login timeout: log in sooner after connecting."\r\n',
            login_timeout=cfg.login_timeout, ssl_context=cfg.ssl_context if tls else None,
            max_line=cfg.max_line, logger=_log()))

    async def serve_forever(self) -> None:
        await asyncio.gather(*(lst.wait() for lst in self.listeners))

    async def stop(self) -> None:
        await serversetup.stop_listening(self.listeners, self.sessions)


class ThreadedServer(serversetup.ThreadedServer):
    """A Server on its own event loop in a background thread (tests, embedding)."""

    def __init__(self, config: ServerConfig) -> None:
        super().__init__(Server(config), "managesieve-server")
