"""A tiny OAuth2 authorization server for tests, on 127.0.0.1 with an ephemeral port.

- POST /token: the refresh-token grant (RFC 6749 section 6) -> {"access_token", "expires_in"[, "refresh_token"]}
- POST /introspect: what Dovecot's oauth2 passdb asks (token=...) -> {"active": bool, "username": ...}

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
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(n).decode()).items()}
                if self.path == "/token":
                    status, body = provider._token(form)
                elif self.path == "/introspect":
                    status, body = provider._introspect(form)
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

    def _token(self, form: dict) -> tuple[int, dict]:
        with self.lock:
            self.grants.append(form)
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
