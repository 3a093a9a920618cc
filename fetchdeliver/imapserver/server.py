"""The asyncio IMAP server: listeners (plain with STARTTLS, implicit TLS), sessions, logins, stores.

    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(path))
    server = Server(cfg); await server.start(); server.addresses  -> [("127.0.0.1", 40123, False)]

Plugins: an Authenticator may also define `storage_for(account) -> Storage`,
which then decides which mail a login sees (see imapserver/plugin.py).
"""

from __future__ import annotations

import asyncio
import threading

from fetchdeliver.errors import ConfigError
from fetchdeliver.imapserver.session import Session
from fetchdeliver.imapserver.watch import Watcher


def _log():
    import logging

    return logging.getLogger("fetchdeliver.imapserver")


class ServerConfig:
    def __init__(self, *, listen=("127.0.0.1:1143",), tls_listen=(), ssl_context=None, authenticator=None,
                 default_mail: str | None = None, allow_plaintext_auth: bool = False,
                 login_failure_delay: float = 2.0, idle_timeout: float = 1800.0, idle_poll: float = 30.0,
                 max_line: int = 65536, max_literal: int = 64 * 1024 * 1024) -> None:
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


def split_address(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


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
        self.addresses: list[tuple[str, int, bool]] = []
        self._servers: list[asyncio.base_events.Server] = []
        self.sessions: set[asyncio.Task] = set()

    def authenticate(self, user: str, password: str):
        if self.config.authenticator is None:
            return None
        return self.config.authenticator.authenticate(user, password)

    def storage_for(self, account):
        auth = self.config.authenticator
        custom = getattr(auth, "storage_for", None)
        if custom is not None:
            return custom(account)
        location = account.mail or self.config.default_mail
        if not location:
            raise ConfigError(f"no mail location for user {account.user!r}: give userdb_mail=maildir:PATH "
                              "in the passwd-file or set [delivery] maildir")
        return storage_from_location(location)

    async def start(self) -> list[tuple[str, int, bool]]:
        cfg = self.config
        for addrs, tls in ((cfg.listen, False), (cfg.tls_listen, True)):
            for addr in addrs:
                host, port = split_address(addr)

                async def on_connect(reader, writer, tls=tls):
                    task = asyncio.current_task()
                    self.sessions.add(task)
                    try:
                        await Session(self, reader, writer, tls).run()
                    except asyncio.CancelledError:
                        writer.close()   # the server is stopping; end quietly
                    except Exception:
                        _log().exception("session crashed")
                    finally:
                        self.sessions.discard(task)

                try:
                    srv = await asyncio.start_server(on_connect, host, port, limit=cfg.max_line,
                                                     ssl=cfg.ssl_context if tls else None)
                except OSError as e:
                    raise ConfigError(f"cannot listen on {addr}: {e.strerror or e}") from None
                self._servers.append(srv)
                for sock in srv.sockets:
                    name = sock.getsockname()
                    self.addresses.append((name[0], name[1], tls))
        return self.addresses

    async def serve_forever(self) -> None:
        await asyncio.gather(*(s.serve_forever() for s in self._servers))

    async def stop(self) -> None:
        for s in self._servers:
            s.close()
        for t in list(self.sessions):
            t.cancel()
        for s in self._servers:
            try:
                await asyncio.wait_for(s.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass
        self.watcher.stop()


class ThreadedServer:
    """A Server on its own event loop in a background thread (tests, embedding)."""

    def __init__(self, config: ServerConfig) -> None:
        self.server = Server(config)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="imap-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> "ThreadedServer":
        self.thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    @property
    def addresses(self):
        return self.server.addresses

    def port(self, tls: bool = False) -> int:
        return next(p for _h, p, t in self.server.addresses if t == tls)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop)
        try:
            fut.result(15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(15)
