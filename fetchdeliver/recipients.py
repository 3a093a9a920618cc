"""[lmtp] and [[recipient]]: who the LMTP server accepts mail for, and where each one's mail goes.

Importing this module registers both tables with fetchdeliver.config. It stays
light (no asyncio, no aiosmtpd): `config check` imports it on a cache miss.

    [lmtp]
    listen = "127.0.0.1:2424"        # or: socket = "/run/fetchdeliver/lmtp"

    [[recipient]]
    address = "alice@example.org"    # a string or a list of addresses
    maildir = "~alice/Maildir"       # or mbox = "..."; neither: the [delivery] store
    rules = "~alice/rules.sieve"     # optional; without it everything goes to INBOX

With no [[recipient]] at all, every recipient is accepted and delivered to
[delivery] with [delivery] rules.
"""

from __future__ import annotations

import os

from fetchdeliver import config
from fetchdeliver.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.config import Settings

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
DEFAULT_MAX_SESSIONS = 100
DEFAULT_TIMEOUT = 300
DEFAULT_WORKERS = 8


def parse_listen(text: str) -> tuple[str, int]:
    """'HOST:PORT', '[v6]:PORT' or ':PORT' -> (host, port); ValueError with a usable message."""
    s = text.strip()
    if s.startswith("["):
        host, sep, port = s[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [IPv6]:PORT, got {text!r}")
    else:
        host, sep, port = s.rpartition(":")
        if not sep:
            raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:2424), got {text!r}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"the port must be a number from 0 to 65535, got {port!r} in {text!r}")
    return host or "127.0.0.1", int(port)


def _listen(v, where):
    v = config.check_nonempty_str(v, where)
    parse_listen(v)
    return v


def _address(v, where):
    addrs = config.check_str_list(v, where)
    if not addrs:
        raise ValueError("must name at least one address")
    out = []
    for a in addrs:
        a = a.strip().strip("<>")
        if not a or any(c.isspace() for c in a) or a.count("@") > 1:
            raise ValueError(f"not a mail address: {a!r}")
        out.append(a)
    return out


def _delimiter(v, where):
    v = config.check_str(v, where)
    if len(v) != 1 or v.isalnum() or v in "@.":
        raise ValueError(f"must be one punctuation character such as \"+\" or \"-\", got {v!r}")
    return v


def socket_mode(v, where=""):
    """A Unix permission mode: "0660" / "660" (octal text) or an integer (TOML 0o660)."""
    if isinstance(v, str):
        text = v.strip()
        if not text or any(c not in "01234567" for c in text.removeprefix("0o")):
            raise ValueError(f"expected an octal mode such as \"0660\", got {v!r}")
        v = int(text.removeprefix("0o"), 8)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0o7777:
        raise ValueError(f"expected an octal mode such as \"0660\", got {v!r}")
    return v


def _account_name(v, where):
    v = config.check_nonempty_str(v, where) if not isinstance(v, int) or isinstance(v, bool) else str(v)
    if any(c.isspace() or c in ":/" for c in v):
        raise ValueError(f"not a user or group name: {v!r}")
    return v


LMTP_KEYS = {
    "listen": _listen,                         # HOST:PORT
    "socket": config.check_path,                    # a Unix socket path (what Postfix's lmtp:unix: talks to)
    "socket_owner": _account_name,             # user (name or uid) that owns the socket, e.g. "postfix"
    "socket_group": _account_name,             # its group, e.g. "postfix"
    "socket_mode": socket_mode,                # e.g. "0660" (the default)
    "max_message_size": config.check_int(lo=1),     # bytes; advertised as SIZE, larger mail gets 552 5.3.4
    "max_sessions": config.check_int(lo=1, hi=100000),
    "timeout": config.check_duration,               # idle timeout of a session
    "workers": config.check_int(lo=1, hi=256),      # threads that run Sieve + delivery, per process
    "processes": config.check_int(lo=1, hi=64),     # pre-forked processes sharing the listening socket
    "keep_crlf": config.check_bool,                 # store CRLF as received (default: LF, as Dovecot does)
    "recipient_delimiter": _delimiter,         # "+": alice+lists@x is alice@x
    "hostname": config.check_nonempty_str,          # our name in the greeting and Received:
    # max_connections (all processes; default max_sessions x processes), max_connections_per_ip
    # (default: max_connections): more get "421 4.3.2" and are closed (fetchdeliver/netlimits.py)
    "max_connections": config.check_int(lo=1, hi=10_000_000),
    "max_connections_per_ip": config.check_int(lo=1, hi=10_000_000),
}

