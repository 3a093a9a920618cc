"""The [imap] configuration table.

    [imap]
    listen = "127.0.0.1:1143"          # or a list; "" for none
    tls_listen = "0.0.0.0:993"         # implicit TLS (needs cert and key)
    cert = "/etc/ssl/mail.pem"
    key = "/etc/ssl/mail.key"          # STARTTLS is offered on `listen` when both are set
    passwd_file = "~/.config/fetchdeliver/imap.passwd"
    allow_plaintext_auth = false       # LOGIN/PLAIN on non-TLS, non-loopback connections
    login_failure_delay = "2s"         # a failed login's answer waits this, doubled per earlier failure
    login_failure_max_delay = "1m"     # ... up to this (from the same address or for the same user)
    login_failure_rate = "60/1m"       # server-wide password checks for addresses with recent failures
    login_timeout = "60s"              # log in within this after connecting, or BYE
    idle_timeout = "30m"               # an idle session is dropped after this (IDLE: 3x longer)
    max_connections = 1000             # at once (fewer if the open-file limit is lower); then BYE
    max_connections_per_ip = 100       # at once from one client address (IPv6: one /64)
    max_line = 65536                   # bytes in one command line
    max_literal = 67108864             # bytes in one literal
    append_limit = 67108864            # bytes in one APPENDed message (APPENDLIMIT); default: max_literal
    literal_plus = true                # false: LITERAL- ({n+} literals up to 4096 bytes) instead of LITERAL+
    backend = "package.module:factory" # a plugin Authenticator (see docs in imapserver/plugin.py)
"""

from __future__ import annotations

from fetchdeliver import config, netlimits


def _address(v, where):
    v = config._str(v, where).strip()
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port
        raise ValueError(f"expected HOST:PORT such as \"127.0.0.1:1143\", got {v!r}")
    host = host.strip("[]")
    if not host:
        raise ValueError(f"{v!r} has no host (use 0.0.0.0 or :: for every address)")
    return v


def _addresses(v, where):
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ValueError(f"expected \"HOST:PORT\" or a list of them, got {v!r}")
    return [_address(x, where) for x in items if x.strip()]



IMAP_KEYS = {
    "listen": _addresses,
    "tls_listen": _addresses,
    "cert": config._path,
    "key": config._path,
    "passwd_file": config._path,
    "allow_plaintext_auth": config._bool,
    **netlimits.LOGIN_KEYS,             # login_timeout, login_failure_delay, _max_delay, _rate
    **netlimits.CONNECTION_KEYS,        # max_connections, max_connections_per_ip
    "idle_timeout": config._duration,
    "max_line": config._int(lo=1024, hi=1 << 30),
    "max_literal": config._int(lo=1024, hi=1 << 40),
    "append_limit": config._int(lo=1, hi=1 << 40),
    "literal_plus": config._bool,
    "backend": config.plugin_ref,
}


def _check_imap(table: dict, file: str) -> None:
    from fetchdeliver.errors import ConfigError

    if table.get("tls_listen") and not (table.get("cert") and table.get("key")):
        raise ConfigError("tls_listen needs cert and key", file=file, key="imap.tls_listen")
    if bool(table.get("cert")) != bool(table.get("key")):
        raise ConfigError("set both cert and key, or neither", file=file, key="imap.cert")


config.register_table("imap", IMAP_KEYS, _check_imap)


def _imapsieve_rules(v, where):
    from fetchdeliver.imapserver.imapsieve import check_rules

    return check_rules(v, where)


# [imapsieve] and [[imapsieve.mailbox]] (RFC 6785, as Pigeonhole's imapsieve_*): imapserver/imapsieve.py
IMAPSIEVE_KEYS = {
    "mailbox": _imapsieve_rules,             # [[imapsieve.mailbox]]: name, causes, before, after, from
    "expunge_discarded": config._bool,       # imapsieve_expunge_discarded
    "url": config.check_nonempty_str,        # imapsieve_url: advertised as IMAPSIEVE=<url>
    "user_script_dir": config._path,         # where METADATA /shared/imapsieve/script names a script
}
config.register_table("imapsieve", IMAPSIEVE_KEYS)

DEFAULTS = {
    "listen": ["127.0.0.1:1143"],
    "tls_listen": [],
    "allow_plaintext_auth": False,
    "login_failure_delay": netlimits.DEFAULT_LOGIN_FAILURE_DELAY,
    "login_failure_max_delay": netlimits.DEFAULT_LOGIN_FAILURE_MAX_DELAY,
    "login_failure_rate": "60/1m",
    "login_timeout": netlimits.DEFAULT_LOGIN_TIMEOUT,
    "max_connections_per_ip": netlimits.DEFAULT_MAX_CONNECTIONS_PER_IP,
    # max_connections: absent means 1000, fitted to the open-file limit (netlimits.fit_max_connections)
    "idle_timeout": 1800,
    "max_line": 65536,
    "max_literal": 64 * 1024 * 1024,
}


def limit_options(imap: dict) -> dict:
    """ServerConfig keyword arguments for the connection and login limits of an [imap] table (defaults applied;
    login_failure_delay is left to the caller)."""
    t = dict(DEFAULTS)
    t.update(imap)
    options = netlimits.limit_options(t)
    del options["login_failure_delay"]
    return options
