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
    sock = socket.socket(family, socket.SOCK_STREAM)
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


class WebServer:
    def __init__(self, cfg, daemon=None) -> None:
        self.cfg = cfg
        self.daemon = daemon
        self.addresses: list[tuple[str, int, bool]] = []
        self._servers: list = []
        self._tasks: list[asyncio.Task] = []

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
        app = build_app(self.cfg, daemon=self.daemon)
        cls = _server_class()
        for addrs, tls in ((self.cfg.listen, False), (self.cfg.tls_listen, True)):
            if not addrs:
                continue
            socks = [_bind(a) for a in addrs]
            kwargs = {}
            if tls:
                kwargs = {"ssl_certfile": self.cfg.cert, "ssl_keyfile": self.cfg.key}
            config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False,
                                    proxy_headers=False, server_header=False, **kwargs)
            server = cls(config)
            self._servers.append(server)
            self._tasks.append(asyncio.ensure_future(server.serve(sockets=socks)))
            for s in socks:
                name = s.getsockname()
                self.addresses.append((name[0], name[1], tls))
        # serve() binds nothing itself (the sockets are ours): wait until it accepts.
        for _ in range(500):
            if all(s.started for s in self._servers) or any(t.done() for t in self._tasks):
                break
            await asyncio.sleep(0.01)
        for t in self._tasks:
            if t.done() and t.exception() is not None:
                raise ConfigError(f"the web server did not start: {t.exception()}", key="web.listen")
        return self.addresses

    async def stop(self) -> None:
        for s in self._servers:
            s.should_exit = True
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._servers.clear()
        self._tasks.clear()
