"""`fetchdeliver pop3`: run the POP3 server until SIGINT/SIGTERM."""

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
    import fetchdeliver.pop3server.settings  # noqa: F401  (registers [pop3])

    return config.load(file)


def _ssl_context(cert: str, key: str):
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load certificate {cert} / key {key}: {e}", key="pop3.cert") from None
    return ctx


def default_mail(data: dict) -> str | None:
    """[delivery]'s store as a mail location, for users whose passwd-file entry names none."""
    delivery = data.get("delivery", {})
    if delivery.get("maildir"):
        return "maildir:" + delivery["maildir"]
    if delivery.get("mbox"):
        return "mbox:" + (f"{delivery['mbox_folders']}:INBOX={delivery['mbox']}"
                          if delivery.get("mbox_folders") else delivery["mbox"])
    return None


def build_config(args, data: dict):
    """ServerConfig from [pop3] (logins from [imap] unless it names its own), command-line flags first."""
    from fetchdeliver.pop3server.server import ServerConfig
    from fetchdeliver.pop3server.settings import DEFAULTS, addresses

    pop = dict(DEFAULTS)
    pop.update(data.get("pop3", {}))
    for opt in ("listen", "tls_listen"):
        if getattr(args, opt, None):
            try:
                pop[opt] = addresses(getattr(args, opt), "command line")
            except ValueError as e:
                raise ConfigError(str(e), key=f"--{opt.replace('_', '-')}") from None
    for opt in ("cert", "key"):
        if getattr(args, opt, None):
            pop[opt] = os.path.abspath(getattr(args, opt))
    ctx = None
    if pop.get("cert") or pop.get("key"):
        if not (pop.get("cert") and pop.get("key")):
            raise ConfigError("give both a certificate and a key (--cert F --key F)", key="pop3.cert")
        ctx = _ssl_context(pop["cert"], pop["key"])
    if pop.get("tls_listen") and ctx is None:
        raise ConfigError("--tls-listen / tls_listen needs --cert and --key", key="pop3.tls_listen")
    imap = data.get("imap", {})
    backend = pop.get("backend") or (None if pop.get("passwd_file") else imap.get("backend"))
    passwd_file = pop.get("passwd_file") or imap.get("passwd_file")
    if backend:
        from fetchdeliver.imapserver.plugin import load_backend

        authenticator = load_backend(backend, data)
    elif passwd_file:
        from fetchdeliver.imapserver.auth import PasswdFileAuthenticator

        authenticator = PasswdFileAuthenticator(passwd_file)
        authenticator.users()  # fail now, with the file name, rather than at the first login
    else:
        raise ConfigError("no users: set passwd_file here or in [imap] (create entries with "
                          "`fetchdeliver passwd USER`)", key="pop3.passwd_file")
    expire = pop.get("expire", "never")
    return ServerConfig(listen=pop["listen"], tls_listen=pop.get("tls_listen", []), ssl_context=ctx,
                        authenticator=authenticator, default_mail=default_mail(data),
                        allow_plaintext_auth=pop["allow_plaintext_auth"],
                        login_failure_delay=float(pop["login_failure_delay"]),
                        idle_timeout=float(pop["idle_timeout"]), mailbox=pop["mailbox"],
                        uidl_format=pop["uidl_format"], mark_seen=pop["mark_seen"],
                        expire=None if "expire" not in data.get("pop3", {}) else expire,
                        login_delay=float(pop["login_delay"]))


def warm_up() -> None:
    """Import what the first session needs before listening."""
    import fetchdeliver.storage.index  # noqa: F401
    import fetchdeliver.storage.maildir  # noqa: F401
    import fetchdeliver.storage.mbox  # noqa: F401


def main(args) -> int:
    """Run the POP3 server until SIGINT/SIGTERM."""
    import asyncio
    import signal

    from fetchdeliver.pop3server.server import Server

    try:
        data = _load(getattr(args, "config", None))
        cfg = build_config(args, data)
    except ConfigError as e:
        print(f"fetchdeliver pop3: {e}", file=sys.stderr)
        return EX_CONFIG

    warm_up()

    async def run() -> int:
        server = Server(cfg)
        try:
            addrs = await server.start()
        except ConfigError as e:
            print(f"fetchdeliver pop3: {e}", file=sys.stderr)
            return EX_CONFIG
        for host, port, tls in addrs:
            print(f"fetchdeliver pop3: listening on {host}:{port}{' (TLS)' if tls else ''}",
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
    """The options of `fetchdeliver pop3` (p: its argparse sub-parser)."""
    p.add_argument("-c", "--config")
    p.add_argument("--listen", action="append", metavar="HOST:PORT",
                   help="plain POP3 (STLS when a cert is given); default 127.0.0.1:1110")
    p.add_argument("--tls-listen", action="append", metavar="HOST:PORT", help="implicit TLS (POP3S)")
    p.add_argument("--cert", metavar="FILE")
    p.add_argument("--key", metavar="FILE")
