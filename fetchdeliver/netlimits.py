"""Limits every network server shares: connection caps, an accept loop that survives EMFILE, a login throttle.

    limits = ConnectionLimits(max_total=1000, max_per_ip=100)
    listener = Listener(bind_tcp("127.0.0.1", 1143), on_socket, limits=limits, name="imap",
                        refusal=lambda why: b"* BYE [UNAVAILABLE] " + why.encode() + b"\\r\\n")
    listener.start()          # on_socket(conn, slot): serve conn, call slot.release() when it is closed

    throttle = LoginThrottle(FailurePolicy(base_delay=2, max_delay=60, rate=(60, 60)))
    account = await throttle.attempt(peer_ip, user, lambda: asyncio.to_thread(check, user, password))

Connection caps count per client address (an IPv6 address by its /64, where one
attacker has them all) and overall; a connection over either cap gets the
protocol's refusal line (`* BYE` for IMAP, `421` for LMTP) and is closed at once.

When the process runs out of file descriptors (EMFILE, ENFILE), `Listener`
refuses what is waiting in the backlog (with one spare descriptor kept for that),
stops accepting for a moment and logs one line (then at most one a minute), rather
than a traceback per attempt; sessions already open go on.

The login throttle is Dovecot's auth_failure_delay and auth penalty, across
connections: a failed login is answered after `base_delay`, doubled for each
earlier failure from the same address or for the same user (up to `max_delay`);
meanwhile the address cannot try again, and logins from addresses with recent
failures share a server-wide rate. A correct password from an address without
failures is never slowed. `FailurePolicy` is the arithmetic (with a clock you can
give it, for tests and for threaded servers); `LoginThrottle` applies it in asyncio.

The wiring is shared too: each server's table has the keys of LOGIN_KEYS and
CONNECTION_KEYS (`limit_options` reads them into its ServerConfig, a `LimitSettings`);
`connection_limits(cfg)` and `login_throttle(cfg)` build its caps and throttle;
`open_listeners` binds its ports, and `serve_connection` runs one admitted
connection (TLS handshake, session, login deadline, close, slot released). IMAP,
POP3 and ManageSieve use all of it; the web page its caps and throttle (uvicorn
accepts there, see web/server.py); LMTP its caps and Listener.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable, TypeVar

from fetchdeliver.errors import FetchdeliverError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
# asyncio is imported by the functions that run in an event loop, not here: the config schemas import this
# module for its limit keys, and every command that reads a config would pay asyncio's ~20 ms start-up.

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_MAX_CONNECTIONS_PER_IP = 100
DEFAULT_LOGIN_TIMEOUT = 60.0            # Dovecot's login processes give a client about a minute
DEFAULT_LOGIN_FAILURE_DELAY = 2.0       # Dovecot's auth_failure_delay
DEFAULT_LOGIN_FAILURE_MAX_DELAY = 60.0
DEFAULT_LOGIN_FAILURE_RATE = (60, 60)   # password checks per 60 s for addresses with recent failures
FORGET_FAILURES_AFTER = 3600.0          # an address or user with no failure for this long is clean again
MAX_TRACKED = 20000                     # addresses and users remembered (oldest forgotten first)
ACCEPT_PAUSE = 1.0                      # seconds without accepting after EMFILE
FD_RESERVE = 64                         # descriptors kept for files, pipes and threads beside connections
FD_MARGIN = 16                          # after EMFILE: connections are capped this far below what was open
FD_CEILING_TIME = 60.0                  # ... for this long

OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE})
_OUT_OF_MEMORY = frozenset({errno.ENOBUFS, errno.ENOMEM})
# accept() errors that belong to one connection, not to the listener (Linux passes some network errors on).
_PER_CONNECTION = frozenset(getattr(errno, name) for name in (
    "ECONNABORTED", "EPROTO", "EPERM", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET", "EHOSTUNREACH",
    "EOPNOTSUPP", "ENETUNREACH", "ECONNRESET", "ETIMEDOUT") if hasattr(errno, name))


class LoginThrottled(FetchdeliverError):
    """A login is not checked now: too many recent failures from this address (or server-wide)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- client addresses ------------------------------------------------------------------------------

