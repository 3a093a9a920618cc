"""The [managesieve] configuration table.

    [managesieve]
    listen = "127.0.0.1:4190"          # or a list; "" for none
    tls_listen = "0.0.0.0:4191"        # implicit TLS (needs cert and key; not in RFC 5804, but handy)
    cert = "/etc/ssl/mail.pem"         # STARTTLS is offered on `listen` when cert and key are set
    key = "/etc/ssl/mail.key"
    passwd_file = "..."                # default: [imap] passwd_file (the same logins)
    backend = "package.module:factory" # default: [imap] backend
    allow_plaintext_auth = false       # PLAIN/LOGIN on non-TLS, non-loopback connections
    login_failure_delay = "2s"         # a failed login's answer waits this, doubled per earlier failure
    login_failure_max_delay = "1m"     # ... up to this (from the same address or for the same user)
    login_failure_rate = "60/1m"       # server-wide password checks for addresses with recent failures
    login_timeout = "60s"              # log in within this after connecting, or BYE
    max_connections = 1000             # at once (fewer if the open-file limit is lower); then BYE
    max_connections_per_ip = 100       # at once from one client address (IPv6: one /64)
    sieve_dir = "~"                    # per-user base: ~ is the passwd-file home, %u user, %n local part,
                                       # %d domain; scripts in BASE/sieve/, the active one BASE/.dovecot.sieve
    max_scripts = 100                  # scripts per user (0: no limit)  -> QUOTA/MAXSCRIPTS
    max_script_size = 1048576          # bytes per script (0: no limit)  -> QUOTA/MAXSIZE
    idle_timeout = "30m"
"""

from __future__ import annotations

from typing import Any

from fetchdeliver import config, netlimits


def _template(v, where):
    v = config.check_nonempty_str(v, where)
    if "\0" in v:
        raise ValueError("a path cannot contain a NUL byte")
    if not (v == "~" or v.startswith("~/") or v.startswith("/")):
        raise ValueError(f"expected an absolute path or one starting with ~ (the user's home), got {v!r}")
    return v


addresses = config.listen_addresses   # the name build_config and the tests import



def _keys():
    return {
        "listen": addresses,
        "tls_listen": addresses,
        "cert": config.check_path,
        "key": config.check_path,
        "passwd_file": config.check_path,
        "backend": config.plugin_ref,
        "allow_plaintext_auth": config.check_bool,
        **netlimits.LOGIN_KEYS,         # login_timeout, login_failure_delay, _max_delay, _rate
        **netlimits.CONNECTION_KEYS,    # max_connections, max_connections_per_ip
        "idle_timeout": config.check_duration,
        "sieve_dir": _template,
        "max_scripts": config.check_int(lo=0, hi=1 << 20),
        "max_script_size": config.check_int(lo=0, hi=1 << 30),
    }


def _check(table: dict, file: str) -> None:
    from fetchdeliver.errors import ConfigError

    if table.get("tls_listen") and not (table.get("cert") and table.get("key")):
        raise ConfigError("tls_listen needs cert and key", file=file, key="managesieve.tls_listen")
    if bool(table.get("cert")) != bool(table.get("key")):
        raise ConfigError("set both cert and key, or neither", file=file, key="managesieve.cert")


config.register_table("managesieve", _keys(), _check)

DEFAULTS: dict[str, Any] = {
    "listen": ["127.0.0.1:4190"],
    "tls_listen": [],
    "allow_plaintext_auth": False,
    "login_failure_delay": netlimits.DEFAULT_LOGIN_FAILURE_DELAY,
    "login_failure_max_delay": netlimits.DEFAULT_LOGIN_FAILURE_MAX_DELAY,
    "login_failure_rate": "60/1m",
    "login_timeout": netlimits.DEFAULT_LOGIN_TIMEOUT,
    "max_connections_per_ip": netlimits.DEFAULT_MAX_CONNECTIONS_PER_IP,
    # max_connections: absent means 1000, fitted to the open-file limit (netlimits.fit_max_connections)
    "idle_timeout": 1800,
    "sieve_dir": "~",
    "max_scripts": 100,
    "max_script_size": 1024 * 1024,
}
