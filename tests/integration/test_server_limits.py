"""POP3, ManageSieve and the web page under hostile load: the per-address connection cap, the pre-login
deadline and the login throttle across connections (the IMAP server's are in test_imap_limits.py).

Every server is real and listens on 127.0.0.1 (other client addresses are other 127.0.0.x sources).
The login throttle runs on the test's own clock, so no assertion depends on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import threading
import time

import pytest

from fetchdeliver import config
from fetchdeliver.errors import ConfigError
from fetchdeliver.netlimits import FailurePolicy, LoginThrottle
from managesieve_support import SieveClient
from pop3_support import make_pop3_server

pytestmark = pytest.mark.timeout(120)


# -- helpers ---------------------------------------------------------------------------------------------

class FakeClock:
    """The throttle's clock and sleep: waits are recorded and pass at once."""

    def __init__(self) -> None:
        self.now = 10_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, d: float) -> None:
        self.slept.append(d)
        self.now += d
        await asyncio.sleep(0)


class CountingAuth:
    """Wraps an authenticator: records each password checked."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.checks: list[tuple[str, str]] = []

    def authenticate(self, user, password):
        self.checks.append((user, password))
        return self.inner.authenticate(user, password)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def fake_throttle() -> tuple[LoginThrottle, FakeClock]:
    """2 s after the first failure, 4 s after the second; one check a minute server-wide for addresses
    with failures (so the third guess from an address is refused unchecked: its turn is > max_delay away)."""
    clock = FakeClock()
    return LoginThrottle(FailurePolicy(base_delay=2, max_delay=8, rate=(1, 60), clock=clock),
                         sleep=clock.sleep), clock


def connect(port: int, source: str = "127.0.0.1", timeout: float = 30):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    return s, s.makefile("rb")


def wait_for(cond, what: str, deadline: float = 60.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def maildir(tmp_path) -> str:
    path = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    (path / "new" / "1.msg").write_bytes(b"From: a@example.org\nSubject: one\n\nbody\n")
    return str(path)


# -- POP3 -------------------------------------------------------------------------------------------------

def greeted(port: int):
    """(socket, file) of a connection greeted +OK, else None (closed)."""
    s, f = connect(port)
    if f.readline().startswith(b"+OK"):
        return s, f
    s.close()
    return None


def pop3_login(f, s, user="alice", password="secret") -> bytes:
    s.sendall(f"USER {user}\r\n".encode())
    assert f.readline().startswith(b"+OK")
    s.sendall(f"PASS {password}\r\n".encode())
    return f.readline()


def test_pop3_per_address_cap_refuses_with_sys_temp_and_gives_places_back(tmp_path):
    srv = make_pop3_server(tmp_path, maildir(tmp_path), max_connections=4, max_connections_per_ip=2)
    port = srv.port()
    held = []
    try:
        for _ in range(2):
            s, f = connect(port)
            assert f.readline().startswith(b"+OK")
            held.append(s)
        s, f = connect(port)
        assert f.readline().startswith(b"-ERR [SYS/TEMP] Too many connections from your address")
        assert f.readline() == b""          # and closed
        s.close()
        for _ in range(2):                  # another address still gets in, up to the overall cap
            s, f = connect(port, "127.0.0.2")
            assert f.readline().startswith(b"+OK")
            held.append(s)
        s, f = connect(port, "127.0.0.3")
        assert f.readline().startswith(b"-ERR [SYS/TEMP] Too many connections to this server")
        s.close()
        held.pop(0).close()                 # a closed connection gives its place back
        s, f = wait_for(lambda: greeted(port), "a free place after a close")
        assert pop3_login(f, s).startswith(b"+OK")
        held.append(s)
    finally:
        for s in held:
            s.close()
        srv.stop()


def test_pop3_login_deadline_drops_unauthenticated_clients_only(tmp_path):
    srv = make_pop3_server(tmp_path, maildir(tmp_path), login_timeout=0.5)
    port = srv.port()
    try:
        authed, af = connect(port)
        assert af.readline().startswith(b"+OK")
        assert pop3_login(af, authed).startswith(b"+OK")
        idle, f = connect(port)
        assert f.readline().startswith(b"+OK")
        assert f.readline().startswith(b"-ERR Login timeout")   # it sent nothing
        assert f.readline() == b""
        idle.close()
        # The session that logged in is past the deadline too, and serves on (idle_timeout is 10 min).
        authed.sendall(b"STAT\r\n")
        assert af.readline().startswith(b"+OK 1 ")
        authed.sendall(b"QUIT\r\n")
        assert af.readline().startswith(b"+OK")
        authed.close()
    finally:
        srv.stop()


def test_pop3_guessing_is_slowed_across_connections_then_refused_unchecked(tmp_path):
    srv = make_pop3_server(tmp_path, maildir(tmp_path))
    throttle, clock = fake_throttle()
    srv.server.throttle = throttle
    auth = srv.server.config.authenticator = CountingAuth(srv.server.config.authenticator)
    port = srv.port()
    try:
        s, f = connect(port)
        f.readline()
        assert pop3_login(f, s, password="w1").startswith(b"-ERR [AUTH]")
        assert pop3_login(f, s, password="w2").startswith(b"-ERR [AUTH]")
        s.close()
        assert clock.slept == [2, 4]        # each failure answered later than the one before
        s, f = connect(port)                 # a new connection does not wash the address
        f.readline()
        answer = pop3_login(f, s, password="secret")
        assert answer.startswith(b"-ERR [SYS/TEMP] Too many failed logins; try again in"), answer
        s.close()
        assert len(auth.checks) == 2 and throttle.throttled == 1   # the third password was not checked
        # A clean address logs in at once.
        s, f = connect(port, "127.0.0.2")
        f.readline()
        assert pop3_login(f, s).startswith(b"+OK")
        s.close()
        assert clock.slept == [2, 4]
    finally:
        srv.stop()


# -- ManageSieve -----------------------------------------------------------------------------------------

def sieve_server(tmp_path, **kw):
    from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password
    from fetchdeliver.managesieve.server import ServerConfig, ThreadedServer

    passwd = str(tmp_path / "sieve.passwd")
    set_password(passwd, "alice", "secret", "SHA256-CRYPT")
    kw.setdefault("login_failure_delay", 0)
    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                       sieve_dir=str(tmp_path / "sieve-%u"), **kw)
    return ThreadedServer(cfg).start()


def sieve_client(port: int, source: str = "127.0.0.1") -> SieveClient:
    c = SieveClient.__new__(SieveClient)
    c.sock = socket.create_connection(("127.0.0.1", port), 30, source_address=(source, 0))
    c.buf = b""
    c.greeting = c.read_reply()
    return c


def test_managesieve_per_address_cap_refuses_with_bye(tmp_path):
    srv = sieve_server(tmp_path, max_connections=10, max_connections_per_ip=2)
    port = srv.port()
    held = []
    try:
        for _ in range(2):
            c = sieve_client(port)
            assert c.greeting.kind == "OK"
            held.append(c)
        s, f = connect(port)
        assert f.readline().startswith(b'BYE "Too many connections from your address')
        assert f.readline() == b""
        s.close()
        c = sieve_client(port, "127.0.0.2")   # another address gets in
        assert c.greeting.kind == "OK" and c.login("alice", "secret").kind == "OK"
        held.append(c)
    finally:
        for c in held:
            c.close()
        srv.stop()


def test_managesieve_login_deadline(tmp_path):
    srv = sieve_server(tmp_path, login_timeout=0.5)
    port = srv.port()
    try:
        authed = sieve_client(port)
        assert authed.login("alice", "secret").kind == "OK"
        idle = sieve_client(port)
        reply = idle.read_reply()           # sent nothing: the deadline ends it
        assert reply.kind == "BYE" and reply.text.startswith(b"Login timeout"), reply
        with pytest.raises(EOFError):
            idle.read_reply()
        idle.close()
        assert authed.cmd(b"LISTSCRIPTS").kind == "OK"    # logged in before: serves on
        authed.close()
    finally:
        srv.stop()


def test_managesieve_guessing_answers_no_trylater_without_checking(tmp_path):
    srv = sieve_server(tmp_path)
    throttle, clock = fake_throttle()
    srv.server.throttle = throttle
    auth = srv.server.config.authenticator = CountingAuth(srv.server.config.authenticator)
    port = srv.port()
    try:
        c = sieve_client(port)
        assert c.login("alice", "w1").kind == "NO"
        assert c.login("alice", "w2").kind == "NO"
        c.close()
        assert clock.slept == [2, 4]
        c = sieve_client(port)
        reply = c.login("alice", "secret")
        assert reply.kind == "NO" and reply.code_name == "TRYLATER", reply
        assert b"Too many failed logins" in reply.text
        c.close()
        assert len(auth.checks) == 2 and throttle.throttled == 1
        c = sieve_client(port, "127.0.0.2")
        assert c.login("alice", "secret").kind == "OK"
        c.close()
    finally:
        srv.stop()


# -- the web page -----------------------------------------------------------------------------------------

class ThreadedWeb:
    """The web server (as `fetchdeliver web` runs it) on its own event loop in a thread."""

    def __init__(self, tmp_path, web_toml: str) -> None:
        from web_support import passwd

        from fetchdeliver.web.command import build_web_config, load
        from fetchdeliver.web.server import WebServer

        pw = passwd(tmp_path, {"alice": "secret"})
        conf = tmp_path / "config.toml"
        conf.write_text(f'[delivery]\nmaildir = "{tmp_path / "Maildir"}"\nstate_dir = "{tmp_path / "state"}"\n\n'
                        f'[imap]\npasswd_file = "{pw}"\n\n[web]\nlisten = "127.0.0.1:0"\n{web_toml}')
        data, path = load(str(conf))
        self.cfg = build_web_config(argparse.Namespace(), data, path)
        self.server = WebServer(self.cfg)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> "ThreadedWeb":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        self.port = self.server.addresses[0][1]
        return self

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(15)


def http_get(port: int, path: str = "/login", source: str = "127.0.0.1") -> bytes:
    s, f = connect(port, source)
    with s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return f.readline()


def test_web_per_address_cap_answers_503_before_any_request(tmp_path):
    web = ThreadedWeb(tmp_path, "max_connections = 10\nmax_connections_per_ip = 2\n").start()
    held = []
    try:
        for _ in range(2):
            held.append(connect(web.port)[0])   # open, nothing sent yet
        s, f = connect(web.port)
        assert f.readline().startswith(b"HTTP/1.1 503")
        rest = f.read()
        assert b"Too many connections from your address (max_connections_per_ip=2)" in rest
        s.close()
        assert http_get(web.port, source="127.0.0.2").startswith(b"HTTP/1.1 200")
        held.pop().close()                      # a place given back is free again
        assert wait_for(lambda: http_get(web.port).startswith(b"HTTP/1.1 200"), "a free place after a close")
    finally:
        for s in held:
            s.close()
        web.stop()


def test_web_connection_without_a_request_is_closed_at_the_login_deadline(tmp_path):
    web = ThreadedWeb(tmp_path, 'login_timeout = 0.5\n').start()
    try:
        s, f = connect(web.port)
        assert f.read() == b""                  # closed without a word: no request ever began
        s.close()
        assert http_get(web.port).startswith(b"HTTP/1.1 200")   # one that asks is answered
        assert web.server.limits.total == 0 or wait_for(lambda: web.server.limits.total == 0, "slots released")
    finally:
        web.stop()


def test_web_login_form_is_throttled_per_address_and_user(tmp_path):
    from web_support import Client

    web = ThreadedWeb(tmp_path, "")
    throttle, clock = fake_throttle()
    web.server.throttle = throttle
    auth = web.cfg.sieve.config.authenticator = CountingAuth(web.cfg.sieve.config.authenticator)
    web.start()
    try:
        c = Client(f"http://127.0.0.1:{web.port}")
        _s, _h, page = c.get("/login")
        token = c.csrf(page)
        for pw in ("w1", "w2"):
            status, _h, _b = c.post("/login", {"csrf": token, "user": "alice", "password": pw})
            assert status == 401
        assert clock.slept == [2, 4]
        status, headers, body = c.post("/login", {"csrf": token, "user": "alice", "password": "secret"})
        assert status == 429 and "Too many failed logins" in body
        assert int(headers["retry-after"]) > 8
        assert len(auth.checks) == 2 and throttle.throttled == 1
    finally:
        web.stop()


# -- submission ------------------------------------------------------------------------------------------

def smtp_auth_plain(f, s, user="alice", password="secret") -> bytes:
    blob = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    s.sendall(f"AUTH PLAIN {blob}\r\n".encode())
    return f.readline()


def smtp_greeted(port: int, source: str = "127.0.0.1"):
    s, f = connect(port, source)
    assert f.readline().startswith(b"220 ")
    s.sendall(b"EHLO client.test\r\n")
    while not f.readline().startswith(b"250 "):
        pass
    return s, f


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_submission_guessing_is_slowed_across_connections_then_refused_unchecked(tmp_path):
    from submission_support import World

    w = World(tmp_path)
    throttle, clock = fake_throttle()
    w.server.server.throttle = throttle
    auth = w.server.server.config.authenticator = CountingAuth(w.server.server.config.authenticator)
    try:
        s, f = smtp_greeted(w.port)
        assert smtp_auth_plain(f, s, password="w1").startswith(b"535 5.7.8")
        assert smtp_auth_plain(f, s, password="w2").startswith(b"535 5.7.8")
        s.close()
        assert clock.slept == [2, 4]        # each failure answered later than the one before
        s, f = smtp_greeted(w.port)          # a new connection does not wash the address
        answer = smtp_auth_plain(f, s)
        assert answer.startswith(b"454 4.7.0 Too many failed logins; try again in"), answer
        s.close()
        assert len(auth.checks) == 2 and throttle.throttled == 1   # the third password was not checked
        s, f = smtp_greeted(w.port, "127.0.0.2")   # a clean address logs in at once
        assert smtp_auth_plain(f, s).startswith(b"235 ")
        s.close()
        assert clock.slept == [2, 4]
    finally:
        w.stop()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_submission_login_deadline_drops_unauthenticated_clients_only(tmp_path):
    from submission_support import World

    w = World(tmp_path, submission='login_timeout = "1s"\n')
    try:
        idle, idle_f = smtp_greeted(w.port)
        busy, busy_f = smtp_greeted(w.port)
        assert smtp_auth_plain(busy_f, busy).startswith(b"235 ")
        assert idle_f.readline() == b"421 4.4.2 Login timeout, closing connection\r\n"
        assert idle_f.readline() == b""                 # closed
        busy.sendall(b"NOOP\r\n")                      # the logged-in one is kept
        assert busy_f.readline().startswith(b"250 ")
        idle.close()
        busy.close()
    finally:
        w.stop()


# -- the config keys --------------------------------------------------------------------------------------

@pytest.mark.parametrize("table", ["pop3", "managesieve", "web", "submission"])
def test_limit_keys_are_read_checked_and_named(tmp_path, table):
    import fetchdeliver.managesieve.settings  # noqa: F401
    import fetchdeliver.pop3server.settings  # noqa: F401
    import fetchdeliver.submission.settings  # noqa: F401
    import fetchdeliver.web.settings  # noqa: F401

    conf = tmp_path / "c.toml"
    conf.write_text(f'[{table}]\nmax_connections = 50\nmax_connections_per_ip = 5\nlogin_timeout = "20s"\n'
                    f'login_failure_delay = "3s"\nlogin_failure_max_delay = "2m"\nlogin_failure_rate = "10/1m"\n')
    data = config.load(str(conf))
    data.setdefault("imap", {})["passwd_file"] = os.devnull
    (tmp_path / "state").mkdir()
    data["delivery"] = {"state_dir": str(tmp_path / "state"), "maildir": str(tmp_path / "Maildir")}
    if table == "pop3":
        from fetchdeliver.pop3server.command import build_config
    elif table == "managesieve":
        from fetchdeliver.managesieve.command import build_config
    elif table == "submission":
        from fetchdeliver.submission.command import build_config
    else:
        from fetchdeliver.web.command import build_web_config as build_config
    cfg = build_config(argparse.Namespace(), data)
    assert (cfg.max_connections, cfg.max_connections_per_ip, cfg.login_timeout, cfg.login_failure_delay,
            cfg.login_failure_max_delay, cfg.login_failure_rate) == (50, 5, 20.0, 3.0, 120.0, (10, 60))
    conf.write_text(f'[{table}]\nmax_connections_per_ip = 0\n')
    with pytest.raises(ConfigError) as e:
        config.load(str(conf))
    assert f"{table}.max_connections_per_ip" in str(e.value)


def test_web_under_a_low_open_file_limit_logs_one_line_and_recovers(tmp_path):
    """`fetchdeliver web` with 96 descriptors and a flood of 600 idle connections: the accept loop pauses
    with one log line (no asyncio traceback a second), the idle connections are closed at the login
    deadline, and the page is served again."""
    import re
    import resource
    import subprocess
    import sys

    from web_support import passwd

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 800:
        pytest.skip("this test needs 800 open files in the test process")
    pw = passwd(tmp_path, {"alice": "secret"})
    conf = tmp_path / "config.toml"
    conf.write_text(f'[delivery]\nmaildir = "{tmp_path / "Maildir"}"\nstate_dir = "{tmp_path / "state"}"\n\n'
                    f'[imap]\npasswd_file = "{pw}"\n\n[web]\nlisten = "127.0.0.1:0"\nlogin_timeout = 1\n'
                    'max_connections = 5000\nmax_connections_per_ip = 5000\n')
    log = tmp_path / "web.log"

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))

    proc = subprocess.Popen([sys.executable, "-m", "fetchdeliver", "web", "-c", str(conf)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, preexec_fn=lower)
    socks: list[socket.socket] = []
    try:
        m = wait_for(lambda: re.search(rb"listening on http://127\.0\.0\.1:(\d+)/", log.read_bytes()) or
                     (proc.poll() is not None and pytest.fail(log.read_text())), "the web server")
        port = int(m.group(1))
        assert http_get(port).startswith(b"HTTP/1.1 200")
        for _ in range(600):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        wait_for(lambda: b"out of file descriptors" in log.read_bytes(), "the EMFILE log line")

        def served() -> bool:
            try:
                return http_get(port).startswith(b"HTTP/1.1 200")
            except OSError:
                return False

        assert wait_for(served, "the page after the flood")
        assert proc.poll() is None
    finally:
        for s in socks:
            s.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    text = log.read_text(errors="replace")
    assert text.count("out of file descriptors") <= 2, text[-3000:]
    assert "Traceback" not in text and "Exception in callback" not in text, text[-3000:]
    assert len(text.splitlines()) < 20, text[-3000:]
