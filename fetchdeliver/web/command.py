"""`fetchdeliver web`: serve the web page until SIGINT/SIGTERM (the daemon serves it from [web] too)."""

from __future__ import annotations

import sys

from fetchdeliver.config import report_config_error
from fetchdeliver.errors import EX_OK, ConfigError
from fetchdeliver.netlimits import LimitSettings


class WebConfig(LimitSettings):
    """Everything the app needs: [web] keys, the whole config, and the ManageSieve server object whose
    logins, script stores and compiler the page reuses (it is never started here). Also the connection
    and login limits of netlimits.LimitSettings (max_connections, login_timeout, ...)."""

    def __init__(self, *, listen, tls_listen, cert, key, allow_insecure, admins, session_lifetime,
                 data: dict, config_path: str | None, sieve, **limits) -> None:
        self.set_limits(**limits)
        self.listen = listen
        self.tls_listen = tls_listen
        self.cert = cert
        self.key = key
        self.allow_insecure = allow_insecure
        self.admins = admins
        self.session_lifetime = session_lifetime
        self.data = data
        self.config_path = config_path
        self.sieve = sieve            # fetchdeliver.managesieve.server.Server (not listening)

    @property
    def settings(self):
        from fetchdeliver.config import Settings

        return Settings(self.data, self.config_path)


def load(path: str | None) -> tuple[dict, str]:
    """The config's data and its file name (the default file's when there is none)."""
    from fetchdeliver.config import default_config_path, load_settings

    settings = load_settings(path, required=False, tables=(
        "fetchdeliver.imapserver.settings", "fetchdeliver.managesieve.settings", "fetchdeliver.web.settings"))
    return settings.data, settings.file or path or default_config_path()


def build_web_config(args, data: dict, config_path: str | None = None) -> WebConfig:
    import argparse

    from fetchdeliver.managesieve.command import build_config
    from fetchdeliver.managesieve.server import Server
    from fetchdeliver.managesieve.settings import addresses
    from fetchdeliver.netlimits import limit_options
    from fetchdeliver.serversetup import apply_flags, check_cert_key
    from fetchdeliver.web.settings import DEFAULTS

    web = dict(DEFAULTS)
    web.update(data.get("web", {}))
    apply_flags(args, web, addresses)
    if getattr(args, "allow_insecure", False):
        web["allow_insecure"] = True
    check_cert_key(web, "web")   # the web server loads them itself
    # Logins, script stores and the Sieve compiler are the ManageSieve server's (same passwd-file).
    if not any((data.get(t) or {}).get(k) for t in ("managesieve", "imap") for k in ("passwd_file", "backend")):
        raise ConfigError("the web page logs users in with the IMAP server's passwd-file: set [imap] "
                          "passwd_file (create entries with `fetchdeliver passwd USER`)", key="imap.passwd_file")
    sieve = Server(build_config(argparse.Namespace(), data))
    return WebConfig(listen=web["listen"], tls_listen=web.get("tls_listen", []), cert=web.get("cert"),
                     key=web.get("key"), allow_insecure=web["allow_insecure"], admins=web.get("admins"),
                     session_lifetime=float(web["session_lifetime"]),
                     data=data, config_path=config_path, sieve=sieve, **limit_options(web))


def main(args) -> int:
    import asyncio
    import signal

    from fetchdeliver.web.server import WebServer

    try:
        data, path = load(getattr(args, "config", None))
        cfg = build_web_config(args, data, path)
    except ConfigError as e:
        return report_config_error("fetchdeliver web", e)

    async def run() -> int:
        server = WebServer(cfg)
        try:
            addrs = await server.start()
        except ConfigError as e:
            return report_config_error("fetchdeliver web", e)
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
