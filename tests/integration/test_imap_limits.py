"""The IMAP server under hostile load: connection caps, the login deadline, password guessing, fd exhaustion.

Everything talks to a real server on 127.0.0.1 (other client addresses are other 127.0.0.x sources).
The login throttle's clock is the test's own where delays matter, so no assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time

import imapclient
import pytest

from fetchdeliver.imapserver.auth import set_password
from fetchdeliver.netlimits import FailurePolicy, LoginThrottle
from imap_helpers import make_server

pytestmark = pytest.mark.timeout(180)


def connect(port: int, source: str = "127.0.0.1", timeout: float = 30):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    return s, s.makefile("rb")


def greeting(port: int, source: str = "127.0.0.1"):
    s, f = connect(port, source)
    return s, f, f.readline()


def command(s, f, tag: str, text: str) -> list[bytes]:
    s.sendall(f"{tag} {text}\r\n".encode())
    lines = []
    while True:
        ln = f.readline()
        if not ln:
            return lines
        lines.append(ln)
        if ln.startswith(tag.encode() + b" ") or ln.startswith(b"* BYE"):
            return lines


def wait_for(cond, what: str, deadline: float = 60.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- connection caps ------------------------------------------------------------------------------------

def test_per_address_and_overall_connection_caps(tmp_path):
    srv, _md, _pw = make_server(tmp_path, max_connections=6, max_connections_per_ip=3)
    port = srv.port()
    held = []
    try:
        for _ in range(3):
            s, f, g = greeting(port)
            assert g.startswith(b"* OK")
            held.append(s)
        s, f, g = greeting(port)
        assert g.startswith(b"* BYE [UNAVAILABLE] Too many connections from your address")
        assert f.readline() == b""          # and closed
        s.close()
        # Another address still gets in, up to the overall cap ...
        for _ in range(3):
            s, f, g = greeting(port, "127.0.0.2")
            assert g.startswith(b"* OK")
            held.append(s)
        s, f, g = greeting(port, "127.0.0.3")
        assert g.startswith(b"* BYE [UNAVAILABLE] Too many connections to this server")
        s.close()
        # ... and a closed connection gives its place back.
        held.pop(0).close()
        s, f, g = wait_for(lambda: (lambda t: t if t[2].startswith(b"* OK") else t[0].close())(greeting(port)),
                           "a free place after a close")
        assert command(s, f, "a", "LOGIN alice secret")[-1].startswith(b"a OK")
        held.append(s)
    finally:
        for s in held:
            s.close()
        srv.stop()


# -- the login deadline -------------------------------------------------------------------------------------

def test_login_deadline_drops_unauthenticated_clients_but_not_logged_in_ones(tmp_path):
    srv, _md, _pw = make_server(tmp_path, login_timeout=0.5, idle_timeout=600)
    port = srv.port()
    try:
        authed, af, _ = greeting(port)
        assert command(authed, af, "a", "LOGIN alice secret")[-1].startswith(b"a OK")
        assert command(authed, af, "b", "SELECT INBOX")[-1].startswith(b"b OK")
        idle, f, g = greeting(port)       # connected after the logged-in one
        assert g.startswith(b"* OK")
        # It sends nothing: the deadline ends it with a BYE.
        assert f.readline().startswith(b"* BYE Login timeout")
        assert f.readline() == b""
        idle.close()
        # Commands before login do not keep a connection past the deadline either.
        busy, f, g = greeting(port)
        for i in range(40):
            busy.sendall(b"n%d NOOP\r\n" % i)
            ans = f.readline()
            if ans.startswith(b"* BYE"):
                break
            assert ans.startswith(b"n%d OK" % i), ans
            time.sleep(0.1)
        assert ans.startswith(b"* BYE Login timeout"), ans
        busy.close()
        # The session that logged in earlier is past the login deadline too, and serves on.
        assert command(authed, af, "c", "NOOP")[-1].startswith(b"c OK")
        assert command(authed, af, "d", "FETCH 1 (FLAGS)")[-1].startswith(b"d OK")
        authed.close()
    finally:
        srv.stop()


# -- password guessing -----------------------------------------------------------------------------------------

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
    """Wraps the passwd-file authenticator: records when (on the fake clock) each password was checked."""

    def __init__(self, inner, clock) -> None:
        self.inner = inner
        self.clock = clock
        self.checks: list[tuple[float, str]] = []

    def authenticate(self, user, password):
        self.checks.append((self.clock(), user, password))
        return self.inner.authenticate(user, password)


class RecordingPolicy(FailurePolicy):
    """The policy, keeping each check's (address, user, start time) it scheduled."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.starts: list[tuple[str, str, float]] = []

    def reserve(self, ip, user, start):
        self.starts.append((ip, user, start))
        super().reserve(ip, user, start)


def _guessing_server(tmp_path, base=2.0, max_delay=32.0, rate=(1, 5)):
    srv, _md, _pw = make_server(tmp_path, login_failure_delay=base)
    clock = FakeClock()
    server = srv.server
    server.throttle = LoginThrottle(RecordingPolicy(base_delay=base, max_delay=max_delay, rate=rate, clock=clock),
                                    sleep=clock.sleep)
    auth = CountingAuth(server.config.authenticator, clock)
    server.config.authenticator = auth
    return srv, clock, auth


