"""Running `fetchdeliver web` / the daemon's [web] listener in tests, and a small cookie-keeping HTTP client."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def env() -> dict:
    return dict(os.environ, PYTHONPATH=REPO)


def passwd(tmp_path, users: dict[str, str]) -> str:
    """A Dovecot-style passwd-file; each user's home is tmp_path/home/USER (created)."""
    path = tmp_path / "passwd"
    lines = []
    for user, pw in users.items():
        home = tmp_path / "home" / user
        home.mkdir(parents=True, exist_ok=True)
        lines.append(f"{user}:{{PLAIN}}{pw}::::{home}::\n")
    path.write_text("".join(lines))
    return str(path)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Client:
    """HTTP/1.1 client with a cookie jar that never follows redirects (tests look at the 303s)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())

    def request(self, method: str, path: str, *, form: dict | None = None, data: bytes | None = None,
                headers: dict | None = None):
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode("utf-8", "replace")

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, form: dict | None = None, **kw):
        return self.request("POST", path, form=form, **kw)

    def post_json(self, path: str, body: dict, token: str | None):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["X-CSRF-Token"] = token
        return self.request("POST", path, data=json.dumps(body).encode(), headers=headers)

    @staticmethod
    def csrf(page: str) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', page)
        assert m, "no CSRF field in the page"
        return m.group(1)

    def login(self, user: str, password: str) -> str:
        status, _h, page = self.get("/login")
        assert status == 200, status
        status, headers, _b = self.post("/login", {"csrf": self.csrf(page), "user": user, "password": password})
        assert status == 303 and headers.get("location") == "/", (status, headers)
        _s, _h, page = self.get("/")
        return self.csrf(page)


class WebProc:
    """`fetchdeliver web -c CONFIG --listen 127.0.0.1:0`, stopped by PID."""

    def __init__(self, config: str, *extra: str) -> None:
        self.p = subprocess.Popen([sys.executable, "-m", "fetchdeliver", "web", "-c", config, *extra],
                                  stderr=subprocess.PIPE, text=True, env=env())
        line = self.p.stderr.readline()
        m = re.search(r"listening on (http://[\d.]+:\d+)/", line)
        if not m:
            rest = self.p.stderr.read() if self.p.poll() is not None else ""
            self.stop()
            raise AssertionError(f"fetchdeliver web did not start: {line}{rest}")
        self.url = m.group(1)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self.p.stderr.close()


def wait_for(cond, timeout: float = 30.0, what: str = "condition", interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
