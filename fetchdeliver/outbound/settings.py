"""[relay] and [queue]: how outbound mail (redirect, vacation, notify, bounces) leaves.

Importing this module registers both tables with fetchdeliver.config; it
stays light (no smtplib, no dnspython).

    [relay]                       # absent: deliver straight to the recipient's MX hosts
    host = "smtp.example.org"
    port = 587                    # default 587 (starttls), 465 (implicit), 25 (none)
    tls = "starttls"              # "starttls" | "implicit" | "none"
    user = "me@example.org"
    password_command = "pass show mail/smtp"   # or password = "..."
    # or OAuth2 (XOAUTH2 / OAUTHBEARER): the access token of an [[account]]'s grant, or from a command
    oauth2_account = "gmail"      # or oauth2_token_command = "..."
    oauth2_mechanism = "xoauth2"  # "xoauth2" | "oauthbearer"

    [queue]
    retry = ["5m", "10m", "30m", "1h", "2h", "4h"]   # waits between tries; the last one repeats
    delay_notice = "4h"           # tell the sender the mail is late (0: never)
    bounce_after = "5d"           # give up and send a DSN bounce
"""

from __future__ import annotations

import os

from fetchdeliver import config
from fetchdeliver.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.config import Settings

DEFAULT_RETRY = [300, 600, 1800, 3600, 7200, 14400]
DEFAULT_DELAY_NOTICE = 4 * 3600
DEFAULT_BOUNCE_AFTER = 5 * 86400
DEFAULT_PORTS = {"starttls": 587, "implicit": 465, "none": 25}


def _durations(v, where):
    items = v if isinstance(v, list) else [v]
    out = []
    for item in items:
        d = config.check_duration(item, where)
        if d <= 0:
            raise ValueError(f"a retry interval must be positive, got {item!r}")
        out.append(d)
    if not out:
        raise ValueError("give at least one interval, e.g. [\"5m\", \"1h\"]")
    return out


def split_nameserver(item: str) -> tuple[str, int]:
    """'1.2.3.4', '1.2.3.4:5353', '::1' or '[::1]:5353' -> (address, port)."""
    if item.startswith("["):
        host, sep, port = item[1:].partition("]:")
        if not sep or not port.isdigit():
            raise ValueError(f"expected [IPv6]:PORT, got {item!r}")
        return host, int(port)
    if item.count(":") == 1:
        host, port = item.split(":")
        if not port.isdigit():
            raise ValueError(f"expected ADDRESS or ADDRESS:PORT, got {item!r}")
        return host, int(port)
    return item, 53


def _nameservers(v, where):
    out = config.check_str_list(v, where)
    for item in out:
        split_nameserver(item)
    return out


RELAY_KEYS = {
    "host": config.check_host,
    "port": config.check_int(lo=1, hi=65535),
    "tls": config.check_choice("starttls", "implicit", "none"),
    "user": config.check_nonempty_str,
    "password": config.check_str,
    "password_command": config.check_nonempty_str,
    # OAuth2: the token of this [[account]]'s grant (its refresh flow, stored grant or token command) ...
    "oauth2_account": config.check_nonempty_str,
    "oauth2_token_command": config.check_nonempty_str,   # ... or a command printing an access token
    "oauth2_mechanism": config.check_choice("xoauth2", "oauthbearer"),
    "ca_file": config.check_path,          # trust this CA (PEM) instead of the system store
    "helo": config.check_host,
    "timeout": config.check_duration,
}

QUEUE_KEYS = {
    "retry": _durations,
    "delay_notice": config.check_duration,
    "bounce_after": config.check_duration,
    "hostname": config.check_host,         # our name: EHLO, Message-IDs, MAILER-DAEMON@hostname
    "nameservers": _nameservers,      # DNS servers for MX lookups (default: /etc/resolv.conf)
    "mx_port": config.check_int(lo=1, hi=65535),   # the SMTP port of MX hosts (25; tests use others)
    "timeout": config.check_duration,      # per SMTP connection / command
    "interval": config.check_duration,     # how often a running server looks at the queue
}


