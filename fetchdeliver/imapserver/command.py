"""`fetchdeliver imap` (run the server) and `fetchdeliver passwd USER` (write a hashed passwd-file entry)."""

from __future__ import annotations

import sys

from fetchdeliver.config import report_config_error
from fetchdeliver.errors import EX_OK, EX_SOFTWARE, EX_USAGE, ConfigError
from fetchdeliver.serversetup import load_config


def _log():
    import logging

    return logging.getLogger("fetchdeliver.imapserver")


def build_config(args, data: dict):
    """ServerConfig from the [imap] table, with command-line flags taking precedence."""
    from fetchdeliver.imapserver.server import ServerConfig
    from fetchdeliver.imapserver.settings import DEFAULTS, _addresses, limit_options
    from fetchdeliver.serversetup import apply_flags, authenticator_for, default_mail, tls_context

    imap = dict(DEFAULTS)
    imap.update(data.get("imap", {}))
    apply_flags(args, imap, _addresses)
    ctx = tls_context(imap, "imap")
    # [imap] is the table the others fall back to, so its own hint names no other table.
    authenticator = authenticator_for(imap, data, "imap", hint="set passwd_file")
    storage = data.get("storage") or {}
    if storage.get("url"):
        # [storage] url: every user's mail is in PostgreSQL (Server.storage_for adds ?mailuser=USER)
        from fetchdeliver.imapserver.server import postgres_location

        mail = postgres_location(storage)
    else:
        mail = default_mail(data)
    cfg = ServerConfig(listen=imap["listen"], tls_listen=imap.get("tls_listen", []), ssl_context=ctx,
                       authenticator=authenticator, default_mail=mail,
                       allow_plaintext_auth=imap["allow_plaintext_auth"],
                       login_failure_delay=float(imap["login_failure_delay"]),
                       idle_timeout=float(imap["idle_timeout"]), max_line=imap["max_line"],
                       max_literal=imap["max_literal"], append_limit=imap.get("append_limit"),
                       literal_plus=imap.get("literal_plus", True), **limit_options(imap))
    if "quota" in data:
        from fetchdeliver.config import Settings

        cfg.quota_settings = Settings(data)
    if "imapsieve" in data:
        from fetchdeliver.imapserver.imapsieve import config_from

        cfg.imapsieve = config_from(data)
    return cfg


def warm_up() -> None:
    """Import what the first session needs before listening: a long-running server pays its imports
    once at start, not in its first client's SELECT (the MDA's lazy imports are for one-shot runs)."""
    import fetchdeliver.imapserver.mime  # noqa: F401
    import fetchdeliver.message  # noqa: F401
    import fetchdeliver.storage.index  # noqa: F401
    import fetchdeliver.storage.maildir  # noqa: F401
    import fetchdeliver.storage.mbox  # noqa: F401

    try:
        import watchdog.observers  # noqa: F401
    except ImportError:
        pass


def main(args) -> int:
    """Run the IMAP server until SIGINT/SIGTERM."""
    import asyncio

    from fetchdeliver.imapserver.server import Server
    from fetchdeliver.serversetup import serve_until_signal

    try:
        data = load_config(getattr(args, "config", None))     # validated with [imap]'s table
        cfg = build_config(args, data)
    except ConfigError as e:
        return report_config_error("fetchdeliver imap", e)

    warm_up()

    try:
        return asyncio.run(serve_until_signal("fetchdeliver imap", lambda: Server(cfg)))
    except KeyboardInterrupt:
        return EX_OK


def passwd_main(args) -> int:
    """Add or change USER in the passwd-file (from -f, else [imap] passwd_file)."""
    import getpass

    from fetchdeliver.imapserver.auth import DEFAULT_SCHEME, set_password

    try:
        path = getattr(args, "file", None)
        if not path:
            data = load_config(getattr(args, "config", None))
            path = data.get("imap", {}).get("passwd_file")
            if not path:
                print("fetchdeliver passwd: no passwd-file: give -f FILE or set [imap] passwd_file",
                      file=sys.stderr)
                return EX_USAGE
        if getattr(args, "stdin", False):
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass(f"New password for {args.user}: ")
            if getpass.getpass("Again: ") != password:
                print("fetchdeliver passwd: the passwords differ; nothing changed", file=sys.stderr)
                return EX_USAGE
        if not password:
            print("fetchdeliver passwd: empty password refused", file=sys.stderr)
            return EX_USAGE
        set_password(path, args.user, password, getattr(args, "scheme", None) or DEFAULT_SCHEME)
    except ConfigError as e:
        return report_config_error("fetchdeliver passwd", e)
    except OSError as e:
        print(f"fetchdeliver passwd: {e.filename}: {e.strerror}", file=sys.stderr)
        return EX_SOFTWARE
    print(f"fetchdeliver passwd: {args.user} written to {path}", file=sys.stderr)
    return EX_OK


def add_arguments(sub) -> None:
    """The argparse sub-commands, for cli.py: `add_arguments(sub)` after `sub = p.add_subparsers(...)`."""
    im = sub.add_parser("imap", help="serve the delivered mail over IMAP")
    im.add_argument("-c", "--config")
    im.add_argument("--listen", action="append", metavar="HOST:PORT",
                    help="plain IMAP (STARTTLS when a cert is given); default 127.0.0.1:1143")
    im.add_argument("--tls-listen", action="append", metavar="HOST:PORT", help="implicit TLS (IMAPS)")
    im.add_argument("--cert", metavar="FILE")
    im.add_argument("--key", metavar="FILE")
    pw = sub.add_parser("passwd", help="add or change a user in the IMAP passwd-file (hashed)")
    pw.add_argument("user", metavar="USER")
    pw.add_argument("-c", "--config")
    pw.add_argument("-f", "--file", metavar="PASSWD_FILE", help="default: [imap] passwd_file")
    pw.add_argument("-s", "--scheme", default=None,
                    help="SHA512-CRYPT (default), SHA256-CRYPT, BLF-CRYPT, ARGON2ID, SCRYPT or SCRAM-SHA-256 "
                         "(Dovecot's format; also allows SASL SCRAM-SHA-256 logins)")
    pw.add_argument("--stdin", action="store_true", help="read the password from stdin (one line)")
