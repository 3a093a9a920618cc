"""[[account]] entries: their schema, and Account objects with TLS settings and secrets.

Importing this module registers the [[account]] table with fetchdeliver.config.
Secrets are never stored in the validated config beyond what the user wrote:
`password_command` and `oauth2_token_command` run at connect time, and the
built-in OAuth2 refresh-token flow caches the access token (mode 0600) in the
state directory until shortly before it expires.
"""

from __future__ import annotations

import os

from fetchdeliver import config
from fetchdeliver.errors import ConfigError, FetchdeliverError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl

    from fetchdeliver.config import Settings


class SecretError(FetchdeliverError):
    """A password or token could not be obtained (command failed, token endpoint refused)."""


# ---------------------------------------------------------------------------
# Checkers: (value, config file) -> normalised value, or ValueError completing "KEY: ...".

def _name(v, where):
    v = config._nonempty_str(v, where)
    if any(ord(c) < 32 or ord(c) == 127 for c in v) or v != v.strip():
        raise ValueError(f"account names cannot contain control characters or surrounding spaces: {v!r}")
    return v


def _host(v, where):
    v = config._nonempty_str(v, where)
    if any(c.isspace() for c in v) or "/" in v:
        raise ValueError(f"not a host name or address: {v!r}")
    return v