RECIPIENT_KEYS = {
    "address": _address,
    "maildir": config.check_path,
    "mbox": config.check_path,
    "mbox_folders": config.check_path,
    "rules": config.check_path,
    "default_mailbox": config.check_nonempty_str,
}


def _check_lmtp(table: dict, file: str) -> None:
    if "listen" in table and "socket" in table:
        raise ConfigError("set either listen or socket, not both", file=file, key="lmtp.socket")


def _check_recipients(items: list, file: str) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if "maildir" in item and "mbox" in item:
            raise ConfigError("set either maildir or mbox, not both", file=file, key=f"recipient[{i}].mbox")
        if "mbox_folders" in item and "mbox" not in item:
            raise ConfigError("mbox_folders needs mbox", file=file, key=f"recipient[{i}].mbox_folders")
        for a in item["address"]:
            k = a.lower()
            if k in seen:
                raise ConfigError(f"address {a!r} is also in recipient[{seen[k]}]", file=file,
                                  key=f"recipient[{i}].address")
            seen[k] = i


config.register_table("lmtp", LMTP_KEYS, rule=_check_lmtp)
config.register_array_table("recipient", RECIPIENT_KEYS, required=("address",), rule=_check_recipients)


class Recipient:
    """One local recipient: its addresses and where its mail goes (None: the [delivery] value)."""

    __slots__ = ("addresses", "maildir", "mbox", "mbox_folders", "rules", "default_mailbox")

    def __init__(self, addresses: list[str], maildir: str | None = None, mbox: str | None = None,
                 mbox_folders: str | None = None, rules: str | None = None,
                 default_mailbox: str | None = None) -> None:
        self.addresses = addresses
        self.maildir = maildir
        self.mbox = mbox
        self.mbox_folders = mbox_folders
        self.rules = rules
        self.default_mailbox = default_mailbox

    @property
    def key(self) -> str:
        return self.addresses[0].lower() if self.addresses else "*"

    def __repr__(self) -> str:
        return f"Recipient({self.addresses!r})"


class RecipientMap:
    """Address -> Recipient. `catch_all` (no [[recipient]] tables) accepts every address."""

    def __init__(self, recipients: list[Recipient], delimiter: str | None = None) -> None:
        self.recipients = recipients
        self.delimiter = delimiter
        self.catch_all = Recipient([], ) if not recipients else None
        self._by_addr: dict[str, Recipient] = {}
        self._by_local: dict[str, Recipient] = {}
        for r in recipients:
            for a in r.addresses:
                if "@" in a:
                    self._by_addr[a.lower()] = r
                else:
                    self._by_local[a.lower()] = r

    @classmethod
    def from_settings(cls, settings: "Settings") -> "RecipientMap":
        items = settings.data.get("recipient") or []
        lmtp = settings.data.get("lmtp") or {}
        recips = [Recipient(list(it["address"]), it.get("maildir"), it.get("mbox"), it.get("mbox_folders"),
                            it.get("rules"), it.get("default_mailbox")) for it in items]
        return cls(recips, lmtp.get("recipient_delimiter"))

    def lookup(self, address: str) -> Recipient | None:
        """The recipient `address` belongs to (case-insensitive; +detail stripped), or None."""
        if self.catch_all is not None:
            return self.catch_all
        addr = address.strip().strip("<>").lower()
        found = self._find(addr)
        if found is None and self.delimiter:
            local, at, domain = addr.rpartition("@") if "@" in addr else (addr, "", "")
            base = local.split(self.delimiter, 1)[0]
            if base and base != local:
                found = self._find(f"{base}{at}{domain}")
        return found

    def _find(self, addr: str) -> Recipient | None:
        r = self._by_addr.get(addr)
        if r is None:
            local = addr.rpartition("@")[0] if "@" in addr else addr
            r = self._by_local.get(local)
        return r


def lmtp_options(settings: "Settings") -> dict:
    """[lmtp] with defaults applied."""
    t = dict(settings.data.get("lmtp") or {})
    t.setdefault("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
    t.setdefault("max_sessions", DEFAULT_MAX_SESSIONS)
    t.setdefault("timeout", DEFAULT_TIMEOUT)
    t.setdefault("workers", DEFAULT_WORKERS)
    t.setdefault("keep_crlf", False)
    t.setdefault("hostname", os.uname().nodename)
    return t
