"""The [web] configuration table.

    [web]
    listen = "127.0.0.1:8025"          # or a list; "" for none
    tls_listen = "0.0.0.0:8443"        # HTTPS (needs cert and key)
    cert = "/etc/ssl/mail.pem"
    key = "/etc/ssl/mail.key"
    allow_insecure = false             # serve plain HTTP on a non-loopback address (you were warned)
    admins = ["alice"]                 # users who see the whole outbound queue (default: every user)
    session_lifetime = "12h"
    login_failure_delay = "1s"
"""

from __future__ import annotations

from fetchdeliver import config


def _keys():
    from fetchdeliver.managesieve.settings import addresses

    return {
        "listen": addresses,
        "tls_listen": addresses,
        "cert": config._path,
        "key": config._path,
        "allow_insecure": config._bool,
        "admins": config._str_list,
        "session_lifetime": config._duration,
        "login_failure_delay": config._duration,
    }


def _check(table: dict, file: str) -> None:
    from fetchdeliver.errors import ConfigError

    if table.get("tls_listen") and not (table.get("cert") and table.get("key")):
        raise ConfigError("tls_listen needs cert and key", file=file, key="web.tls_listen")
    if bool(table.get("cert")) != bool(table.get("key")):
        raise ConfigError("set both cert and key, or neither", file=file, key="web.cert")


config.register_table("web", _keys(), _check)

DEFAULTS = {
    "listen": ["127.0.0.1:8025"],
    "tls_listen": [],
    "allow_insecure": False,
    "session_lifetime": 12 * 3600,
    "login_failure_delay": 1,
}
