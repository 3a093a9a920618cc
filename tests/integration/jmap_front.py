"""A scripted HTTP front for the real Cyrus JMAP server, for the two behaviours Debian's Cyrus lacks.

Everything else (session, API calls, blob downloads, redirects) is passed to Cyrus' httpd unchanged.

- `CyrusPushEventSource`: the JMAP EventSource (RFC 8620 7.3) as a Cyrus httpd built with push
  (WebSockets/Wslay) serves it. Debian's httpd is built without Wslay, so its eventsource endpoint
  answers 204 No Content. Reproduced from Cyrus' own es_push(): every `jmap_pushpoll` the user's
  Email state is read (here: `Email/get` with no ids on the real server); when it changed,
  `event: state` with `id: <modseq>` and `data: {"@type":"StateChange","changed":{ACCOUNT:{"Email":
  STATE}}}`; in between `event: ping` with `data: {"interval":N}` every `ping` seconds.
- `BearerTokenAccess` (Fastmail-like: API tokens / OAuth2 access tokens in `Authorization: Bearer`):
  a Bearer token is checked with the test OAuth2 provider's introspection endpoint, and the request
  is passed on with the user's password (Cyrus' httpd takes Basic only).
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JmapFront:
    def __init__(self, cyrus, *, eventsource: bool = True, introspection_url: str | None = None,
                 pushpoll: float = 0.2) -> None:
        self.cyrus = cyrus
        self.eventsource = eventsource          # CyrusPushEventSource on; off: Debian's 204 passes through
        self.introspection_url = introspection_url   # BearerTokenAccess on
        self.pushpoll = pushpoll
        self.stopping = threading.Event()
        self.generation = 0                      # drop_streams() ends the streams of older generations
        self.streams = 0                         # EventSource connections open now
        self.stream_count = 0                    # ... and ever
        self.bearer_requests = 0
        self.requests: list[str] = []            # "METHOD path" of every request, in order
        self.lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                front._handle(self, "GET")

            def do_POST(self):
                front._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "JmapFront":
        self._thread.start()
        return self

    def drop_streams(self) -> None:
        """End every open EventSource stream (as servers do now and then)."""
        with self.lock:
            self.generation += 1

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    # -- requests --------------------------------------------------------------------------
    def _basic(self, auth: str) -> str | None:
        """The Authorization to send to Cyrus for the client's, None if refused."""
        if auth.startswith("Bearer ") and self.introspection_url:
            token = auth[7:].strip()
            with self.lock:
                self.bearer_requests += 1
            body = urllib.parse.urlencode({"token": token}).encode()
            with urllib.request.urlopen(self.introspection_url, data=body, timeout=10) as r:
                info = json.loads(r.read())
            user = info.get("username") if info.get("active") else None
            if not user or user not in self.cyrus.users:
                return None
            return "Basic " + base64.b64encode(f"{user}:{self.cyrus.users[user]}".encode()).decode()
        if auth.startswith("Basic "):
            return auth
        return None

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        with self.lock:
            self.requests.append(f"{method} {h.path}")
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        auth = self._basic(h.headers.get("Authorization", ""))
        if auth is None:
            self._reply(h, 401, b'{"type":"about:blank","title":"Unauthorized"}', "application/problem+json",
                        extra={"WWW-Authenticate": 'Bearer realm="jmap"'})
            return
        path = h.path
        if self.eventsource and method == "GET" and path.startswith("/jmap/eventsource/"):
            self._eventsource(h, path, auth)
            return
        conn = http.client.HTTPConnection("127.0.0.1", self.cyrus.port("http"), timeout=30)
        try:
            headers = {"Authorization": auth, "Accept-Encoding": "identity"}
            for k in ("Content-Type", "Accept"):
                if h.headers.get(k):
                    headers[k] = h.headers[k]
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            extra = {}
            loc = resp.getheader("Location")
            if loc:
                extra["Location"] = loc.replace(f"127.0.0.1:{self.cyrus.port('http')}", f"127.0.0.1:{self.port}")
            self._reply(h, resp.status, data, resp.getheader("Content-Type"), extra=extra)
        finally:
            conn.close()

    def _reply(self, h, status: int, data: bytes, ctype: str | None, extra: dict | None = None) -> None:
        h.send_response(status)
        if ctype:
            h.send_header("Content-Type", ctype)
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    # -- CyrusPushEventSource --------------------------------------------------------------------
    def _email_state(self, auth: str, account: str) -> str:
        body = json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
                           "methodCalls": [["Email/get", {"accountId": account, "ids": []}, "0"]]}).encode()
        req = urllib.request.Request(f"{self.cyrus.base_url}/jmap/", data=body,
                                     headers={"Authorization": auth, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())["methodResponses"][0][1]["state"]

    def _eventsource(self, h, path: str, auth: str) -> None:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))
        ping = int(query.get("ping") or 0)
        closeafter = query.get("closeafter") == "state"
        account = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        with self.lock:
            self.streams += 1
            self.stream_count += 1
            generation = self.generation
        try:
            last = self._email_state(auth, account)
            next_ping = time.monotonic() + ping if ping else float("inf")
            while not self.stopping.is_set() and self.generation == generation:
                self.stopping.wait(self.pushpoll)
                now_state = self._email_state(auth, account)
                if now_state != last:
                    last = now_state
                    data = json.dumps({"@type": "StateChange", "changed": {account: {"Email": now_state}}})
                    h.wfile.write(f"id: {now_state}\nevent: state\ndata: {data}\n\n".encode())
                    h.wfile.flush()
                    if closeafter:
                        return
                elif time.monotonic() >= next_ping:
                    h.wfile.write(f"event: ping\ndata: {json.dumps({'interval': ping})}\n\n".encode())
                    h.wfile.flush()
                    next_ping = time.monotonic() + ping
        except OSError:
            pass   # the client went away
        finally:
            with self.lock:
                self.streams -= 1
