"""The [web] configuration table.

    [web]
    listen = "127.0.0.1:8025"          # or a list; "" for none
    tls_listen = "0.0.0.0:8443"        # HTTPS (needs cert and key)
    cert = "/etc/ssl/mail.pem"
    key = "/etc/ssl/mail.key"
    allow_insecure = false             # serve plain HTTP on a non-loopback address (you were warned)
    admins = ["alice"]                 # users who see the whole outbound queue (default: every user)
    session_lifetime = "12h"
    login_failure_delay = "1s"         # a failed login's answer waits this, doubled per earlier failure
    login_failure_max_delay = "1m"     # ... up to this (from the same address or for the same user)
    login_failure_rate = "60/1m"       # server-wide password checks for addresses with recent failures
    login_timeout = "60s"              # a connection's first request must begin within this, or it is closed
    max_connections = 1000             # at once (fewer if the open-file limit is lower); then 503
    max_connections_per_ip = 100       # at once from one client address (IPv6: one /64)
"""

from __future__ import annotations

from typing import Any

from fetchdeliver import config, netlimits


def _keys():
    from fetchdeliver.managesieve.settings import addresses

    return {
        "listen": addresses,
        "tls_listen": addresses,
        "cert": config.check_path,
        "key": config.check_path,
        "allow_insecure": config.check_bool,
        "admins": config.check_str_list,
        "session_lifetime": config.check_duration,
        **netlimits.LOGIN_KEYS,         # login_timeout, login_failure_delay, _max_delay, _rate
        **netlimits.CONNECTION_KEYS,    # max_connections, max_connections_per_ip
    }


def _check(table: dict, file: str) -> None:
    from fetchdeliver.errors import ConfigError

    if table.get("tls_listen") and not (table.get("cert") and table.get("key")):
        raise ConfigError("tls_listen needs cert and key", file=file, key="web.tls_listen")
    if bool(table.get("cert")) != bool(table.get("key")):
        raise ConfigError("set both cert and key, or neither", file=file, key="web.cert")


config.register_table("web", _keys(), _check)

DEFAULTS: dict[str, Any] = {
    "listen": ["127.0.0.1:8025"],
    "tls_listen": [],
    "allow_insecure": False,
    "session_lifetime": 12 * 3600,
    "login_failure_delay": 1,
    "login_failure_max_delay": netlimits.DEFAULT_LOGIN_FAILURE_MAX_DELAY,
    "login_failure_rate": "60/1m",
    "login_timeout": netlimits.DEFAULT_LOGIN_TIMEOUT,
    "max_connections_per_ip": netlimits.DEFAULT_MAX_CONNECTIONS_PER_IP,
    # max_connections: absent means 1000, fitted to the open-file limit (netlimits.fit_max_connections)
}