def client_key(ip: str | None) -> str | None:
    """The address limits count by: IPv4 as it is, IPv6 by its /64 (IPv4-mapped ones as IPv4)."""
    if not ip:
        return None
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


# -- rate-limited logging -------------------------------------------------------------------------------

class LogLimiter:
    """Log a recurring condition once, then at most once per `interval`, counting what was left out."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0, clock=time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return False
        skipped = self._skipped.pop(key, 0)
        self._last[key] = now
        if skipped:
            msg += " (%d more times since the last message)"
            args = args + (skipped,)
        self.logger.warning(msg, *args)
        return True


# -- connection caps ----------------------------------------------------------------------------------

class Slot:
    """One admitted connection's place under the caps; `release()` (idempotent) gives it back."""

    __slots__ = ("limits", "key", "ip", "_held")

    def __init__(self, limits: "ConnectionLimits | None", key: str | None, ip: str | None) -> None:
        self.limits = limits
        self.key = key
        self.ip = ip
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            if self.limits is not None:
                self.limits._release(self.key)


class ConnectionLimits:
    """Counts open connections overall and per client address; `admit` says whether one more may come."""

    def __init__(self, max_total: int = DEFAULT_MAX_CONNECTIONS,
                 max_per_ip: int = DEFAULT_MAX_CONNECTIONS_PER_IP, clock=time.monotonic) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.per_ip: dict[str, int] = {}
        self.clock = clock
        self.ceiling: int | None = None      # a lower cap for a while, after running out of descriptors
        self.ceiling_until = 0.0

    def tighten(self, ceiling: int, seconds: float = FD_CEILING_TIME) -> None:
        """Allow at most `ceiling` connections for `seconds` (the descriptors ran out above it)."""
        self.ceiling = max(1, ceiling)
        self.ceiling_until = self.clock() + seconds

    def cap(self) -> int:
        if self.ceiling is not None:
            if self.clock() < self.ceiling_until:
                return min(self.max_total, self.ceiling)
            self.ceiling = None
        return self.max_total

    def admit(self, ip: str | None) -> Slot | str:
        """A Slot for the new connection, or the reason (a sentence) it is refused."""
        key = client_key(ip)
        cap = self.cap()
        if self.total >= cap:
            if cap < self.max_total:
                return "The server is short of file descriptors, try again later."
            return f"Too many connections to this server (max_connections={self.max_total}), try again later."
        if key is not None and self.per_ip.get(key, 0) >= self.max_per_ip:
            return (f"Too many connections from your address (max_connections_per_ip={self.max_per_ip}), "
                    "try again later.")
        self.total += 1
        if key is not None:
            self.per_ip[key] = self.per_ip.get(key, 0) + 1
        return Slot(self, key, ip)

    def _release(self, key: str | None) -> None:
        self.total -= 1
        if key is not None:
            n = self.per_ip.get(key, 0) - 1
            if n > 0:
                self.per_ip[key] = n
            else:
                self.per_ip.pop(key, None)


def open_file_limit(raise_soft: bool = True) -> int:
    """The soft RLIMIT_NOFILE, first raised to the hard limit (up to 1M) when `raise_soft`."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 1 << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if raise_soft and soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
        want = 1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (OSError, ValueError):
            pass
    return (1 << 20) if soft == resource.RLIM_INFINITY else soft


def fit_max_connections(configured: int | None, name: str) -> int:
    """max_connections for a server: the configured value, or the default fitted to the open-file limit."""
    fds = open_file_limit()
    room = max(1, fds - max(FD_RESERVE, fds // 8))
    if configured is None:
        return min(DEFAULT_MAX_CONNECTIONS, room)
    if configured > room:
        log.warning("%s: max_connections = %d, but the open-file limit (%d) leaves room for about %d; "
                    "beyond that new connections are refused while descriptors are short",
                    name, configured, fds, room)
    return configured


# -- listening sockets and the accept loop ------------------------------------------------------------------

def bind_tcp(host: str, port: int, backlog: int = 512) -> socket.socket:
    """A listening, non-blocking TCP socket (SO_REUSEADDR), IPv6 when the host is."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _canon, addr = infos[0]
    # IPPROTO_TCP named, not 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets whose
    # `proto` says TCP, and accepted sockets inherit it. With Nagle on, an answer written in two parts
    # (untagged lines, then the tagged one) waits for the client's delayed ACK: 40 ms per command.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_unix(path: str, mode: int = 0o660, backlog: int = 512) -> socket.socket:
    """A listening, non-blocking Unix socket at `path` (a leftover socket file is replaced)."""
    import stat

    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _peer_ip(addr) -> str | None:
    return addr[0] if isinstance(addr, tuple) and addr else None


