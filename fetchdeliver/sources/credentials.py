"""Secrets of account sources: passwords, OAuth2 access tokens (commands, the refresh-token flow), SASL strings.

Secrets are never stored in the validated config beyond what the user wrote:
`password_command` and `oauth2_token_command` run at connect time, and the
built-in OAuth2 refresh-token flow caches the access token (mode 0600) in the
state directory until shortly before it expires.
"""

from __future__ import annotations

import os

from fetchdeliver.errors import FetchdeliverError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.sources.accounts import Account


class SecretError(FetchdeliverError):
    """A password or token could not be obtained (command failed, token endpoint refused)."""


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


def run_secret_command(command: str, what: str, timeout: float = 120.0) -> str:
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

    def __init__(self, account: "Account", state_dir: str) -> None:
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
