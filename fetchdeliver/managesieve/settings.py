"""The [managesieve] configuration table.

    [managesieve]
    listen = "127.0.0.1:4190"          # or a list; "" for none
    tls_listen = "0.0.0.0:4191"        # implicit TLS (needs cert and key; not in RFC 5804, but handy)
    cert = "/etc/ssl/mail.pem"         # STARTTLS is offered on `listen` when cert and key are set
    key = "/etc/ssl/mail.key"
    passwd_file = "..."                # default: [imap] passwd_file (the same logins)
    backend = "package.module:factory" # default: [imap] backend
    allow_plaintext_auth = false       # PLAIN/LOGIN on non-TLS, non-loopback connections
    login_failure_delay = "2s"
    sieve_dir = "~"                    # per-user base: ~ is the passwd-file home, %u user, %n local part,
                                       # %d domain; scripts in BASE/sieve/, the active one BASE/.dovecot.sieve
    max_scripts = 100                  # scripts per user (0: no limit)  -> QUOTA/MAXSCRIPTS
    max_script_size = 1048576          # bytes per script (0: no limit)  -> QUOTA/MAXSIZE
    idle_timeout = "30m"
"""

from __future__ import annotations

from fetchdeliver import config


def _template(v, where):
    v = config._nonempty_str(v, where)
    if "\0" in v:
        raise ValueError("a path cannot contain a NUL byte")
    if not (v == "~" or v.startswith("~/") or v.startswith("/")):
        raise ValueError(f"expected an absolute path or one starting with ~ (the user's home), got {v!r}")
    return v


def addresses(v, where) -> list[str]:
    """ "HOST:PORT" or a list of them ("" entries are dropped) -> the list."""
    from fetchdeliver.recipients import parse_listen

    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ValueError(f"expected \"HOST:PORT\" or a list of them, got {v!r}")
    out = []
    for x in items:
        if x.strip():
            host, _port = parse_listen(x)
            if not x.strip().rpartition(":")[0].strip("[]"):
                raise ValueError(f"{x!r} has no host (use 0.0.0.0 or :: for every address)")
            out.append(x.strip())
    return out


def _plugin(v, where):
    v = config._nonempty_str(v, where)
    mod, sep, attr = v.partition(":")
    if not sep or not mod or not attr:
        raise ValueError(f"expected \"package.module:callable\", got {v!r}")
    return v


def _keys():
    return {
        "listen": addresses,
        "tls_listen": addresses,
        "cert": config._path,
        "key": config._path,
        "passwd_file": config._path,
        "backend": _plugin,
        "allow_plaintext_auth": config._bool,
        "login_failure_delay": config._duration,
        "idle_timeout": config._duration,
        "sieve_dir": _template,
        "max_scripts": config._int(lo=0, hi=1 << 20),
        "max_script_size": config._int(lo=0, hi=1 << 30),
    }


def _check(table: dict, file: str) -> None:
    from fetchdeliver.errors import ConfigError

    if table.get("tls_listen") and not (table.get("cert") and table.get("key")):
        raise ConfigError("tls_listen needs cert and key", file=file, key="managesieve.tls_listen")
    if bool(table.get("cert")) != bool(table.get("key")):
        raise ConfigError("set both cert and key, or neither", file=file, key="managesieve.cert")


config.register_table("managesieve", _keys(), _check)

DEFAULTS = {
    "listen": ["127.0.0.1:4190"],
    "tls_listen": [],
    "allow_plaintext_auth": False,
    "login_failure_delay": 2,
    "idle_timeout": 1800,
    "sieve_dir": "~",
    "max_scripts": 100,
    "max_script_size": 1024 * 1024,
}