def refuse_socket(conn: socket.socket, line: bytes | None) -> None:
    """Send `line` if the socket takes it at once, then close the connection."""
    try:
        if line:
            conn.setblocking(False)
            conn.send(line)
    except OSError:
        pass
    finally:
        conn.close()


class Listener:
    """Accept connections on a listening socket within `limits` and give each to `on_socket(conn, slot)`.

    `refusal(reason)` is the protocol's answer to a connection over a cap or arriving while
    descriptors are short (None: close without a word, e.g. before a TLS handshake).
    `on_socket` owns the connection: it must call `slot.release()` once it is closed.
    """

    def __init__(self, sock: socket.socket, on_socket: Callable[[socket.socket, Slot], None], *,
                 limits: ConnectionLimits | None = None,
                 refusal: Callable[[str], bytes | None] | None = None, name: str = "server",
                 pause: float = ACCEPT_PAUSE, logger: logging.Logger | None = None) -> None:
        self.sock = sock
        self.on_socket = on_socket
        self.limits = limits
        self.refusal = refusal or (lambda why: None)
        self.name = name
        self.pause = pause
        self.logger = logger or log
        self.warn = LogLimiter(self.logger)
        self.refused = 0           # connections turned away (caps or short of descriptors)
        self.overloads = 0         # times accept() met EMFILE/ENFILE/ENOBUFS/ENOMEM
        self._task: asyncio.Task | None = None
        self._spare: int | None = None
        self._closing = False

    @property
    def address(self):
        return self.sock.getsockname()

    def start(self) -> "Listener":
        import asyncio

        self._reserve()
        self._task = asyncio.ensure_future(self._run())
        return self

    async def wait(self) -> None:
        import asyncio

        if self._task is not None:
            try:
                await asyncio.shield(self._task)
            except asyncio.CancelledError:
                if not self._closing:
                    raise

    def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        try:
            self.sock.close()
        except OSError:
            pass
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    def _reserve(self) -> None:
        if self._spare is None:
            try:
                self._spare = os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                self._spare = None

    async def _run(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                conn, addr = await loop.sock_accept(self.sock)
            except asyncio.CancelledError:
                raise
            except OSError as e:
                if self._closing or e.errno == errno.EBADF:
                    return
                if e.errno in _PER_CONNECTION:
                    continue
                await self._overloaded(e)
                continue
            self._admit(conn, _peer_ip(addr))

    def _admit(self, conn: socket.socket, ip: str | None) -> None:
        slot: Slot | str = Slot(None, None, ip) if self.limits is None else self.limits.admit(ip)
        if isinstance(slot, str):
            self.refused += 1
            self.warn.warning("cap", "%s: refusing connections: %s", self.name, slot.rstrip("."))
            refuse_socket(conn, self.refusal(slot))
            return
        try:
            conn.setblocking(False)
            self.on_socket(conn, slot)
        except Exception:
            slot.release()
            conn.close()
            self.logger.exception("%s: cannot start a session", self.name)

    async def _overloaded(self, e: OSError) -> None:
        import asyncio

        self.overloads += 1
        shed = self._shed() if e.errno in OUT_OF_FDS else 0
        what = "out of file descriptors" if e.errno in OUT_OF_FDS else \
            "out of memory" if e.errno in _OUT_OF_MEMORY else "accept() failed"
        open_now = self.limits.total if self.limits is not None else -1
        capped = ""
        if self.limits is not None and e.errno in OUT_OF_FDS:
            # Sessions need descriptors too (a SELECT opens files): stay well below where they ran out.
            self.limits.tighten(open_now - FD_MARGIN)
            capped = f"; at most {self.limits.cap()} connections for {FD_CEILING_TIME:g}s"
        self.warn.warning("accept", "%s: %s (%s) with %s connections open; refused %d waiting, "
                          "not accepting for %gs%s", self.name, what, e.strerror or e,
                          open_now if open_now >= 0 else "some", shed, self.pause, capped)
        await asyncio.sleep(self.pause)
        self._reserve()

    def _shed(self) -> int:
        """Refuse the connections waiting in the backlog, using the spare descriptor for each in turn."""
        if self._spare is None:
            return 0
        os.close(self._spare)
        self._spare = None
        n = 0
        try:
            while n < 4096:
                try:
                    conn, _addr = self.sock.accept()
                except OSError:
                    break
                self.refused += 1
                n += 1
                refuse_socket(conn, self.refusal("The server is short of resources, try again later."))
        finally:
            self._reserve()
        return n


# -- the login throttle --------------------------------------------------------------------------------

class _Record:
    __slots__ = ("failures", "last", "ready")

    def __init__(self) -> None:
        self.failures = 0
        self.last = 0.0
        self.ready = 0.0       # no check before this time


class FailurePolicy:
    """Failed-login bookkeeping per client address and per user, with a server-wide rate.

    penalty(n) = base_delay * 2**(n-1), at most max_delay; penalty(0) = 0.
    - A failure is answered after penalty(failures so far, of the address or of the user,
      whichever is more); the address may not try again until then.
    - An address with recent failures also waits for the user's penalty and for a
      server-wide slot: `rate` = (count, seconds) checks, evenly spaced.
    - A clean address never waits. A user's success clears the user; the address keeps
      its record (so an attacker cannot wash it with an account of their own) until it
      has had no failure for FORGET_FAILURES_AFTER seconds.
    `base_delay` 0 turns everything off.
    """

    def __init__(self, base_delay: float = DEFAULT_LOGIN_FAILURE_DELAY,
                 max_delay: float = DEFAULT_LOGIN_FAILURE_MAX_DELAY,
                 rate: tuple[int, float] | None = DEFAULT_LOGIN_FAILURE_RATE,
                 clock: Callable[[], float] = time.monotonic, forget_after: float = FORGET_FAILURES_AFTER,
                 max_tracked: int = MAX_TRACKED) -> None:
        self.base_delay = float(base_delay)
        self.max_delay = max(float(max_delay), self.base_delay)
        self.interval = (float(rate[1]) / rate[0]) if rate and rate[0] > 0 else 0.0
        self.clock = clock
        self.forget_after = forget_after
        self.max_tracked = max_tracked
        self.addresses: OrderedDict[str, _Record] = OrderedDict()
        self.users: OrderedDict[str, _Record] = OrderedDict()
        self.global_next = 0.0

    @property
    def enabled(self) -> bool:
        return self.base_delay > 0

    def penalty(self, failures: int) -> float:
        if failures <= 0 or not self.enabled:
            return 0.0
        return min(self.max_delay, self.base_delay * (2 ** min(failures - 1, 62)))

    @staticmethod
    def user_key(user: str) -> str:
        return user.strip().lower()[:256]

    def _get(self, table: OrderedDict, key: str | None, now: float, create: bool = False) -> _Record | None:
        if key is None:
            return None
        rec = table.get(key)
        if rec is not None and rec.failures and now - rec.last > self.forget_after:
            del table[key]
            rec = None
        if rec is None and create:
            rec = table[key] = _Record()
            while len(table) > self.max_tracked:
                table.popitem(last=False)
        elif rec is not None:
            table.move_to_end(key)
        return rec

    def is_dirty(self, ip: str | None, now: float | None = None) -> bool:
        now = self.clock() if now is None else now
        rec = self._get(self.addresses, client_key(ip), now)
        return rec is not None and rec.failures > 0

    def wait_before(self, ip: str | None, user: str, now: float | None = None) -> float:
        """Seconds a check for (ip, user) must wait from `now` (0 for a clean address)."""
        if not self.enabled:
            return 0.0
        now = self.clock() if now is None else now
        addr = self._get(self.addresses, client_key(ip), now)
        if addr is None or addr.failures == 0:
            return max(0.0, addr.ready - now) if addr is not None else 0.0
        start = max(now, addr.ready)
        urec = self._get(self.users, self.user_key(user), now)
        if urec is not None:
            start = max(start, urec.ready)
        if self.interval:
            start = max(start, self.global_next)
        return start - now

    def reserve(self, ip: str | None, user: str, start: float) -> None:
        """A check for (ip, user) runs at `start`: take its server-wide slot and the user's turn."""
        if not self.enabled or not self.is_dirty(ip, start):
            return
        if self.interval:
            self.global_next = max(self.global_next, start) + self.interval
        urec = self._get(self.users, self.user_key(user), start, create=True)
        assert urec is not None   # a str key with create=True always has a record
        urec.ready = max(urec.ready, start + self.penalty(urec.failures + 1))

    def failed(self, ip: str | None, user: str, now: float | None = None) -> float:
        """Record a failed check; return how long its answer is held back."""
        now = self.clock() if now is None else now
        if not self.enabled:
            return 0.0
        addr = self._get(self.addresses, client_key(ip), now, create=True)
        urec = self._get(self.users, self.user_key(user), now, create=True)
        assert urec is not None   # a str key with create=True always has a record
        if addr is not None:
            addr.failures += 1
            addr.last = now
        urec.failures += 1
        urec.last = now
        hold = self.penalty(max(addr.failures if addr is not None else 0, urec.failures))
        if addr is not None:
            addr.ready = max(addr.ready, now + hold)
        urec.ready = max(urec.ready, now + self.penalty(urec.failures))
        return hold

    def succeeded(self, ip: str | None, user: str, now: float | None = None) -> None:
        self.users.pop(self.user_key(user), None)


class LoginThrottle:
    """FailurePolicy applied to asyncio logins: one check at a time per address, waits and holds slept."""

    def __init__(self, policy: FailurePolicy | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        import asyncio

        self.policy = policy or FailurePolicy()
        self.sleep: Callable[[float], Awaitable[None]] = sleep if sleep is not None else asyncio.sleep
        self.checks = 0            # passwords checked
        self.throttled = 0         # logins answered without a check
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        self.warn = LogLimiter(log)

    async def attempt(self, ip: str | None, user: str, verify: Callable[[], Awaitable[T | None]]) -> T | None:
        """Run `verify()` (None means a wrong user or password) within the policy.

        Raises LoginThrottled, without checking, when the address has recent failures and
        already has a login being checked, or when its turn is further off than max_delay.
        """
        import asyncio

        policy = self.policy
        if not policy.enabled:
            self.checks += 1
            return await verify()
        key = client_key(ip) or ""
        if self._users.get(key) and policy.is_dirty(ip):
            self._refuse(ip, "Another login from your address is being checked; try again later.", 1.0)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                wait = policy.wait_before(ip, user)
                if wait > policy.max_delay:
                    self._refuse(ip, f"Too many failed logins; try again in {int(wait) + 1} seconds.", wait)
                policy.reserve(ip, user, policy.clock() + wait)
                if wait > 0:
                    await self.sleep(wait)
                self.checks += 1
                result = await verify()
                if result is None:
                    hold = policy.failed(ip, user)
                    if hold > 0:
                        await self.sleep(hold)
                else:
                    policy.succeeded(ip, user)
                return result
        finally:
            n = self._users[key] - 1
            if n:
                self._users[key] = n
            else:
                del self._users[key]
                self._locks.pop(key, None)

    def _refuse(self, ip: str | None, why: str, retry_after: float):
        self.throttled += 1
        self.warn.warning("throttled", "logins throttled after repeated failures (latest from %s)", ip)
        raise LoginThrottled(why, retry_after)


# -- config keys the servers share ---------------------------------------------------------------------------

def _seconds(v, where) -> float:
    """A duration: "90s", "5m", or a number of seconds (fractions allowed)."""
    from fetchdeliver import config

    if isinstance(v, bool):
        raise ValueError(f"expected a duration such as \"60s\", got {v!r}")
    if isinstance(v, (int, float)):
        if v < 0:
            raise ValueError(f"must not be negative, got {v}")
        return float(v)
    return float(config.parse_duration(config.check_str(v, where)))


def _positive_seconds(v, where) -> float:
    v = _seconds(v, where)
    if v <= 0:
        raise ValueError("must be more than 0 seconds")
    return v


def parse_rate(text: str) -> tuple[int, int]:
    """"60/1m" -> (60, 60): at most 60 per 60 seconds."""
    from fetchdeliver import config

    count, sep, window = str(text).partition("/")
    if not sep or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"expected COUNT/DURATION such as \"60/1m\", got {text!r}")
    w = window.strip()
    seconds = config.parse_duration(w if w[:1].isdigit() else "1" + w)
    if seconds < 1:
        raise ValueError(f"the window of {text!r} must be at least 1 second")
    return int(count), seconds


def _rate(v, where) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected COUNT/DURATION such as \"60/1m\", got {v!r}")
    parse_rate(v)
    return v