def _guess(port: int, source: str, passwords: list[str], user: str = "alice") -> list[bytes]:
    """One guessing connection: LOGIN with each password, the tagged answers."""
    s, f, g = greeting(port, source)
    out = []
    try:
        for i, pw in enumerate(passwords):
            lines = command(s, f, f"g{i}", f"LOGIN {user} {pw}")
            if not lines:
                break
            out.append(lines[-1])
            if lines[-1].startswith(b"* BYE"):
                break
    finally:
        s.close()
    return out


def test_parallel_guessing_from_one_address_is_held_to_the_policy(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    srv, clock, auth = _guessing_server(tmp_path, base=2.0, max_delay=32.0, rate=None)
    port = srv.port()
    try:
        with ThreadPoolExecutor(40) as pool:
            answers = [a for run in pool.map(lambda i: _guess(port, "127.0.0.1", [f"w{i}a", f"w{i}b", f"w{i}c"]),
                                             range(40)) for a in run]
        failed = [a for a in answers if b"[AUTHENTICATIONFAILED]" in a]
        refused = [a for a in answers if b"NO [UNAVAILABLE]" in a]
        assert len(failed) + len(refused) + sum(a.startswith(b"* BYE") for a in answers) == len(answers)
        assert not any(b" OK " in a for a in answers)
        # Every password checked got an answer saying so, and nothing else was checked ...
        assert len(auth.checks) == len(failed) == srv.server.throttle.checks
        # ... and parallel connections did not check faster than the policy allows: the n-th check
        # from this address came no sooner than penalty(n-1) after the one before (on the throttle's clock).
        policy = srv.server.throttle.policy
        times = [t for t, _u, _p in auth.checks]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert all(g >= policy.penalty(n) for n, g in enumerate(gaps, 1)), (gaps, len(times))
        # the failures' answers were held back by the doubling delays, capped at the maximum
        assert clock.slept[:5] == [2, 4, 8, 16, 32] and max(clock.slept) == 32
        assert len(refused) == srv.server.throttle.throttled
    finally:
        srv.stop()


def test_guessing_from_many_addresses_shares_the_server_wide_rate_and_alice_still_logs_in(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    srv, clock, auth = _guessing_server(tmp_path, base=1.0, max_delay=30.0, rate=(1, 5))
    port = srv.port()
    sources = [f"127.0.1.{i}" for i in range(1, 11)]
    try:
        with ThreadPoolExecutor(10) as pool:
            runs = list(pool.map(lambda src: _guess(port, src, [f"{src}-1", f"{src}-2", f"{src}-3"],
                                                    user=f"user-{src}"), sources))
        answers = [a for r in runs for a in r]
        failed = [a for a in answers if b"NO [AUTHENTICATIONFAILED]" in a]
        refused = [a for a in answers if b"NO [UNAVAILABLE] Too many failed logins" in a]
        assert len(answers) == 30 and len(failed) + len(refused) == 30, answers
        assert len(auth.checks) == len(failed) and len(refused) == srv.server.throttle.throttled
        # Each address's first guess was checked at once; every later one (from an address with a
        # failure behind it) waited for a server-wide slot, one per 5 s on the throttle's clock, or was
        # refused unchecked when that slot was more than login_failure_max_delay away.
        starts = srv.server.throttle.policy.starts
        assert len(starts) == len(auth.checks)
        first_seen: set[str] = set()
        later = []
        for ip, _user, t in starts:
            if ip in first_seen:
                later.append(t)
            first_seen.add(ip)
        assert len(first_seen) == 10 and len(later) == len(starts) - 10 >= 5
        later.sort()
        gaps = [b - a for a, b in zip(later, later[1:])]
        assert min(gaps) >= 5, gaps
        # alice, whose password is right, from an address with no failures: in at once, nothing slept.
        assert srv.server.throttle.policy.wait_before("127.0.0.1", "alice") == 0
        slept = list(clock.slept)
        c = imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30)
        c.login("alice", "secret")
        assert c.select_folder("INBOX")[b"EXISTS"] == 3
        c.logout()
        assert clock.slept == slept
    finally:
        srv.stop()


def test_failures_for_one_user_grow_across_addresses_and_connections(tmp_path):
    srv, clock, auth = _guessing_server(tmp_path, base=2.0, max_delay=64.0, rate=None)
    port = srv.port()
    try:
        for i in range(1, 6):      # five addresses, one connection and one guess each
            assert b"[AUTHENTICATIONFAILED]" in _guess(port, f"127.0.2.{i}", [f"guess{i}"])[0]
        # Each answer was held by alice's growing count, though every address was new.
        assert clock.slept == [2, 4, 8, 16, 32]
        # The right password from yet another address: no wait, and alice's record is cleared.
        assert _guess(port, "127.0.2.99", ["secret"])[0].startswith(b"g0 OK")
        assert clock.slept == [2, 4, 8, 16, 32]
        assert b"[AUTHENTICATIONFAILED]" in _guess(port, "127.0.2.100", ["wrong"])[0]
        assert clock.slept[-1] == 2
    finally:
        srv.stop()


# -- garbage ------------------------------------------------------------------------------------------------------

def test_garbage_gets_bad_and_the_server_keeps_serving(tmp_path):
    srv, _md, _pw = make_server(tmp_path)
    port = srv.port()
    try:
        bystander = imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30)
        bystander.login("alice", "secret")
        bystander.select_folder("INBOX")
        s, f, _ = greeting(port)
        s.sendall(b"a1 LOGIN alice secret\r\n")
        assert f.readline().startswith(b"a1 OK")
        junk = [b"\x00\xff\xfe garbage", b"* * *", b"a2 FETCH", b"a3 FETCH 1:* (BODY[1.2.3.4.5.6]<0.x>",
                b"a4 SEARCH OR OR OR", b"a5 \x7f\x80\x81", b"(((((((((((", b"a6 UID FROB 1", b"a7 APPEND {x}"]
        for line in junk:
            s.sendall(line + b"\r\n")
            ans = f.readline()
            assert re.match(rb"(\* |a\d )BAD ", ans), (line, ans)
        assert command(s, f, "z", "NOOP")[-1].startswith(b"z OK")
        s.close()
        assert bystander.noop()[0] == b"NOOP completed."
        bystander.logout()
    finally:
        srv.stop()


