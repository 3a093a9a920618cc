"""`fetchdeliver managesieve`: run the ManageSieve server (RFC 5804) until SIGINT/SIGTERM."""

from __future__ import annotations

import os
import sys

from fetchdeliver.errors import EX_CONFIG, EX_OK, ConfigError


def _load(path: str | None) -> dict:
    from fetchdeliver import config

    file = path or config.default_config_path()
    if path is None and not os.path.exists(file):
        return {}
    import fetchdeliver.imapserver.settings  # noqa: F401  (registers [imap])
    import fetchdeliver.managesieve.settings  # noqa: F401  (registers [managesieve])

    return config.load(file)


def _ssl_context(cert: str, key: str):
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load certificate {cert} / key {key}: {e}", key="managesieve.cert") from None
    return ctx


def build_config(args, data: dict):
    """ServerConfig from [managesieve] (logins from [imap] unless it names its own), flags first."""
    from fetchdeliver.config import Settings
    from fetchdeliver.managesieve.server import ServerConfig
    from fetchdeliver.managesieve.settings import DEFAULTS, addresses

    ms = dict(DEFAULTS)
    ms.update(data.get("managesieve", {}))
    for opt in ("listen", "tls_listen"):
        if getattr(args, opt, None):
            try:
                ms[opt] = addresses(getattr(args, opt), "command line")
            except ValueError as e:
                raise ConfigError(str(e), key=f"--{opt.replace('_', '-')}") from None
    for opt in ("cert", "key"):
        if getattr(args, opt, None):
            ms[opt] = os.path.abspath(getattr(args, opt))
    ctx = None
    if ms.get("cert") or ms.get("key"):
        if not (ms.get("cert") and ms.get("key")):
            raise ConfigError("give both a certificate and a key (--cert F --key F)", key="managesieve.cert")
        ctx = _ssl_context(ms["cert"], ms["key"])
    if ms.get("tls_listen") and ctx is None:
        raise ConfigError("--tls-listen / tls_listen needs --cert and --key", key="managesieve.tls_listen")
    imap = data.get("imap", {})
    backend = ms.get("backend") or (None if ms.get("passwd_file") else imap.get("backend"))
    passwd_file = ms.get("passwd_file") or imap.get("passwd_file")
    if backend:
        from fetchdeliver.imapserver.plugin import load_backend

        authenticator = load_backend(backend, data)
    elif passwd_file:
        from fetchdeliver.imapserver.auth import PasswdFileAuthenticator

        authenticator = PasswdFileAuthenticator(passwd_file)
        authenticator.users()  # fail now, with the file name, rather than at the first login
    else:
        raise ConfigError("no users: set passwd_file here or in [imap] (create entries with "
                          "`fetchdeliver passwd USER`)", key="managesieve.passwd_file")
    return ServerConfig(listen=ms["listen"], tls_listen=ms.get("tls_listen", []), ssl_context=ctx,
                        authenticator=authenticator, allow_plaintext_auth=ms["allow_plaintext_auth"],
                        login_failure_delay=float(ms["login_failure_delay"]),
                        idle_timeout=float(ms["idle_timeout"]), sieve_dir=ms["sieve_dir"],
                        max_scripts=ms["max_scripts"], max_script_size=ms["max_script_size"],
                        sieve_options=data.get("sieve", {}),
                        compile_cache_dir=os.path.join(Settings(data).cache_dir, "sieve"))


def main(args) -> int:
    import asyncio
    import signal

    from fetchdeliver.managesieve.server import Server

    try:
        cfg = build_config(args, _load(getattr(args, "config", None)))
    except ConfigError as e:
        print(f"fetchdeliver managesieve: {e}", file=sys.stderr)
        return EX_CONFIG

    async def run() -> int:
        server = Server(cfg)
        try:
            addrs = await server.start()
        except ConfigError as e:
            print(f"fetchdeliver managesieve: {e}", file=sys.stderr)
            return EX_CONFIG
        for host, port, tls in addrs:
            print(f"fetchdeliver managesieve: listening on {host}:{port}{' (TLS)' if tls else ''}",
                  file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        serving = asyncio.ensure_future(server.serve_forever())
        await stop.wait()
        serving.cancel()
        await server.stop()
        return EX_OK

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return EX_OK


def add_arguments(p) -> None:
    p.add_argument("-c", "--config")
    p.add_argument("--listen", action="append", metavar="HOST:PORT",
                   help="plain ManageSieve (STARTTLS when a cert is given); default 127.0.0.1:4190")
    p.add_argument("--tls-listen", action="append", metavar="HOST:PORT", help="implicit TLS")
    p.add_argument("--cert", metavar="FILE")
    p.add_argument("--key", metavar="FILE")
