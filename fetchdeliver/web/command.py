"""`fetchdeliver web`: serve the web page until SIGINT/SIGTERM (the daemon serves it from [web] too)."""

from __future__ import annotations

import os
import sys

from fetchdeliver.errors import EX_CONFIG, EX_OK, ConfigError


class WebConfig:
    """Everything the app needs: [web] keys, the whole config, and the ManageSieve server object whose
    logins, script stores and compiler the page reuses (it is never started here)."""

    def __init__(self, *, listen, tls_listen, cert, key, allow_insecure, admins, session_lifetime,
                 login_failure_delay, data: dict, config_path: str | None, sieve) -> None:
        self.listen = listen
        self.tls_listen = tls_listen
        self.cert = cert
        self.key = key
        self.allow_insecure = allow_insecure
        self.admins = admins
        self.session_lifetime = session_lifetime
        self.login_failure_delay = login_failure_delay
        self.data = data
        self.config_path = config_path
        self.sieve = sieve            # fetchdeliver.managesieve.server.Server (not listening)

    @property
    def settings(self):
        from fetchdeliver.config import Settings

        return Settings(self.data, self.config_path)


def load(path: str | None) -> tuple[dict, str]:
    from fetchdeliver import config

    file = path or config.default_config_path()
    import fetchdeliver.imapserver.settings  # noqa: F401  (registers [imap])
    import fetchdeliver.managesieve.settings  # noqa: F401  (registers [managesieve])
    import fetchdeliver.web.settings  # noqa: F401  (registers [web])

    if path is None and not os.path.exists(file):
        return {}, file
    return config.load(file), file


def build_web_config(args, data: dict, config_path: str | None = None) -> WebConfig:
    import argparse

    from fetchdeliver.managesieve.command import build_config
    from fetchdeliver.managesieve.server import Server
    from fetchdeliver.managesieve.settings import addresses
    from fetchdeliver.web.settings import DEFAULTS

    web = dict(DEFAULTS)
    web.update(data.get("web", {}))
    for opt in ("listen", "tls_listen"):
        if getattr(args, opt, None):
            try:
                web[opt] = addresses(getattr(args, opt), "command line")
            except ValueError as e:
                raise ConfigError(str(e), key=f"--{opt.replace('_', '-')}") from None
    for opt in ("cert", "key"):
        if getattr(args, opt, None):
            web[opt] = os.path.abspath(getattr(args, opt))
    if getattr(args, "allow_insecure", False):
        web["allow_insecure"] = True
    if bool(web.get("cert")) != bool(web.get("key")):
        raise ConfigError("give both a certificate and a key (--cert F --key F)", key="web.cert")
    if web.get("tls_listen") and not web.get("cert"):
        raise ConfigError("--tls-listen / tls_listen needs --cert and --key", key="web.tls_listen")
    # Logins, script stores and the Sieve compiler are the ManageSieve server's (same passwd-file).
    if not any((data.get(t) or {}).get(k) for t in ("managesieve", "imap") for k in ("passwd_file", "backend")):
        raise ConfigError("the web page logs users in with the IMAP server's passwd-file: set [imap] "
                          "passwd_file (create entries with `fetchdeliver passwd USER`)", key="imap.passwd_file")
    sieve = Server(build_config(argparse.Namespace(), data))
    return WebConfig(listen=web["listen"], tls_listen=web.get("tls_listen", []), cert=web.get("cert"),
                     key=web.get("key"), allow_insecure=web["allow_insecure"], admins=web.get("admins"),
                     session_lifetime=float(web["session_lifetime"]),
                     login_failure_delay=float(web["login_failure_delay"]), data=data,
                     config_path=config_path, sieve=sieve)


def main(args) -> int:
    import asyncio
    import signal

    from fetchdeliver.web.server import WebServer

    try:
        data, path = load(getattr(args, "config", None))
        cfg = build_web_config(args, data, path)
    except ConfigError as e:
        print(f"fetchdeliver web: {e}", file=sys.stderr)
        return EX_CONFIG

    async def run() -> int:
        server = WebServer(cfg)
        try:
            addrs = await server.start()
        except ConfigError as e:
            print(f"fetchdeliver web: {e}", file=sys.stderr)
            return EX_CONFIG
        for host, port, tls in addrs:
            print(f"fetchdeliver web: listening on {'https' if tls else 'http'}://{host}:{port}/",
                  file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()
        return EX_OK

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return EX_OK


def add_arguments(p) -> None:
    p.add_argument("-c", "--config")
    p.add_argument("--listen", action="append", metavar="HOST:PORT", help="plain HTTP; default 127.0.0.1:8025")
    p.add_argument("--tls-listen", action="append", metavar="HOST:PORT", help="HTTPS (needs --cert and --key)")
    p.add_argument("--cert", metavar="FILE")
    p.add_argument("--key", metavar="FILE")
    p.add_argument("--allow-insecure", action="store_true",
                   help="serve plain HTTP on a non-loopback address (passwords cross the network in clear)")
