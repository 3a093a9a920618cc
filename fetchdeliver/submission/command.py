"""`fetchdeliver submission`: run the submission server (RFC 6409) and the outbound queue until SIGTERM."""

from __future__ import annotations

import os

from fetchdeliver.config import report_config_error
from fetchdeliver.errors import EX_OK, ConfigError
from fetchdeliver.serversetup import apply_flags, authenticator_for, tls_context


def _load(path: str | None) -> tuple[dict, str | None]:
    from fetchdeliver.config import load_settings

    settings = load_settings(path, required=False, tables=("fetchdeliver.submission.settings",))
    return settings.data, settings.file


def build_config(args, data: dict, file: str | None = None):
    """SubmissionConfig from [submission] (logins from [imap] unless it names its own), flags first."""
    from fetchdeliver.config import Settings
    from fetchdeliver.managesieve.settings import addresses
    from fetchdeliver.submission.server import SubmissionConfig
    from fetchdeliver.submission.settings import DEFAULTS, parse_rate

    t = dict(DEFAULTS)
    t.update(data.get("submission", {}))
    apply_flags(args, t, addresses)
    ctx = tls_context(t, "submission")
    authenticator = authenticator_for(t, data, "submission")
    if t.get("oauth2_introspection_url"):
        from fetchdeliver.tokenauth import IntrospectingAuthenticator

        authenticator = IntrospectingAuthenticator(authenticator, t["oauth2_introspection_url"],
                                                   client_id=t.get("oauth2_client_id"),
                                                   client_secret=t.get("oauth2_client_secret"))
    hostname = t.get("hostname") or (data.get("queue") or {}).get("hostname") or os.uname().nodename
    return SubmissionConfig(settings=Settings(data, file), authenticator=authenticator,
                            listen=t["listen"], tls_listen=t.get("tls_listen", []), ssl_context=ctx,
                            allow_plaintext_auth=t["allow_plaintext_auth"],
                            login_failure_delay=float(t["login_failure_delay"]), aliases=t["aliases"],
                            max_message_size=t["max_message_size"], max_recipients=t["max_recipients"],
                            rate=parse_rate(t["rate_limit"]), save_sent=t["save_sent"],
                            sent_mailbox=t["sent_mailbox"], received_header=t["received_header"],
                            hostname=hostname, timeout=float(t["timeout"]), workers=t["workers"])


def main(args) -> int:
    import asyncio
    import logging

    from fetchdeliver.serversetup import serve_until_signal
    from fetchdeliver.submission.server import Server

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="fetchdeliver submission: %(levelname)s: %(message)s")
    try:
        data, file = _load(getattr(args, "config", None))
        cfg = build_config(args, data, file)
        from fetchdeliver.outbound.queue import OutboundQueue, QueueRunner

        queue = OutboundQueue.from_settings(cfg.settings)
    except ConfigError as e:
        return report_config_error("fetchdeliver submission", e)
    runner = QueueRunner(queue)

    try:
        return asyncio.run(serve_until_signal("fetchdeliver submission", lambda: Server(cfg, queue),
                                              on_started=runner.start))
    except KeyboardInterrupt:
        return EX_OK
    finally:
        runner.stop(timeout=5)


def add_arguments(p) -> None:
    p.add_argument("-c", "--config")
    p.add_argument("--listen", action="append", metavar="HOST:PORT",
                   help="SMTP submission (STARTTLS when a cert is given); default 127.0.0.1:587")
    p.add_argument("--tls-listen", action="append", metavar="HOST:PORT", help="implicit TLS (port 465)")
    p.add_argument("--cert", metavar="FILE")
    p.add_argument("--key", metavar="FILE")
