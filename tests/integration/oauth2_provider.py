"""A tiny OAuth2 authorization server for tests, on 127.0.0.1 with an ephemeral port.

- POST /token: the refresh-token grant (RFC 6749 section 6) -> {"access_token", "expires_in"[, "refresh_token"]}
- POST /introspect: what Dovecot's oauth2 passdb asks (token=...) -> {"active": bool, "username": ...}
- POST /device: the device authorization request (RFC 8628 3.1) -> device_code, user_code, verification_uri;
  GET /verify?user_code=...: the user approving on "another device"; POST /token with the device grant
  answers authorization_pending (and slow_down when polled too fast) until then.
- GET /authorize: the authorization endpoint with PKCE (RFC 7636, S256 only): the test user "signs in" at
  once and is redirected to the loopback redirect_uri with code and state; POST /token exchanges the code
  when the code_verifier matches the challenge and redirect_uri is the same.

It records every grant so tests can count refreshes, and can revoke tokens (a token that "expired"
on the server's side before the client's cached expiry).
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


class Provider:
    def __init__(self, *, client_id: str = "fd-client", client_secret: str = "s3cret",
                 refresh_token: str = "refresh-1", user: str = "alice", expires_in: int = 3600,
                 rotate: bool = False) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.valid_refresh = {refresh_token}
        self.user = user
        self.expires_in = expires_in
        self.rotate = rotate
        self.active: dict[str, str] = {}     # access token -> user
        self.grants: list[dict] = []         # every /token request's form
        self.introspections = 0
        self.lock = threading.Lock()
        self.devices: dict[str, dict] = {}   # device_code -> {"user_code", "approved", "last_poll"}
        self.codes: dict[str, dict] = {}     # authorization code -> {"challenge", "redirect_uri", "client_id"}
        self.device_interval = 1
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                from urllib.parse import urlsplit

                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path == "/authorize":
                    status, where, text = provider._authorize(query)
                elif parts.path == "/verify":
                    status, where, text = provider._verify(query)
                else:
                    status, where, text = 404, None, "not found"
                self.send_response(status)
                if where:
                    self.send_header("Location", where)
                data = text.encode()
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(n).decode()).items()}
                if self.path == "/token":
                    status, body = provider._token(form)
                elif self.path == "/introspect":
                    status, body = provider._introspect(form)
                elif self.path == "/device":
                    status, body = provider._device(form)
                else:
                    status, body = 404, {"error": "not_found"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def authorize_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/authorize"

    @property
    def device_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/device"

    @property
    def introspection_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/introspect"

    def start(self) -> "Provider":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def revoke_all(self) -> None:
        with self.lock:
            self.active.clear()

    # -- the first login -------------------------------------------------------------------------
    def _device(self, form: dict) -> tuple[int, dict]:
        with self.lock:
            if form.get("client_id") != self.client_id:
                return 401, {"error": "invalid_client"}
            device_code = "dc-" + os.urandom(8).hex()
            user_code = os.urandom(3).hex().upper()
            self.devices[device_code] = {"user_code": user_code, "approved": False, "last_poll": 0.0}
            return 200, {"device_code": device_code, "user_code": user_code,
                         "verification_uri": f"http://127.0.0.1:{self.port}/verify", "expires_in": 600,
                         "interval": self.device_interval}

    def _verify(self, query: dict) -> tuple[int, str | None, str]:
        with self.lock:
            for d in self.devices.values():
                if d["user_code"] == query.get("user_code"):
                    d["approved"] = True
                    return 200, None, "approved"
        return 400, None, "unknown code"

    def _authorize(self, q: dict) -> tuple[int, str | None, str]:
        from urllib.parse import urlencode, urlsplit

        redirect = q.get("redirect_uri", "")
        if q.get("client_id") != self.client_id:
            return 400, None, "unknown client"
        if urlsplit(redirect).hostname != "127.0.0.1" or q.get("response_type") != "code":
            return 400, None, "only loopback redirects with response_type=code"
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return 400, None, "PKCE with S256 is required"
        code = "ac-" + os.urandom(8).hex()
        with self.lock:
            self.codes[code] = {"challenge": q["code_challenge"], "redirect_uri": redirect,
                                "client_id": q["client_id"], "scope": q.get("scope", "")}
        return 302, redirect + ("&" if "?" in redirect else "?") + urlencode({"code": code, "state": q.get("state", "")}), ""

    def _issue(self) -> dict:
        token = "at-" + os.urandom(8).hex()
        refresh = "rt-" + os.urandom(8).hex()
        self.active[token] = self.user
        self.valid_refresh.add(refresh)
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in, "refresh_token": refresh}

    def _first_grant(self, form: dict) -> tuple[int, dict]:
        import base64
        import hashlib
        import time

        if form.get("client_id") != self.client_id or \
                ("client_secret" in form and form["client_secret"] != self.client_secret):
            return 401, {"error": "invalid_client"}
        if form["grant_type"] == "authorization_code":
            c = self.codes.pop(form.get("code", ""), None)
            if c is None or c["redirect_uri"] != form.get("redirect_uri"):
                return 400, {"error": "invalid_grant", "error_description": "unknown code or redirect_uri"}
            verifier = form.get("code_verifier", "")
            want = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if want != c["challenge"]:
                return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
            return 200, self._issue()
        d = self.devices.get(form.get("device_code", ""))
        if d is None:
            return 400, {"error": "expired_token"}
        now = time.monotonic()
        too_fast = now - d["last_poll"] < self.device_interval * 0.9
        d["last_poll"] = now
        if too_fast:
            return 400, {"error": "slow_down"}
        if not d["approved"]:
            return 400, {"error": "authorization_pending"}
        del self.devices[form["device_code"]]
        return 200, self._issue()

    def _token(self, form: dict) -> tuple[int, dict]:
        with self.lock:
            self.grants.append(form)
            if form.get("grant_type") in ("authorization_code", "urn:ietf:params:oauth:grant-type:device_code"):
                return self._first_grant(form)
            if form.get("grant_type") != "refresh_token":
                return 400, {"error": "unsupported_grant_type"}
            if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
                return 401, {"error": "invalid_client", "error_description": "unknown client"}
            if form.get("refresh_token") not in self.valid_refresh:
                return 400, {"error": "invalid_grant", "error_description": "refresh token revoked"}
            token = "at-" + os.urandom(8).hex()
            self.active[token] = self.user
            body = {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
            if self.rotate:
                new = "rt-" + os.urandom(8).hex()
                self.valid_refresh = {new}
                body["refresh_token"] = new
            return 200, body

    def _introspect(self, form: dict) -> tuple[int, dict]:
        with self.lock:
            self.introspections += 1
            user = self.active.get(form.get("token", ""))
            if user is None:
                return 200, {"active": False}
            return 200, {"active": True, "username": user}
