"""[[account]] entries: their schema, and Account objects with TLS settings and secrets.

Importing this module registers the [[account]] table with fetchdeliver.config.
`protocol` names a registered source kind (sources/registry.py); what a kind can
do (its `after` policies, folders, push, default ports, its own keys) comes from
its SourceKind, so a new source needs no change here. Secrets: sources/credentials.py;
TLS context and pins: sources/tls.py.
"""

from __future__ import annotations

import os

from fetchdeliver import config
from fetchdeliver.errors import ConfigError
from fetchdeliver.sources.credentials import (OAUTH2_AUTHORIZE, OAUTH2_FLOW, OAUTH2_PRESETS, OAuth2Flow, SecretError,
                                              oauthbearer_string, run_secret_command, xoauth2_string)
from fetchdeliver.sources.tls import TLSPinError, check_fingerprint, check_pins, client_context, spki_der

__all__ = ["KEYS", "REQUIRED", "Account", "OAuth2Flow", "SecretError", "TLSPinError", "check_accounts",
           "from_settings", "oauthbearer_string", "spki_der", "xoauth2_string"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl

    from fetchdeliver.config import Settings
    from fetchdeliver.sources.base import SourceKind


# ---------------------------------------------------------------------------
# Checkers: (value, config file) -> normalised value, or ValueError completing "KEY: ...".

def _name(v, where):
    v = config.check_nonempty_str(v, where)
    if any(ord(c) < 32 or ord(c) == 127 for c in v) or v != v.strip():
        raise ValueError(f"account names cannot contain control characters or surrounding spaces: {v!r}")
    return v


def _after(v, where):
    v = config.check_str(v, where)
    if v in ("keep", "delete", "mark-seen"):
        return v
    if v.startswith("move:"):
        if not v[5:].strip():
            raise ValueError("move: needs a folder name, e.g. \"move:Archive\"")
        return v
    raise ValueError(f"must be 'keep', 'delete', 'mark-seen' or 'move:FOLDER', got {v!r}")


def _folders(v, where):
    v = config.check_str_list(v, where)
    if not v:
        raise ValueError("must name at least one folder")
    for f in v:
        if not f.strip():
            raise ValueError("a folder name cannot be empty")
    return v


def _protocol(v, where):
    from fetchdeliver.sources.registry import available, source_kind

    v = config.check_str(v, where)
    if source_kind(v) is None:
        raise ValueError(f"must be one of {', '.join(repr(c) for c in available())}, got {v!r}")
    return v


def _url(v, where):
    v = config.check_nonempty_str(v, where)
    if not (v.startswith("https://") or v.startswith("http://")):
        raise ValueError(f"expected an http(s) URL, got {v!r}")
    return v


KEYS = {
    "name": _name,
    "protocol": _protocol,
    "host": config.check_host,
    "port": config.check_int(1, 65535),
    "tls": config.check_choice("implicit", "starttls", "none"),
    "ca_file": config.check_path,
    "fingerprint": check_fingerprint,
    "verify": config.check_bool,
    "tls_min_version": config.check_choice("1.2", "1.3"),
    "user": config.check_nonempty_str,
    "password": config.check_str,
    "password_command": config.check_nonempty_str,
    "oauth2_token_command": config.check_nonempty_str,
    "oauth2_token_url": _url,
    "oauth2_client_id": config.check_nonempty_str,
    "oauth2_client_secret": config.check_str,
    "oauth2_refresh_token": config.check_nonempty_str,
    "oauth2_scope": config.check_str,
    "oauth2_mechanism": config.check_choice("xoauth2", "oauthbearer"),
    # `fetchdeliver oauth2 authorize`: a preset or the issuer's URLs; where the refresh token goes.
    "oauth2_provider": config.check_choice("gmail", "microsoft"),
    "oauth2_authorize_url": _url,
    "oauth2_device_url": _url,
    "oauth2_token_store_command": config.check_nonempty_str,
    "oauth2_refresh_token_command": config.check_nonempty_str,
    "folders": _folders,
    "after": _after,
    "initial": config.check_choice("all", "new-only"),
    "timeout": config.check_number(lo=1),
    "batch_size": config.check_int(1, 10000),
    "apop": config.check_bool,
    # Where this account's mail goes; each defaults to the [delivery] setting.
    "recipient": config.check_nonempty_str,
    "rules": config.check_path,
    "default_mailbox": config.check_nonempty_str,
    "maildir": config.check_path,
    "mbox": config.check_path,
    "keep_crlf": config.check_bool,       # store the wire's CRLF line ends (default: LF, as Maildir/mbox use)
    # `fetchdeliver daemon`: how often to fetch, and whether to hold an IMAP IDLE connection.
    "poll": config.check_duration,
    "idle": config.check_bool,
    # Push for `idle = true` accounts: connections held open at once (the fetch pass's included),
    # and whether to use NOTIFY (one connection for every folder) when the server offers it.
    "max_connections": config.check_int(1, 100),
    "notify": config.check_bool,
    # JMAP (RFC 8620/8621): the session resource; default https://HOST[:PORT]/.well-known/jmap.
    "session_url": _url,
}

REQUIRED = ("name", "protocol", "host", "user")

def _label(i: int, acc: dict) -> str:
    return f"account[{i}] ({acc['name']})"


def check_accounts(accounts: list, file: str) -> None:
    """Cross-key rules for [[account]]; raises ConfigError naming the first problem."""
    from fetchdeliver.config import ConfigErrors
    from fetchdeliver.sources.registry import source_kind

    errors: list[ConfigError] = []

    def err(i, acc, key, text):
        errors.append(ConfigError(text, file=file, key=f"{_label(i, acc)}.{key}"))

    seen: dict[str, int] = {}
    for i, acc in enumerate(accounts):
        name = acc["name"]
        if name in seen:
            err(i, acc, "name", f"duplicate account name (also account[{seen[name]}])")
        seen.setdefault(name, i)
        proto = acc["protocol"]
        kind = source_kind(proto)
        word = proto.upper()
        tls = acc.get("tls")
        if acc.get("verify") is False and "fingerprint" not in acc:
            err(i, acc, "verify", "verify = false needs a fingerprint pin (otherwise anyone on the way could "
                "pretend to be the server)")
        if tls == "none":
            for key in ("ca_file", "fingerprint", "verify", "tls_min_version"):
                if key in acc:
                    err(i, acc, key, 'has no effect with tls = "none"; remove it or enable TLS')
        after = acc.get("after", "keep")
        if kind is not None and ("move" if after.startswith("move:") else after) not in kind.after:
            takes = " or ".join(f'"{a}"' if a != "move" else '"move:FOLDER"' for a in kind.after)
            err(i, acc, "after", f'{word} accounts take {takes}, not {after!r}')
        if kind is not None and not kind.folders and "folders" in acc:
            err(i, acc, "folders", f"{word} has no folders; remove this key")
        if "apop" in acc and proto != "pop3":
            err(i, acc, "apop", f"APOP is a POP3 login; remove this key from an {word} account")
        sources = [k for k in ("password", "password_command", "oauth2_token_command") if k in acc]
        flow = [k for k in OAUTH2_FLOW if k in acc]
        authorize = [k for k in OAUTH2_AUTHORIZE if k in acc]
        if authorize:
            # Refresh token from `fetchdeliver oauth2 authorize` (stored), or given/commanded here.
            sources.append("OAuth2 authorization")
            if "oauth2_client_id" not in acc:
                err(i, acc, "oauth2_client_id", "OAuth2 authorization needs your own oauth2_client_id (register "
                    "an app with the provider)")
            if "oauth2_token_url" not in acc and "oauth2_provider" not in acc:
                err(i, acc, "oauth2_token_url", "give the issuer's oauth2_token_url, or oauth2_provider = "
                    '"gmail" / "microsoft"')
            if "oauth2_authorize_url" not in acc and "oauth2_device_url" not in acc and \
                    "oauth2_provider" not in acc:
                err(i, acc, "oauth2_authorize_url", "give oauth2_authorize_url and/or oauth2_device_url")
        elif flow:
            sources.append("oauth2_refresh_token flow")
            missing = [k for k in OAUTH2_FLOW if k not in acc]
            if missing == ["oauth2_refresh_token"] and "oauth2_refresh_token_command" in acc:
                missing = []
            if missing:
                err(i, acc, missing[0], "the OAuth2 refresh-token flow needs " + ", ".join(OAUTH2_FLOW)
                    + f" (missing: {', '.join(missing)})")
        else:
            for k in ("oauth2_client_secret", "oauth2_scope", "oauth2_token_store_command",
                      "oauth2_refresh_token_command"):
                if k in acc:
                    err(i, acc, k, "only used with the OAuth2 refresh-token flow "
                        f"({', '.join(OAUTH2_FLOW)}) or oauth2_provider")
        if "oauth2_refresh_token" in acc and "oauth2_refresh_token_command" in acc:
            err(i, acc, "oauth2_refresh_token_command", "set oauth2_refresh_token or oauth2_refresh_token_command, "
                "not both")
        if not sources:
            err(i, acc, "password", "no secret: set password, password_command, oauth2_token_command "
                "or the oauth2_token_url/oauth2_client_id/oauth2_refresh_token keys")
        elif len(sources) > 1:
            err(i, acc, "password", "more than one secret given (" + ", ".join(sources) + "); keep one")
        flow = flow or authorize
        if "oauth2_mechanism" in acc and not (flow or "oauth2_token_command" in acc):
            err(i, acc, "oauth2_mechanism", "only used with oauth2_token_command or the refresh-token flow")
        if "maildir" in acc and "mbox" in acc:
            err(i, acc, "mbox", "set either maildir or mbox, not both")
        if "poll" in acc and acc["poll"] < 1:
            err(i, acc, "poll", "must be at least 1 second (e.g. \"5m\")")
        push = kind is not None and kind.push
        if acc.get("idle") and not push and not (kind is not None and kind.watcher):
            err(i, acc, "idle", f"IDLE is an IMAP feature; remove it from a {word} account")
        # JMAP accounts: HTTPS (or plain HTTP with tls = "none"), no STARTTLS; see sources/jmap.py.
        if proto == "jmap" and tls == "starttls":
            err(i, acc, "tls", 'JMAP speaks HTTPS: use tls = "implicit" (the default) or "none" (plain HTTP)')
        if proto != "jmap" and "session_url" in acc:
            err(i, acc, "session_url", "only used by JMAP accounts (protocol = \"jmap\")")
        for k in ("max_connections", "notify"):
            if k in acc and not push:
                err(i, acc, k, f"only used by IMAP push (idle = true); remove it from a {word} account")
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)


