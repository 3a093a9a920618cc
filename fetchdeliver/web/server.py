"""The web server: uvicorn serving the Starlette app on sockets we bind, inside the caller's event loop.

    server = WebServer(build_web_config(args, data), daemon=None)
    await server.start()        # [("127.0.0.1", 8025, False)]
    ...
    await server.stop()

The daemon runs it next to its other listeners; `fetchdeliver web` runs it alone.
uvicorn's own signal handling is switched off: the daemon owns SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket

from fetchdeliver import netlimits
from fetchdeliver.errors import ConfigError

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(addr: str) -> socket.socket:
    from fetchdeliver.managesieve.server import split_address

    host, port = split_address(addr)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"cannot listen on {addr}: {e}", key="web.listen") from None
    family, _t, _p, _c, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)   # asyncio sets TCP_NODELAY only then
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(sockaddr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {addr}: {e.strerror or e}", key="web.listen") from None
    sock.setblocking(False)
    return sock


def _server_class():
    import uvicorn

    class EmbeddedServer(uvicorn.Server):
        """uvicorn without its signal handlers (the daemon has its own)."""

        @contextlib.contextmanager
        def capture_signals(self):
            yield

    return EmbeddedServer


def refusal(why: str) -> bytes:
    """The answer to a connection over a cap: 503, then the connection is closed."""
    body = (why + "\n").encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Retry-After: 60\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


def limited_protocol(protocol_class, login_timeout: float):
    """uvicorn's HTTP protocol class, holding the connection's place (`netlimits.Slot`) until it closes,
    and closing a connection whose first request (its head) has not arrived `login_timeout` after
    connecting (the pre-login deadline of the mail servers). Connections are admitted by
    `netlimits.Listener` (caps, EMFILE) before this class sees them."""

    class LimitedHTTPProtocol(protocol_class):
        fd_slot: netlimits.Slot | None = None
        fd_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.fd_timer = asyncio.get_running_loop().call_later(login_timeout, self.fd_deadline)

        def fd_deadline(self) -> None:
            self.fd_timer = None
            if self.cycle is None and not self.transport.is_closing():   # no request begun yet
                self.transport.close()

        def connection_lost(self, exc) -> None:
            slot, self.fd_slot = self.fd_slot, None
            if self.fd_timer is not None:
                self.fd_timer.cancel()
                self.fd_timer = None
            try:
                super().connection_lost(exc)
            finally:
                if slot is not None:
                    slot.release()

    return LimitedHTTPProtocol


class WebServer:
    def __init__(self, cfg, daemon=None) -> None:
        self.cfg = cfg
        self.daemon = daemon
        self.limits = netlimits.connection_limits(cfg)
        self.throttle = netlimits.login_throttle(cfg)
        self.addresses: list[tuple[str, int, bool]] = []
        self._servers: list = []
        self._tasks: list[asyncio.Task] = []
        self._listen: list = []
        self._listeners: list[netlimits.Listener] = []
        self._handshakes: set[asyncio.Task] = set()

    def check(self) -> None:
        """Refuse plain HTTP on a non-loopback address unless allow_insecure is set."""
        from fetchdeliver.managesieve.server import split_address

        for addr in self.cfg.listen:
            host, _port = split_address(addr)
            if not is_loopback(host) and not self.cfg.allow_insecure:
                raise ConfigError(f"refusing to serve the web page without TLS on {addr} (not a loopback "
                                  "address): use tls_listen with cert and key, or set allow_insecure = true",
                                  key="web.listen")

    async def start(self) -> list[tuple[str, int, bool]]:
        import uvicorn

        from fetchdeliver.web.app import build_app

        self.check()
        app = build_app(self.cfg, daemon=self.daemon, throttle=self.throttle)
        cls = _server_class()
        self.limits.max_total = netlimits.fit_max_connections(self.cfg.max_connections, "web")
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        protocol = limited_protocol(AutoHTTPProtocol, self.cfg.login_timeout)
        for addrs, tls in ((self.cfg.listen, False), (self.cfg.tls_listen, True)):
            if not addrs:
                continue
            socks = [_bind(a) for a in addrs]
            kwargs = {}
            if tls:
                kwargs = {"ssl_certfile": self.cfg.cert, "ssl_keyfile": self.cfg.key}
            config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False,
                                    proxy_headers=False, server_header=False, http=protocol, **kwargs)
            server = cls(config)
            self._servers.append(server)
            # uvicorn listens on nothing (an empty socket list); our Listener accepts, within the
            # connection caps, and meets EMFILE with a pause and one log line (asyncio's own accept loop
            # would log a traceback a second), then hands each connection to uvicorn's protocol.
            self._tasks.append(asyncio.ensure_future(server.serve(sockets=[])))
            for s in socks:
                name = s.getsockname()
                self.addresses.append((name[0], name[1], tls))
                self._listen.append((s, server, tls))
        # serve() binds nothing itself (the sockets are ours): wait until it runs.
        for _ in range(500):
            if all(s.started for s in self._servers) or any(t.done() for t in self._tasks):
                break
            await asyncio.sleep(0.01)
        for t in self._tasks:
            if t.done() and t.exception() is not None:
                raise ConfigError(f"the web server did not start: {t.exception()}", key="web.listen")
        for sock, server, tls in self._listen:
            self._listeners.append(netlimits.Listener(
                sock, self._on_socket(server, protocol), limits=self.limits,
                refusal=None if tls else refusal, name="web", logger=log).start())
        return self.addresses

    def _on_socket(self, server, protocol):
        loop = asyncio.get_running_loop()
        config = server.config

        def on_socket(conn: socket.socket, slot: netlimits.Slot) -> None:
            def make() -> asyncio.Protocol:
                proto = protocol(config=config, server_state=server.server_state,
                                 app_state=server.lifespan.state)
                proto.fd_slot = slot    # released by connection_lost
                return proto

            async def connect() -> None:
                try:
                    await loop.connect_accepted_socket(make, conn, ssl=config.ssl)
                except (OSError, asyncio.CancelledError) as e:   # TLS handshake failed, peer went away
                    log.debug("web: connection dropped before its first request: %s", e)
                    slot.release()      # idempotent: connection_lost may have released it already
                    conn.close()

            task = loop.create_task(connect())
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

        return on_socket

    async def stop(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        self._listen.clear()
        for s in self._servers:
            s.should_exit = True
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._servers.clear()
        self._tasks.clear()
