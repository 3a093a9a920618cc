"""`fetchdeliver managesieve`: run the ManageSieve server (RFC 5804) until SIGINT/SIGTERM."""

from __future__ import annotations

import os

from fetchdeliver.config import report_config_error
from fetchdeliver.errors import EX_OK, ConfigError
from fetchdeliver.serversetup import load_config, apply_flags, authenticator_for, tls_context



def build_config(args, data: dict):
    """ServerConfig from [managesieve] (logins from [imap] unless it names its own), flags first."""
    from fetchdeliver.config import Settings
    from fetchdeliver.managesieve.server import ServerConfig
    from fetchdeliver.netlimits import limit_options
    from fetchdeliver.managesieve.settings import DEFAULTS, addresses

    ms = dict(DEFAULTS)
    ms.update(data.get("managesieve", {}))
    apply_flags(args, ms, addresses)
    ctx = tls_context(ms, "managesieve")
    authenticator = authenticator_for(ms, data, "managesieve")
    return ServerConfig(listen=ms["listen"], tls_listen=ms.get("tls_listen", []), ssl_context=ctx,
                        authenticator=authenticator, allow_plaintext_auth=ms["allow_plaintext_auth"],
                        idle_timeout=float(ms["idle_timeout"]), sieve_dir=ms["sieve_dir"],
                        max_scripts=ms["max_scripts"], max_script_size=ms["max_script_size"],
                        sieve_options=data.get("sieve", {}),
                        compile_cache_dir=os.path.join(Settings(data).cache_dir, "sieve"),
                        storage_url=(data.get("storage") or {}).get("url"),
                        **limit_options(ms))


def main(args) -> int:
    import asyncio

    from fetchdeliver.managesieve.server import Server
    from fetchdeliver.serversetup import serve_until_signal

    try:
        cfg = build_config(args, load_config(getattr(args, "config", None), "fetchdeliver.managesieve.settings"))
    except ConfigError as e:
        return report_config_error("fetchdeliver managesieve", e)

    try:
        return asyncio.run(serve_until_signal("fetchdeliver managesieve", lambda: Server(cfg)))
    except KeyboardInterrupt:
        return EX_OK


def add_arguments(p) -> None:
    p.add_argument("-c", "--config")
    p.add_argument("--listen", action="append", metavar="HOST:PORT",
                   help="plain ManageSieve (STARTTLS when a cert is given); default 127.0.0.1:4190")
    p.add_argument("--tls-listen", action="append", metavar="HOST:PORT", help="implicit TLS")
    p.add_argument("--cert", metavar="FILE")
    p.add_argument("--key", metavar="FILE")