def _pin(v: str) -> str:
    """One pin: a SHA-256 certificate fingerprint (hex, colons allowed) -> 64 lower-case hex digits,
    or an SPKI pin `sha256//BASE64` (as curl's --pinnedpubkey and HPKP write them) -> normalised."""
    import base64
    import binascii

    text = v.strip()
    if text.lower().startswith("sha256//"):
        try:
            raw = base64.b64decode(text[8:].strip(), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError("expected an SPKI pin sha256//BASE64 (the base64 of 32 bytes, e.g. from `openssl "
                             "x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 "
                             f"-binary | base64`), got {v!r}")
        return "sha256//" + base64.b64encode(raw).decode()
    text = text.lower()
    if text.startswith("sha256:"):
        text = text[7:]
    text = text.replace(":", "").replace(" ", "")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("expected a SHA-256 certificate fingerprint: 64 hex digits, colons allowed "
                         f"(e.g. from `openssl x509 -noout -fingerprint -sha256`), or an SPKI pin sha256//BASE64, "
                         f"got {v!r}")
    return text


def _fingerprint(v, where):
    """One pin or a list of them (any may match: list the next certificate before a rotation)."""
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        raise ValueError(f"expected a fingerprint or a non-empty list of them, got {v!r}")
    return [_pin(x) for x in items]


def _after(v, where):
    v = config._str(v, where)
    if v in ("keep", "delete", "mark-seen"):
        return v
    if v.startswith("move:"):
        if not v[5:].strip():
            raise ValueError("move: needs a folder name, e.g. \"move:Archive\"")
        return v
    raise ValueError(f"must be 'keep', 'delete', 'mark-seen' or 'move:FOLDER', got {v!r}")


def _folders(v, where):
    v = config._str_list(v, where)
    if not v:
        raise ValueError("must name at least one folder")
    for f in v:
        if not f.strip():
            raise ValueError("a folder name cannot be empty")
    return v


def _url(v, where):
    v = config._nonempty_str(v, where)
    if not (v.startswith("https://") or v.startswith("http://")):
        raise ValueError(f"expected an http(s) URL, got {v!r}")
    return v


KEYS = {
    "name": _name,
    "protocol": config._choice("imap", "pop3", "jmap"),
    "host": _host,
    "port": config._int(1, 65535),
    "tls": config._choice("implicit", "starttls", "none"),
    "ca_file": config._path,
    "fingerprint": _fingerprint,
    "verify": config._bool,
    "tls_min_version": config._choice("1.2", "1.3"),
    "user": config._nonempty_str,
    "password": config._str,
    "password_command": config._nonempty_str,
    "oauth2_token_command": config._nonempty_str,
    "oauth2_token_url": _url,
    "oauth2_client_id": config._nonempty_str,
    "oauth2_client_secret": config._str,
    "oauth2_refresh_token": config._nonempty_str,
    "oauth2_scope": config._str,
    "oauth2_mechanism": config._choice("xoauth2", "oauthbearer"),
    # `fetchdeliver oauth2 authorize`: a preset or the issuer's URLs; where the refresh token goes.
    "oauth2_provider": config._choice("gmail", "microsoft"),
    "oauth2_authorize_url": _url,
    "oauth2_device_url": _url,
    "oauth2_token_store_command": config._nonempty_str,
    "oauth2_refresh_token_command": config._nonempty_str,
    "folders": _folders,
    "after": _after,
    "initial": config._choice("all", "new-only"),
    "timeout": config._number(lo=1),
    "batch_size": config._int(1, 10000),
    "apop": config._bool,
    # Where this account's mail goes; each defaults to the [delivery] setting.
    "recipient": config._nonempty_str,
    "rules": config._path,
    "default_mailbox": config._nonempty_str,
    "maildir": config._path,
    "mbox": config._path,
    "keep_crlf": config._bool,       # store the wire's CRLF line ends (default: LF, as Maildir/mbox use)
    # `fetchdeliver daemon`: how often to fetch, and whether to hold an IMAP IDLE connection.
    "poll": config._duration,
    "idle": config._bool,
    # Push for `idle = true` accounts: connections held open at once (the fetch pass's included),
    # and whether to use NOTIFY (one connection for every folder) when the server offers it.
    "max_connections": config._int(1, 100),
    "notify": config._bool,
    # JMAP (RFC 8620/8621): the session resource; default https://HOST[:PORT]/.well-known/jmap.
    "session_url": _url,
}

REQUIRED = ("name", "protocol", "host", "user")

OAUTH2_FLOW = ("oauth2_token_url", "oauth2_client_id", "oauth2_refresh_token")
# Keys of a grant obtained with `fetchdeliver oauth2 authorize` (the refresh token is stored, not written here).
OAUTH2_AUTHORIZE = ("oauth2_provider", "oauth2_authorize_url", "oauth2_device_url")

# Providers' endpoints and the scopes mail needs (public documentation of Google and Microsoft identity).
OAUTH2_PRESETS = {
    "gmail": {
        "authorize_url": "https://accounts.google.com/o/oauth2/v2/auth",
        "token_url": "https://oauth2.googleapis.com/token",
        "device_url": "https://oauth2.googleapis.com/device/code",
        "scope": "https://mail.google.com/",
        # Google returns a refresh token only when asked for offline access (again, with prompt=consent).
        "extra": {"access_type": "offline", "prompt": "consent"},
    },
    "microsoft": {
        "authorize_url": "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
        "token_url": "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        "device_url": "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode",
        "scope": "offline_access https://outlook.office.com/IMAP.AccessAsUser.All "
                 "https://outlook.office.com/POP.AccessAsUser.All https://outlook.office.com/SMTP.Send",
        "extra": {},
    },
}


def _label(i: int, acc: dict) -> str:
    return f"account[{i}] ({acc['name']})"


def check_accounts(accounts: list, file: str) -> None:
    """Cross-key rules for [[account]]; raises ConfigError naming the first problem."""
    from fetchdeliver.config import ConfigErrors

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
        tls = acc.get("tls")
        if acc.get("verify") is False and "fingerprint" not in acc:
            err(i, acc, "verify", "verify = false needs a fingerprint pin (otherwise anyone on the way could "
                "pretend to be the server)")
        if tls == "none":
            for key in ("ca_file", "fingerprint", "verify", "tls_min_version"):
                if key in acc:
                    err(i, acc, key, 'has no effect with tls = "none"; remove it or enable TLS')
        after = acc.get("after", "keep")
        if proto == "pop3":
            if after not in ("keep", "delete"):
                err(i, acc, "after", f'POP3 accounts take "keep" or "delete", not {after!r}')
            if "folders" in acc:
                err(i, acc, "folders", "POP3 has no folders; remove this key")
        elif "apop" in acc:
            err(i, acc, "apop", f"APOP is a POP3 login; remove this key from this {proto.upper()} account")
        # JMAP accounts: HTTPS (or plain HTTP with tls = "none"), no STARTTLS; see sources/jmap.py.
        if proto == "jmap" and tls == "starttls":
            err(i, acc, "tls", 'JMAP speaks HTTPS: use tls = "implicit" (the default) or "none" (plain HTTP)')
        if proto != "jmap" and "session_url" in acc:
            err(i, acc, "session_url", "only used by JMAP accounts (protocol = \"jmap\")")
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
        if acc.get("idle") and proto == "pop3":
            err(i, acc, "idle", "IDLE is an IMAP feature (JMAP accounts push with EventSource); remove it from a "
                "POP3 account")
        for k in ("max_connections", "notify"):
            if k in acc and proto != "imap":
                err(i, acc, k, f"only used by IMAP push (idle = true); remove it from a {proto.upper()} account")
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)


