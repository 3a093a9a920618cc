"""`fetchdeliver pop3`: run the POP3 server until SIGINT/SIGTERM."""

from __future__ import annotations


from fetchdeliver.config import report_config_error
from fetchdeliver.errors import EX_OK, ConfigError
from fetchdeliver.serversetup import load_config, apply_flags, authenticator_for, default_mail, tls_context



def build_config(args, data: dict):
    """ServerConfig from [pop3] (logins from [imap] unless it names its own), command-line flags first."""
    from fetchdeliver.pop3server.server import ServerConfig
    from fetchdeliver.netlimits import limit_options
    from fetchdeliver.pop3server.settings import DEFAULTS, addresses

    pop = dict(DEFAULTS)
    pop.update(data.get("pop3", {}))
    apply_flags(args, pop, addresses)
    ctx = tls_context(pop, "pop3")
    authenticator = authenticator_for(pop, data, "pop3")
    expire = pop.get("expire", "never")
    cfg = ServerConfig(listen=pop["listen"], tls_listen=pop.get("tls_listen", []), ssl_context=ctx,
                       authenticator=authenticator, default_mail=default_mail(data),
                       allow_plaintext_auth=pop["allow_plaintext_auth"],
                       idle_timeout=float(pop["idle_timeout"]), mailbox=pop["mailbox"],
                       uidl_format=pop["uidl_format"], mark_seen=pop["mark_seen"],
                       expire=None if "expire" not in data.get("pop3", {}) else expire,
                       login_delay=float(pop["login_delay"]), **limit_options(pop))
    if "quota" in data:
        from fetchdeliver.config import Settings

        cfg.quota_settings = Settings(data)
    return cfg


def warm_up() -> None:
    """Import what the first session needs before listening."""
    import fetchdeliver.storage.index  # noqa: F401
    import fetchdeliver.storage.maildir  # noqa: F401
    import fetchdeliver.storage.mbox  # noqa: F401


def main(args) -> int:
    """Run the POP3 server until SIGINT/SIGTERM."""
    import asyncio

    from fetchdeliver.pop3server.server import Server
    from fetchdeliver.serversetup import serve_until_signal

    try:
        data = load_config(getattr(args, "config", None), "fetchdeliver.pop3server.settings")
        cfg = build_config(args, data)
    except ConfigError as e:
        return report_config_error("fetchdeliver pop3", e)

    warm_up()

    try:
        return asyncio.run(serve_until_signal("fetchdeliver pop3", lambda: Server(cfg)))
    except KeyboardInterrupt:
        return EX_OK


def add_arguments(p) -> None:
    """The options of `fetchdeliver pop3` (p: its argparse sub-parser)."""
    p.add_argument("-c", "--config")
    p.add_argument("--listen", action="append", metavar="HOST:PORT",
                   help="plain POP3 (STLS when a cert is given); default 127.0.0.1:1110")
    p.add_argument("--tls-listen", action="append", metavar="HOST:PORT", help="implicit TLS (POP3S)")
    p.add_argument("--cert", metavar="FILE")
    p.add_argument("--key", metavar="FILE")