def _check_relay(t: dict, file: str) -> None:
    if "host" not in t:
        raise ConfigError("missing required key", file=file, key="relay.host")
    secrets = [k for k in ("password", "password_command", "oauth2_account", "oauth2_token_command") if k in t]
    if len(secrets) > 1:
        raise ConfigError(f"set one of password, password_command, oauth2_account, oauth2_token_command "
                          f"(not {' and '.join(secrets)})", file=file, key=f"relay.{secrets[-1]}")
    if ("password" in t or "password_command" in t or "oauth2_token_command" in t) and "user" not in t:
        key = "a password" if "oauth2_token_command" not in t else "an OAuth2 token"
        raise ConfigError(f"{key} needs a user", file=file, key="relay.user")
    if "user" in t and not secrets:
        raise ConfigError("user needs password, password_command, oauth2_account or oauth2_token_command",
                          file=file, key="relay.user")
    if "oauth2_mechanism" in t and "oauth2_account" not in t and "oauth2_token_command" not in t:
        raise ConfigError("only used with oauth2_account or oauth2_token_command", file=file,
                          key="relay.oauth2_mechanism")


def _check_queue(t: dict, file: str) -> None:
    if "bounce_after" in t and t["bounce_after"] <= 0:
        raise ConfigError("must be positive", file=file, key="queue.bounce_after")


def _check_relay_account(doc: dict, file: str) -> None:
    """relay.oauth2_account names an [[account]] with OAuth2 settings."""
    name = (doc.get("relay") or {}).get("oauth2_account")
    if name is None:
        return
    tables = doc.get("account") or []
    table = next((t for t in tables if t.get("name") == name), None)
    if table is None:
        known = ", ".join(repr(t.get("name")) for t in tables) or "none"
        raise ConfigError(f"names no [[account]] (accounts: {known})", file=file, key="relay.oauth2_account")
    if not any(k.startswith("oauth2_") for k in table if k != "oauth2_mechanism"):
        raise ConfigError(f"account {name!r} has no OAuth2 settings (oauth2_provider, the oauth2_token_url/"
                          "oauth2_client_id/oauth2_refresh_token keys or oauth2_token_command)", file=file,
                          key="relay.oauth2_account")


config.register_table("relay", RELAY_KEYS, rule=_check_relay)
config.register_document_rule(_check_relay_account)
config.register_table("queue", QUEUE_KEYS, rule=_check_queue)


class OutboundSettings:
    """[relay] and [queue] with the defaults applied."""

    __slots__ = ("relay", "retry", "delay_notice", "bounce_after", "hostname", "nameservers", "mx_port",
                 "timeout", "interval", "state_dir", "accounts")

    def __init__(self, relay: dict | None = None, queue: dict | None = None, state_dir: str = ".",
                 accounts: list | None = None) -> None:
        q = queue or {}
        self.relay = dict(relay) if relay else None
        if self.relay is not None:
            self.relay.setdefault("tls", "starttls")
            self.relay.setdefault("port", DEFAULT_PORTS[self.relay["tls"]])
        self.retry = list(q.get("retry") or DEFAULT_RETRY)
        self.delay_notice = q.get("delay_notice", DEFAULT_DELAY_NOTICE)
        self.bounce_after = q.get("bounce_after", DEFAULT_BOUNCE_AFTER)
        self.hostname = q.get("hostname") or os.uname().nodename
        self.nameservers = list(q.get("nameservers") or [])
        self.mx_port = q.get("mx_port", 25)
        self.timeout = q.get("timeout", 60)
        self.interval = q.get("interval", 60)
        self.state_dir = state_dir
        self.accounts = list(accounts or [])   # the [[account]] tables (relay.oauth2_account names one)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "OutboundSettings":
        return cls(settings.data.get("relay"), settings.data.get("queue"), settings.state_dir,
                   settings.data.get("account"))

    def retry_delay(self, attempts: int) -> int:
        """Seconds to wait after the `attempts`-th failed try (1-based); the last interval repeats."""
        i = max(0, min(attempts - 1, len(self.retry) - 1))
        return self.retry[i]