config.register_array_table("account", KEYS, required=REQUIRED, rule=check_accounts)


# ---------------------------------------------------------------------------

# Below Gmail's limit of 15 simultaneous IMAP connections per account, leaving room for mail clients.
DEFAULT_MAX_CONNECTIONS = 5

DEFAULT_PORTS = {("imap", "implicit"): 993, ("imap", "starttls"): 143, ("imap", "none"): 143,
                 ("pop3", "implicit"): 995, ("pop3", "starttls"): 110, ("pop3", "none"): 110,
                 ("jmap", "implicit"): 443, ("jmap", "starttls"): 443, ("jmap", "none"): 80}


def _run_secret_command(command: str, what: str, timeout: float = 120.0) -> str:
    """Run a shell command and return the first line of its output (a password or token)."""
    import subprocess

    try:
        r = subprocess.run(command, shell=True, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SecretError(f"{what} `{command}` did not finish within {timeout:.0f}s") from None
    except OSError as e:
        raise SecretError(f"{what} `{command}` could not run: {e.strerror}") from None
    if r.returncode != 0:
        words = r.stderr.decode("utf-8", "replace").strip().splitlines()
        tail = f": {words[-1]}" if words else ""
        raise SecretError(f"{what} `{command}` failed with exit status {r.returncode}{tail}")
    out = r.stdout.decode("utf-8", "replace")
    line = out.split("\n", 1)[0].rstrip("\r")
    if not line:
        raise SecretError(f"{what} `{command}` printed nothing on its first line")
    return line


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
        self.port: int = port or DEFAULT_PORTS[(self.protocol, tls)]
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
        # JMAP hands over the stored message itself (a blob), not a wire rendering: delivered as is.
        self.keep_crlf: bool = bool(t.get("keep_crlf", self.protocol == "jmap"))
        self.recipient: str = t.get("recipient") or self._default_recipient()
        self.oauth2_mechanism: str = t.get("oauth2_mechanism", "xoauth2")
        self.idle: bool = bool(t.get("idle", False))
        self.max_connections: int = int(t.get("max_connections", DEFAULT_MAX_CONNECTIONS))
        self.notify: bool = bool(t.get("notify", True))
        self.session_url: str | None = t.get("session_url")   # JMAP
        self._state_dir = settings.state_dir if settings is not None else config.default_state_dir()
        self._token: str | None = None

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
            return _run_secret_command(t["oauth2_refresh_token_command"], "oauth2_refresh_token_command")
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
            return _run_secret_command(t["password_command"], "password_command")
        raise SecretError("no password configured (this account uses OAuth2)")

    def access_token(self, *, refresh: bool = False) -> str:
        """An OAuth2 access token: from oauth2_token_command, or the cached/refreshed built-in flow.

        `refresh=True` ignores a cached token (used when the server refused it).
        """
        t = self._table
        if "oauth2_token_command" in t:
            return _run_secret_command(t["oauth2_token_command"], "oauth2_token_command")
        if not self.uses_oauth2_flow:
            raise SecretError("no OAuth2 settings for this account")
        return OAuth2Flow(self, self._state_dir).token(force=refresh)

    def oauth2_table(self) -> dict:
        return {k: v for k, v in self._table.items() if k.startswith("oauth2_")}

    # -- TLS ----------------------------------------------------------------------
    def ssl_context(self) -> "ssl.SSLContext":
        """Verifying context: the system CAs, or only ca_file. With pins and no ca_file the pins replace
        CA verification (self-signed servers) unless `verify = true`; pins are checked by `check_peer()`."""
        import ssl

        if self.verify:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if self.tls_min_version == "1.3" else ssl.TLSVersion.TLSv1_2
        return ctx

    def check_peer(self, sock) -> None:
        """Raise TLSPinError unless the server certificate matches one of the pins."""
        if not self.pins:
            return
        import base64
        import hashlib

        der = sock.getpeercert(binary_form=True) or b""
        got = hashlib.sha256(der).hexdigest()
        if got in self.pins:
            return
        try:
            spki = "sha256//" + base64.b64encode(hashlib.sha256(spki_der(der)).digest()).decode()
        except ValueError:
            spki = "(unreadable certificate)"
        if spki in self.pins:
            return
        wanted = ", ".join(p if p.startswith("sha256//") else _colons(p) for p in self.pins)
        raise TLSPinError(f"the server's certificate has SHA-256 fingerprint {_colons(got)} and SPKI pin {spki}; "
                          f"neither is pinned (fingerprint = {wanted})")


def spki_der(cert_der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a DER X.509 certificate (what an SPKI pin hashes).

    Walks the fixed start of TBSCertificate (RFC 5280 4.1): [0] version, serialNumber, signature,
    issuer, validity, subject, subjectPublicKeyInfo. Raises ValueError on anything else.
    """
    def element(pos: int) -> tuple[int, int, int]:
        """(tag, content start, end) of the DER element at `pos`."""
        if pos + 2 > len(cert_der):
            raise ValueError("truncated certificate")
        tag, length = cert_der[pos], cert_der[pos + 1]
        pos += 2
        if length & 0x80:
            n = length & 0x7F
            if not 0 < n <= 4 or pos + n > len(cert_der):
                raise ValueError("bad DER length")
            length = int.from_bytes(cert_der[pos:pos + n], "big")
            pos += n
        if pos + length > len(cert_der):
            raise ValueError("truncated certificate")
        return tag, pos, pos + length

    tag, body, _ = element(0)                 # Certificate
    if tag != 0x30:
        raise ValueError("not a DER certificate")
    tag, pos, _ = element(body)               # TBSCertificate
    if tag != 0x30:
        raise ValueError("not a DER certificate")
    tag, _, end = element(pos)
    if tag == 0xA0:                           # [0] EXPLICIT version
        pos = end
    for _ in range(5):                        # serial, signature, issuer, validity, subject
        _, _, pos = element(pos)
    tag, _, end = element(pos)
    if tag != 0x30:
        raise ValueError("no SubjectPublicKeyInfo where expected")
    return bytes(cert_der[pos:end])


class TLSPinError(FetchdeliverError):
    """The certificate does not match the configured fingerprint."""


def _colons(hexdigest: str) -> str:
    return ":".join(hexdigest[i:i + 2] for i in range(0, len(hexdigest), 2)).upper()


# ---------------------------------------------------------------------------
# SASL strings for OAuth2 (RFC 7628 OAUTHBEARER, Google/Microsoft XOAUTH2).

def xoauth2_string(user: str, token: str) -> bytes:
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer_string(user: str, token: str, host: str = "", port: int = 0) -> bytes:
    parts = [f"n,a={user},"]
    if host:
        parts.append(f"host={host}")
    if port:
        parts.append(f"port={port}")
    parts.append(f"auth=Bearer {token}")
    return ("\x01".join(parts) + "\x01\x01").encode()


class OAuth2Flow:
    """The refresh-token grant (RFC 6749 section 6) with the access token cached until it expires."""

    # Refresh this long before the announced expiry: clocks drift and sessions last a while.
    MARGIN = 120

    def __init__(self, account: Account, state_dir: str) -> None:
        self.account = account
        t = account.oauth2_table()
        self.url = t.get("oauth2_token_url") or account.oauth2_endpoints().get("token_url", "")
        self.client_id = t["oauth2_client_id"]
        self.client_secret = t.get("oauth2_client_secret")
        self.refresh_token = account.refresh_token()
        self.scope = t.get("oauth2_scope")
        import hashlib

        # Keyed by what identifies the grant, so editing the config starts over.
        ident = "\0".join([account.name, self.url, self.client_id, self.refresh_token])
        self.cache_file = os.path.join(state_dir, "oauth2",
                                       hashlib.sha256(ident.encode()).hexdigest()[:24] + ".json")

    def _read_cache(self) -> dict:
        import json

        try:
            with open(self.cache_file, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write_cache(self, data: dict) -> None:
        import json

        os.makedirs(os.path.dirname(self.cache_file), mode=0o700, exist_ok=True)
        tmp = f"{self.cache_file}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.cache_file)

    def token(self, *, force: bool = False, now: float | None = None) -> str:
        import time

        now = time.time() if now is None else now
        cached = self._read_cache()
        if not force and cached.get("access_token") and float(cached.get("expires_at", 0)) > now + self.MARGIN:
            return cached["access_token"]
        # Providers that rotate refresh tokens (Microsoft) hand back a new one: use the newest.
        refresh_token = cached.get("refresh_token") or self.refresh_token
        data = self._request(refresh_token)
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise SecretError(f"the OAuth2 token endpoint {self.url} answered "
                              "without an access_token")
        try:
            expires_in = float(data.get("expires_in", 3600))
        except (TypeError, ValueError):
            expires_in = 3600.0
        new = {"access_token": token, "expires_at": now + expires_in}
        rotated = data.get("refresh_token")
        if isinstance(rotated, str) and rotated:
            new["refresh_token"] = rotated
        elif cached.get("refresh_token"):
            new["refresh_token"] = cached["refresh_token"]
        try:
            self._write_cache(new)
        except OSError:
            pass  # a cache we cannot write costs one refresh per connect, nothing else
        return token

    def _request(self, refresh_token: str) -> dict:
        import json
        import urllib.error
        import urllib.parse
        import urllib.request

        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": self.client_id}
        if self.client_secret:
            form["client_secret"] = self.client_secret
        if self.scope:
            form["scope"] = self.scope
        req = urllib.request.Request(self.url, data=urllib.parse.urlencode(form).encode(),
                                     headers={"Content-Type": "application/x-www-form-urlencoded",
                                              "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.account.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:300]
            try:
                j = json.loads(detail)
                detail = " ".join(str(j.get(k)) for k in ("error", "error_description") if j.get(k)) or detail
            except ValueError:
                pass
            raise SecretError(f"OAuth2 token refresh at {self.url} failed: HTTP {e.code}: "
                              f"{detail.strip()}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise SecretError(f"OAuth2 token endpoint {self.url} unreachable: {reason}") from None
        try:
            data = json.loads(body)
        except ValueError:
            raise SecretError(f"the OAuth2 token endpoint {self.url} did not answer JSON") from None
        if not isinstance(data, dict):
            raise SecretError(f"the OAuth2 token endpoint {self.url} answered {data!r}")
        return data


def from_settings(settings: "Settings") -> list[Account]:
    """Every configured account, in config order."""
    return [Account(t, settings) for t in settings.data.get("account", [])]