config.register_array_table("account", KEYS, required=REQUIRED, rule=check_accounts)


# ---------------------------------------------------------------------------

# Below Gmail's limit of 15 simultaneous IMAP connections per account, leaving room for mail clients.
DEFAULT_MAX_CONNECTIONS = 5



class Account:
    """One [[account]] entry with every default applied."""

    __slots__ = ("name", "protocol", "host", "port", "tls", "ca_file", "pins", "verify", "tls_min_version", "user",
                 "folders", "after", "move_to", "initial", "timeout", "batch_size", "apop",
                 "recipient", "rules", "default_mailbox", "maildir", "mbox", "oauth2_mechanism",
                 "keep_crlf", "idle", "max_connections", "notify", "session_url", "_table", "_state_dir", "_token")

    def __init__(self, table: dict, settings: "Settings | None" = None) -> None:
        t = self._table = dict(table)
        self.name: str = t["name"]
        self.protocol: str = t["protocol"]
        self.host: str = t["host"]
        port = t.get("port")
        tls = t.get("tls")
        if tls is None:
            # Ports 143/110 speak plaintext first: upgrade with STARTTLS there, never go plaintext.
            tls = "starttls" if port in (143, 110) else "implicit"
        self.tls: str = tls
        from fetchdeliver.sources.registry import source_kind

        # An unknown kind (a plugin uninstalled since the config was cached) fails at fetch time, per account.
        kind = source_kind(self.protocol)
        self.port: int = port or (kind.default_ports.get(tls, 0) if kind is not None else 0)
        self.ca_file: str | None = t.get("ca_file")
        fp = t.get("fingerprint")
        # Pins: SHA-256 certificate fingerprints (hex) and SPKI pins ("sha256//BASE64"); any may match.
        self.pins: list[str] = [fp] if isinstance(fp, str) else list(fp or [])
        # Chain verification: on unless pins replace it (a self-signed server); `verify = true` does both.
        self.verify: bool = bool(t.get("verify", not self.pins or bool(self.ca_file)))
        self.tls_min_version: str = t.get("tls_min_version", "1.2")
        self.user: str = t["user"]
        self.folders: list[str] = list(t.get("folders") or ["INBOX"])
        after = t.get("after", "keep")
        self.move_to: str | None = None
        if after.startswith("move:"):
            self.move_to = after[5:].strip()
            after = "move"
        self.after: str = after
        self.initial: str = t.get("initial", "all")
        self.timeout: float = float(t.get("timeout", 60))
        self.batch_size: int = int(t.get("batch_size", 100))
        self.apop: bool | None = t.get("apop")
        d = settings.delivery if settings is not None else {}
        self.rules: str | None = t.get("rules", d.get("rules"))
        self.default_mailbox: str = t.get("default_mailbox") or d.get("default_mailbox") or "INBOX"
        self.maildir: str | None = t.get("maildir")
        self.mbox: str | None = t.get("mbox")
        self.keep_crlf: bool = bool(t.get("keep_crlf", kind.keep_crlf if kind is not None else False))
        self.recipient: str = t.get("recipient") or self._default_recipient()
        self.oauth2_mechanism: str = t.get("oauth2_mechanism", "xoauth2")
        self.idle: bool = bool(t.get("idle", False))
        self.max_connections: int = int(t.get("max_connections", DEFAULT_MAX_CONNECTIONS))
        self.notify: bool = bool(t.get("notify", True))
        self.session_url: str | None = t.get("session_url")   # JMAP
        self._state_dir = settings.state_dir if settings is not None else config.default_state_dir()
        self._token: str | None = None

    @property
    def kind(self) -> "SourceKind":
        """The registered kind of source of this account's protocol (sources/registry.py)."""
        from fetchdeliver.sources.registry import source_kind

        kind = source_kind(self.protocol)
        if kind is None:
            raise ConfigError(f"no source is registered for protocol {self.protocol!r}",
                              key=f"account ({self.name}).protocol")
        return kind

    def _default_recipient(self) -> str:
        if "@" in self.user:
            return self.user
        import pwd

        try:
            local = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            local = str(os.getuid())
        return f"{local}@{os.uname().nodename}"

    def __repr__(self) -> str:
        return f"Account({self.name!r}, {self.protocol}://{self.user}@{self.host}:{self.port}, tls={self.tls})"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- secrets ----------------------------------------------------------------
    @property
    def uses_oauth2(self) -> bool:
        t = self._table
        return "oauth2_token_command" in t or self.uses_oauth2_flow

    @property
    def uses_oauth2_flow(self) -> bool:
        """The built-in refresh-token flow (a refresh token in the config, from a command, or stored by
        `fetchdeliver oauth2 authorize`)."""
        t = self._table
        return any(k in t for k in ("oauth2_refresh_token", "oauth2_refresh_token_command", *OAUTH2_AUTHORIZE))

    def oauth2_endpoints(self) -> dict:
        """authorize_url, token_url, device_url, scope, extra: the preset's, overridden by the account's keys."""
        t = self._table
        out = dict(OAUTH2_PRESETS.get(t.get("oauth2_provider", ""), {"extra": {}}))
        for key in ("authorize_url", "token_url", "device_url", "scope"):
            if f"oauth2_{key}" in t:
                out[key] = t[f"oauth2_{key}"]
        return out

    @property
    def refresh_token_file(self) -> str:
        """Where `fetchdeliver oauth2 authorize` stores this account's refresh token (mode 0600)."""
        import hashlib

        return os.path.join(self._state_dir, "oauth2",
                            "refresh-" + hashlib.sha256(self.name.encode()).hexdigest()[:24] + ".json")

    def refresh_token(self) -> str:
        """The refresh token: from the config, oauth2_refresh_token_command, or the stored grant."""
        import json

        t = self._table
        if "oauth2_refresh_token" in t:
            return t["oauth2_refresh_token"]
        if "oauth2_refresh_token_command" in t:
            return run_secret_command(t["oauth2_refresh_token_command"], "oauth2_refresh_token_command")
        try:
            with open(self.refresh_token_file, encoding="utf-8") as f:
                data = json.load(f)
            token = data.get("refresh_token") if isinstance(data, dict) else None
        except FileNotFoundError:
            token = None
        except (OSError, ValueError) as e:
            raise SecretError(f"cannot read the stored OAuth2 grant {self.refresh_token_file}: {e}") from None
        if not token:
            raise SecretError(f"no OAuth2 refresh token for account {self.name!r} yet: run "
                              f"`fetchdeliver oauth2 authorize {self.name}`")
        return token

    def password(self) -> str:
        """The password, running password_command now if that is how it is given."""
        t = self._table
        if "password" in t:
            return t["password"]
        if "password_command" in t:
            return run_secret_command(t["password_command"], "password_command")
        raise SecretError("no password configured (this account uses OAuth2)")

    def access_token(self, *, refresh: bool = False) -> str:
        """An OAuth2 access token: from oauth2_token_command, or the cached/refreshed built-in flow.

        `refresh=True` ignores a cached token (used when the server refused it).
        """
        t = self._table
        if "oauth2_token_command" in t:
            return run_secret_command(t["oauth2_token_command"], "oauth2_token_command")
        if not self.uses_oauth2_flow:
            raise SecretError("no OAuth2 settings for this account")
        return OAuth2Flow(self, self._state_dir).token(force=refresh)

    def oauth2_table(self) -> dict:
        return {k: v for k, v in self._table.items() if k.startswith("oauth2_")}

    # -- TLS ----------------------------------------------------------------------
    def ssl_context(self) -> "ssl.SSLContext":
        """Verifying context: the system CAs, or only ca_file. With pins and no ca_file the pins replace
        CA verification (self-signed servers) unless `verify = true`; pins are checked by `check_peer()`."""
        return client_context(verify=self.verify, ca_file=self.ca_file, min_version=self.tls_min_version)

    def check_peer(self, sock) -> None:
        """Raise TLSPinError unless the server certificate matches one of the pins."""
        check_pins(sock, self.pins)


def from_settings(settings: "Settings") -> list[Account]:
    """Every configured account, in config order."""
    return [Account(t, settings) for t in settings.data.get("account", [])]
