"""The [pop3] configuration table.

    [pop3]
    listen = "127.0.0.1:1110"          # or a list; "" for none
    tls_listen = "0.0.0.0:995"         # implicit TLS (POP3S; needs cert and key)
    cert = "/etc/ssl/mail.pem"         # STLS is offered on `listen` when cert and key are set
    key = "/etc/ssl/mail.key"
    passwd_file = "..."                # default: [imap] passwd_file (the same logins)
    backend = "package.module:factory" # default: [imap] backend (the IMAP login-and-mailbox plugin)
    allow_plaintext_auth = false       # USER/PASS and AUTH PLAIN/LOGIN on non-TLS, non-loopback connections
    login_failure_delay = "2s"         # a failed login's answer waits this, doubled per earlier failure
    login_failure_max_delay = "1m"     # ... up to this (from the same address or for the same user)
    login_failure_rate = "60/1m"       # server-wide password checks for addresses with recent failures
    login_timeout = "60s"              # log in within this after connecting, or -ERR and close
    max_connections = 1000             # at once (fewer if the open-file limit is lower); then -ERR [SYS/TEMP]
    max_connections_per_ip = 100       # at once from one client address (IPv6: one /64)
    idle_timeout = "10m"               # RFC 1939's autologout timer (at least 10 minutes)
    mailbox = "INBOX"                  # the folder a POP3 session sees
    uidl_format = "%08Xu%08Xv"         # Dovecot's pop3_uidl_format: %u UID, %v UIDVALIDITY, %f file name
    mark_seen = true                   # RETRieved messages get \\Seen at QUIT (Dovecot does the same)
    expire = "never"                   # EXPIRE (RFC 2449): "never", or days after which a RETRieved
                                       # message is deleted at QUIT (0: at the QUIT after its RETR)
    login_delay = "0s"                 # LOGIN-DELAY (RFC 2449): minimum time between two logins of a user
"""

from __future__ import annotations

from typing import Any

from fetchdeliver import config, netlimits


addresses = config.listen_addresses   # the name build_config and the tests import



def _uidl_format(v, where):
    from fetchdeliver.pop3server.uidl import check_format

    v = config.check_nonempty_str(v, where)
    check_format(v)
    return v


def _expire(v, where):
    """"never" -> None, else whole days >= 0."""
    if isinstance(v, str) and v.strip().lower() == "never":
        return "never"
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 100000:
        raise ValueError(f"expected \"never\" or a number of days (0 or more), got {v!r}")
    return v


def _mailbox(v, where):
    v = config.check_nonempty_str(v, where)
    if any(ord(c) < 32 for c in v):
        raise ValueError("a mailbox name cannot contain control characters")
    return v


POP3_KEYS = {
    "listen": addresses,
    "tls_listen": addresses,
    "cert": config.check_path,
    "key": config.check_path,
    "passwd_file": config.check_path,
    "backend": config.plugin_ref,
    "allow_plaintext_auth": config.check_bool,
    **netlimits.LOGIN_KEYS,             # login_timeout, login_failure_delay, _max_delay, _rate
    **netlimits.CONNECTION_KEYS,        # max_connections, max_connections_per_ip
    "idle_timeout": config.check_duration,
    "mailbox": _mailbox,
    "uidl_format": _uidl_format,
    "mark_seen": config.check_bool,
    "expire": _expire,
    "login_delay": config.check_duration,
}


def _check_pop3(table: dict, file: str) -> None:
    from fetchdeliver.errors import ConfigError

    if table.get("tls_listen") and not (table.get("cert") and table.get("key")):
        raise ConfigError("tls_listen needs cert and key", file=file, key="pop3.tls_listen")
    if bool(table.get("cert")) != bool(table.get("key")):
        raise ConfigError("set both cert and key, or neither", file=file, key="pop3.cert")
    if "idle_timeout" in table and table["idle_timeout"] < 600:
        raise ConfigError("must be at least 10m (RFC 1939's autologout timer)", file=file,
                          key="pop3.idle_timeout")


config.register_table("pop3", POP3_KEYS, _check_pop3)

DEFAULT_UIDL_FORMAT = "%08Xu%08Xv"

DEFAULTS: dict[str, Any] = {
    "listen": ["127.0.0.1:1110"],
    "tls_listen": [],
    "allow_plaintext_auth": False,
    "login_failure_delay": netlimits.DEFAULT_LOGIN_FAILURE_DELAY,
    "login_failure_max_delay": netlimits.DEFAULT_LOGIN_FAILURE_MAX_DELAY,
    "login_failure_rate": "60/1m",
    "login_timeout": netlimits.DEFAULT_LOGIN_TIMEOUT,
    "max_connections_per_ip": netlimits.DEFAULT_MAX_CONNECTIONS_PER_IP,
    # max_connections: absent means 1000, fitted to the open-file limit (netlimits.fit_max_connections)
    "idle_timeout": 600,
    "mailbox": "INBOX",
    "uidl_format": DEFAULT_UIDL_FORMAT,
    "mark_seen": True,
    "expire": "never",
    "login_delay": 0,
}
