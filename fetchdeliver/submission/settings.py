"""The [submission] configuration table.

    [submission]
    listen = "127.0.0.1:587"            # or a list; "" for none. STARTTLS when cert and key are set
    tls_listen = "0.0.0.0:465"          # implicit TLS (needs cert and key)
    cert = "/etc/ssl/mail.pem"
    key = "/etc/ssl/mail.key"
    passwd_file = "..."                 # default: [imap] passwd_file (the same logins)
    backend = "package.module:factory"  # default: [imap] backend
    allow_plaintext_auth = false        # AUTH on non-TLS, non-loopback connections
    oauth2_introspection_url = "https://issuer/introspect"  # OAUTHBEARER/XOAUTH2 tokens checked there (RFC 7662)
    oauth2_client_id = "..."            # ... authenticating as this client (HTTP Basic), with
    oauth2_client_secret = "..."
    login_failure_delay = "2s"          # a failed login answered after this, doubling per failure
    login_failure_max_delay = "60s"     # ... up to this (past it: 454 4.7.0 without a check)
    login_failure_rate = "60/1m"        # password checks for addresses with recent failures
    login_timeout = "60s"               # log in within this after connecting (421 4.4.2)
    max_connections = 1000              # connections at once (421 4.3.2 over it)
    max_connections_per_ip = 100        # ... from one address (an IPv6 /64)
    aliases = { alice = ["postmaster@example.org", "@example.net"] }   # more sender addresses per user
    max_message_size = 36700160         # bytes (SIZE)
    max_recipients = 100                # per message (452 4.5.3 beyond)
    rate_limit = "200/1h"               # messages per user per period ("0" for none)
    save_sent = true                    # a copy into the user's \\Sent mailbox
    sent_mailbox = "Sent"               # when no mailbox is marked \\Sent
    received_header = true              # add a Received: line with the client's address
    hostname = "mail.example.org"       # our name in the greeting, Received: and Message-IDs
    timeout = "5m"                      # idle timeout of a session
    workers = 4                         # threads that queue and deliver accepted mail
"""

from __future__ import annotations

from typing import Any

from fetchdeliver import config, netlimits
_addresses = config.listen_addresses



def _aliases(v, where):
    if not isinstance(v, dict):
        raise ValueError(f"expected a table {{ user = [\"address\", \"@domain\"] }}, got {v!r}")
    out = {}
    for user, addrs in v.items():
        items = [addrs] if isinstance(addrs, str) else addrs
        if not isinstance(items, list) or not all(isinstance(a, str) for a in items):
            raise ValueError(f"{user}: expected a list of addresses, got {addrs!r}")
        clean = []
        for a in items:
            a = a.strip().strip("<>").lower()
            if not a or any(c.isspace() for c in a) or a.count("@") != 1:
                raise ValueError(f"{user}: not an address or @domain: {a!r}")
            clean.append(a)
        out[user] = clean
    return out


def parse_rate(text: str) -> tuple[int, int]:
    """'200/1h' -> (200, 3600); '0' -> (0, 0) (no limit)."""
    s = str(text).strip()
    if s in ("0", ""):
        return 0, 0
    count, sep, period = s.partition("/")
    if not sep or not count.strip().isdigit():
        raise ValueError(f"expected MESSAGES/PERIOD such as \"200/1h\", or \"0\" for no limit, got {text!r}")
    seconds = config.parse_duration(period)
    if seconds <= 0:
        raise ValueError(f"the period must be positive, got {period!r}")
    return int(count), seconds


def _rate(v, where):
    if isinstance(v, int) and not isinstance(v, bool) and v == 0:
        return "0"
    v = config.check_str(v, where)
    parse_rate(v)
    return v


def _keys():
    return {
        "listen": _addresses,
        "tls_listen": _addresses,
        "cert": config.check_path,
        "key": config.check_path,
        "passwd_file": config.check_path,
        "backend": config.plugin_ref,
        "allow_plaintext_auth": config.check_bool,
        "oauth2_introspection_url": config.check_nonempty_str,
        "oauth2_client_id": config.check_nonempty_str,
        "oauth2_client_secret": config.check_str,
        **netlimits.LOGIN_KEYS,             # login_timeout, login_failure_delay, _max_delay, _rate ([imap]'s)
        **netlimits.CONNECTION_KEYS,        # max_connections, max_connections_per_ip
        "aliases": _aliases,
        "max_message_size": config.check_int(lo=1024, hi=1 << 31),
        "max_recipients": config.check_int(lo=1, hi=100000),
        "rate_limit": _rate,
        "save_sent": config.check_bool,
        "sent_mailbox": config.check_nonempty_str,
        "received_header": config.check_bool,
        "hostname": config.check_nonempty_str,
        "timeout": config.check_duration,
        "workers": config.check_int(lo=1, hi=64),
    }


def _check(table: dict, file: str) -> None:
    from fetchdeliver.errors import ConfigError

    if table.get("tls_listen") and not (table.get("cert") and table.get("key")):
        raise ConfigError("tls_listen needs cert and key", file=file, key="submission.tls_listen")
    if bool(table.get("cert")) != bool(table.get("key")):
        raise ConfigError("set both cert and key, or neither", file=file, key="submission.cert")
    url = table.get("oauth2_introspection_url")
    if url is not None and not url.startswith(("https://", "http://")):
        raise ConfigError(f"expected an http(s) URL, got {url!r}", file=file, key="submission.oauth2_introspection_url")
    for k in ("oauth2_client_id", "oauth2_client_secret"):
        if k in table and url is None:
            raise ConfigError("only used with oauth2_introspection_url", file=file, key=f"submission.{k}")


config.register_table("submission", _keys(), _check)

DEFAULTS: dict[str, Any] = {
    "listen": ["127.0.0.1:587"],
    "tls_listen": [],
    "allow_plaintext_auth": False,
    "login_failure_delay": 2,
    "aliases": {},
    "max_message_size": 35 * 1024 * 1024,
    "max_recipients": 100,
    "rate_limit": "200/1h",
    "save_sent": True,
    "sent_mailbox": "Sent",
    "received_header": True,
    "timeout": 300,
    "workers": 4,
}
