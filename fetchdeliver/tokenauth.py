"""OAuth 2.0 bearer tokens checked at the issuer (RFC 7662 token introspection), for the servers'
OAUTHBEARER and XOAUTH2 logins: the same check Dovecot's oauth2 passdb makes with `introspection_url`.

`IntrospectingAuthenticator` wraps a server's authenticator (a passwd-file, or a backend plugin with
`account(user)`): passwords and SCRAM still go to it; `validate_token` asks the issuer whether the
token is active and whose it is, and the user's mail comes from the wrapped authenticator.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from fetchdeliver.errors import ConfigError

log = logging.getLogger(__name__)


class IntrospectingAuthenticator:
    """`inner` with `validate_token(user, token)` answered by the issuer's introspection endpoint."""

    def __init__(self, inner: Any, url: str, *, client_id: str | None = None, client_secret: str | None = None,
                 timeout: float = 10.0, table: str = "submission") -> None:
        if not callable(getattr(inner, "account", None)):
            raise ConfigError("oauth2_introspection_url needs the users' mail from passwd_file (or a backend "
                              "with account(user))", key=f"{table}.oauth2_introspection_url")
        self.inner = inner
        self.url = url
        self.client_id = client_id
        self.client_secret = client_secret
        self.timeout = timeout

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def authenticate(self, user: str, password: str):
        return self.inner.authenticate(user, password)

    def validate_token(self, user: str, token: str):
        """The Account of the token's owner when the issuer says it is active (and, when the client
        named a user, that user's); None otherwise. An unreachable issuer refuses the login."""
        answer = self.introspect(token)
        if not answer.get("active"):
            return None
        owner = answer.get("username") or answer.get("sub")
        if not isinstance(owner, str) or not owner or (user and user != owner):
            return None
        return self.inner.account(owner)

    def introspect(self, token: str) -> dict:
        form = {"token": token, "token_type_hint": "access_token"}
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if self.client_id:
            import base64

            pair = f"{urllib.parse.quote(self.client_id)}:{urllib.parse.quote(self.client_secret or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        req = urllib.request.Request(self.url, data=urllib.parse.urlencode(form).encode(), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            log.warning("token introspection at %s failed: HTTP %s", self.url, e.code)
            return {}
        except (urllib.error.URLError, OSError, ValueError) as e:
            log.warning("token introspection at %s failed: %s", self.url, getattr(e, "reason", e))
            return {}
        return data if isinstance(data, dict) else {}