# -- 1000 idle connections against a low open-file limit (the server in its own process) ---------------------------

def _start_imap_process(tmp_path, nofile: int, extra: str):
    from fetchdeliver.delivery.maildir import MaildirStore
    from imap_helpers import plain

    md = tmp_path / "Maildir"
    store = MaildirStore(str(md))
    for i in range(1, 4):
        store.deliver(plain(i))
    pw = tmp_path / "passwd"
    set_password(str(pw), "alice", "secret", "SHA256-CRYPT")
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[delivery]\nmaildir = "{md}"\n\n[imap]\nlisten = "127.0.0.1:0"\npasswd_file = "{pw}"\n'
                   f'login_failure_delay = 0\n{extra}')
    log = open(tmp_path / "server.log", "wb")

    def lower_limit():
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen([sys.executable, "-m", "fetchdeliver", "imap", "-c", str(cfg)], stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=lower_limit, cwd=str(tmp_path))
    logpath = tmp_path / "server.log"
    m = wait_for(lambda: re.search(rb"listening on 127\.0\.0\.1:(\d+)", logpath.read_bytes()) or
                 (proc.poll() is not None and pytest.fail(logpath.read_text())), "the server to listen", 30)
    return proc, int(m.group(1)), logpath


def _flood(port: int, n: int) -> list[socket.socket]:
    """n idle connections (non-blocking connects: a full backlog must not stall the test)."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    return socks


def _real_user_selects(port: int) -> bool:
    try:
        c = imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10)
    except (OSError, imapclient.exceptions.IMAPClientError):
        return False
    try:
        c.login("alice", "secret")
        ok = c.select_folder("INBOX")[b"EXISTS"] == 3
        c.logout()
        return ok
    except (OSError, imapclient.exceptions.IMAPClientError):
        return False


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("case", ["cap-fitted-to-the-limit", "cap-above-the-limit"])
def test_1000_idle_connections_against_a_low_open_file_limit(tmp_path, case):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1200:
        pytest.skip("this test needs 1200 open files in the test process")
    # cap-fitted: no max_connections, so the server fits it under its 128 descriptors and refuses the rest
    # with a BYE; cap-above: max_connections is set beyond what the descriptors allow, so accept() meets
    # EMFILE and the server must shed and pause instead of logging a traceback per attempt.
    extra = 'login_timeout = "1s"\nmax_connections_per_ip = 5000\n'
    if case == "cap-above-the-limit":
        extra += "max_connections = 5000\n"
    proc, port, logpath = _start_imap_process(tmp_path, 128, extra)
    socks: list[socket.socket] = []
    try:
        existing = imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30)
        existing.login("alice", "secret")
        existing.select_folder("INBOX")
        socks = _flood(port, 1000)
        if case == "cap-above-the-limit":
            wait_for(lambda: b"out of file descriptors" in logpath.read_bytes(), "the EMFILE log line")
        else:
            wait_for(lambda: b"refusing connections" in logpath.read_bytes(), "the cap's log line")
            assert existing.noop()[0] == b"NOOP completed."    # served while the flood is refused
        # The idle ones are dropped after login_timeout (or were refused); a real user gets in and SELECTs.
        assert wait_for(lambda: _real_user_selects(port), "a real user's LOGIN and SELECT", 90)
        assert existing.noop()[0] == b"NOOP completed."
        existing.logout()
        assert proc.poll() is None
    finally:
        for s in socks:
            s.close()
        _stop(proc)
    text = logpath.read_text(errors="replace")
    lines = text.splitlines()
    assert "Traceback" not in text, text[-3000:]
    assert len(lines) < 20, text[-3000:]
    assert text.count("Too many open files") <= 3, text[-3000:]