def _positive(v, where) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 10_000_000:
        raise ValueError(f"expected a whole number from 1 to 10000000, got {v!r}")
    return v


CONNECTION_KEYS = {
    "max_connections": _positive,          # connections at once, overall
    "max_connections_per_ip": _positive,   # ... from one client address (an IPv6 /64)
}

LOGIN_KEYS = {
    "login_timeout": _positive_seconds,    # a client must log in within this after connecting
    "login_failure_delay": _seconds,       # first failed login answered after this; doubles per failure
    "login_failure_max_delay": _seconds,   # the doubling stops here
    "login_failure_rate": _rate,           # server-wide checks for addresses with recent failures
}


def limit_options(table: dict) -> dict:
    """The limits of a server's config table (LOGIN_KEYS and CONNECTION_KEYS, defaults applied) as
    keyword arguments for its ServerConfig (imapserver, pop3server, managesieve, web)."""
    return {
        # None: 1000, or fewer when the open-file limit cannot hold that many (fit_max_connections)
        "max_connections": table.get("max_connections"),
        "max_connections_per_ip": table.get("max_connections_per_ip", DEFAULT_MAX_CONNECTIONS_PER_IP),
        "login_timeout": float(table.get("login_timeout", DEFAULT_LOGIN_TIMEOUT)),
        "login_failure_delay": float(table.get("login_failure_delay", DEFAULT_LOGIN_FAILURE_DELAY)),
        "login_failure_max_delay": float(table.get("login_failure_max_delay", DEFAULT_LOGIN_FAILURE_MAX_DELAY)),
        "login_failure_rate": parse_rate(table.get("login_failure_rate", "60/1m")),
    }


