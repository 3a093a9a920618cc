"""The [filter] configuration table: the content filters run before Sieve.

    [filter]
    rspamd = "http://127.0.0.1:11333"   # rspamd's normal worker (HTTP /checkv2)
    spamd = "127.0.0.1:783"             # SpamAssassin's spamd (HOST:PORT or a Unix socket path)
    clamd = "/run/clamav/clamd.ctl"     # clamd (a Unix socket path or HOST:PORT)
    timeout = "30s"                     # per scanner: connect, send and read the verdict
    on_failure = "tempfail"             # or "deliver": unfiltered, with an X-Fetchdeliver-Filter header
    max_size = "10M"                    # larger messages are not sent to the scanners (header says so)
    spamd_user = "..."                  # spamd's User: header (whose preferences it uses)

Setting rspamd and spamd together is an error: both would write the X-Spam-* headers.
"""

from __future__ import annotations

from fetchdeliver import config
from fetchdeliver.errors import ConfigError


def _url(v, where):
    v = config.check_nonempty_str(v, where).strip()
    from urllib.parse import urlsplit

    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL such as \"http://127.0.0.1:11333\", got {v!r}")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"bad port in {v!r}") from None
    return v


def _endpoint(v, where):
    """ "HOST:PORT" or an absolute Unix socket path."""
    v = config.check_nonempty_str(v, where).strip()
    if "\0" in v:
        raise ValueError("a path cannot contain a NUL byte")
    if v.startswith("/") or v.startswith("~"):
        return config.check_path(v, where)
    host, sep, port = v.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected \"HOST:PORT\" or an absolute socket path, got {v!r}")
    return v


KEYS = {
    "rspamd": _url,
    "spamd": _endpoint,
    "clamd": _endpoint,
    "timeout": config.check_duration,
    "on_failure": config.check_choice("tempfail", "deliver"),
    "max_size": config.check_size,
    "spamd_user": config.check_nonempty_str,
}


def _check(table: dict, file: str) -> None:
    if "rspamd" in table and "spamd" in table:
        raise ConfigError("set either rspamd or spamd, not both (both would write the X-Spam-* headers)",
                          file=file, key="filter.spamd")
    if table.get("timeout") == 0:
        raise ConfigError("must be more than 0 (a filter that never answers would hold the message "
                          "forever)", file=file, key="filter.timeout")


config.register_table("filter", KEYS, _check)