class LimitSettings:
    """The limit attributes a server's ServerConfig carries (the keys of `limit_options`)."""

    max_connections: int | None = None
    max_connections_per_ip: int = DEFAULT_MAX_CONNECTIONS_PER_IP
    login_timeout: float = DEFAULT_LOGIN_TIMEOUT
    login_failure_delay: float = DEFAULT_LOGIN_FAILURE_DELAY
    login_failure_max_delay: float = DEFAULT_LOGIN_FAILURE_MAX_DELAY
    login_failure_rate: tuple[int, float] | None = DEFAULT_LOGIN_FAILURE_RATE

    def set_limits(self, **limits) -> None:
        for k, v in limits.items():
            if not hasattr(LimitSettings, k):
                raise TypeError(f"unknown limit {k!r}")
            setattr(self, k, v)


# -- the wiring every server shares ------------------------------------------------------------------------

def connection_limits(cfg) -> ConnectionLimits:
    """ConnectionLimits from a config with max_connections (None: the default) and max_connections_per_ip."""
    return ConnectionLimits(cfg.max_connections or DEFAULT_MAX_CONNECTIONS, cfg.max_connections_per_ip)


def login_throttle(cfg) -> LoginThrottle:
    """A LoginThrottle from a config with login_failure_delay, login_failure_max_delay, login_failure_rate."""
    return LoginThrottle(FailurePolicy(base_delay=cfg.login_failure_delay, max_delay=cfg.login_failure_max_delay,
                                       rate=cfg.login_failure_rate))


def split_address(addr: str) -> tuple[str, int]:
    """"HOST:PORT" or "[V6]:PORT" -> (host, port)."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def open_listeners(protocol: str, groups, *, limits: ConnectionLimits,
                   accepted: Callable[[socket.socket, Slot, bool], None],
                   refusal: Callable[[str], bytes | None] | None, logger: logging.Logger | None = None
                   ) -> tuple[list[Listener], list[tuple[str, int, bool]]]:
    """Bind and start a Listener for each "HOST:PORT" of `groups` = [(addresses, tls), ...].

    `accepted(conn, slot, tls)` gets each admitted connection. Over a cap a plain connection is
    answered `refusal(reason)`; a TLS one is closed without a word (nothing can be said before the
    handshake). A port that cannot be bound is a ConfigError (the ones started are closed)."""
    from fetchdeliver.errors import ConfigError

    listeners: list[Listener] = []
    addresses: list[tuple[str, int, bool]] = []
    try:
        for addrs, tls in groups:
            for addr in addrs:
                host, port = split_address(addr)
                try:
                    sock = bind_tcp(host, port)
                except OSError as e:
                    raise ConfigError(f"cannot listen on {addr}: {e.strerror or e}") from None
                name = sock.getsockname()
                where = f"{protocol} {name[0]}:{name[1]}{' (TLS)' if tls else ''}"

                def on_accept(conn: socket.socket, slot: Slot, tls: bool = tls) -> None:
                    accepted(conn, slot, tls)

                listener = Listener(sock, on_accept, limits=limits,
                                    refusal=None if tls else refusal, name=where, logger=logger)
                listeners.append(listener.start())
                addresses.append((name[0], name[1], tls))
    except BaseException:
        for lst in listeners:
            lst.close()
        raise
    return listeners, addresses


def spawn(tasks: set, coro: Awaitable) -> asyncio.Task:
    """Run `coro` as a task kept in `tasks` until it ends (a server's sessions, cancelled at stop)."""
    import asyncio

    task = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


async def serve_connection(conn: socket.socket, slot: Slot, *, session: Callable[..., Any],
                           logged_in: Callable[[Any], bool], timeout_line: bytes | None,
                           login_timeout: float, ssl_context=None, max_line: int = 65536,
                           logger: logging.Logger | None = None) -> None:
    """One accepted connection, start to end: the TLS handshake (`ssl_context` given), then
    `session(reader, writer).run()` under the login deadline, then the close; the slot is given back.

    When `login_timeout` passes and `logged_in(session)` is still false, `timeout_line` is sent and
    the session is cancelled (the deadline covers the TLS handshake too)."""
    import asyncio

    logger = logger or log
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None   # a coroutine run by the event loop is always in a task
    state: dict = {}
    timer = loop.call_later(login_timeout, _login_expired, task, state, logged_in, timeout_line)
    transport = None
    writers: list = []
    try:
        reader = asyncio.StreamReader(limit=max_line)
        protocol = asyncio.StreamReaderProtocol(reader, lambda _r, w: writers.append(w))
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, conn, ssl=ssl_context,
                ssl_handshake_timeout=max(1.0, min(login_timeout, 60.0)) if ssl_context else None)
        except (OSError, asyncio.TimeoutError) as e:  # a failed TLS handshake, a peer gone already
            logger.debug("connection from %s ended before the session: %s", slot.ip, e)
            conn.close()
            return
        writer = writers[0]      # made by the protocol at connection_made
        sess = session(reader, writer)
        state["session"] = sess
        state["writer"] = writer
        await sess.run()
    except asyncio.CancelledError:
        # The server is stopping, or the login deadline passed.
        if transport is not None:
            transport.abort()
        else:
            conn.close()
    except Exception:
        logger.exception("session crashed")
    finally:
        timer.cancel()
        try:
            if transport is not None:
                transport.close()
                # A peer that never reads would keep the descriptor until its buffer drains: not for long.
                try:
                    await asyncio.wait_for(writers[0].wait_closed(), 5)
                except Exception:
                    transport.abort()
        finally:
            slot.release()


def _login_expired(task: asyncio.Task, state: dict, logged_in, line: bytes | None) -> None:
    session = state.get("session")
    if session is not None and logged_in(session):
        return
    writer = state.get("writer")
    if writer is not None and line:
        try:
            writer.write(line)
        except Exception:
            pass
    task.cancel()
