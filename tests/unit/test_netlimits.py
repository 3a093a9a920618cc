"""fetchdeliver.netlimits: connection caps, the failed-login policy (on a clock the test owns), the throttle."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fetchdeliver import config
from fetchdeliver.netlimits import (ConnectionLimits, FailurePolicy, LoginThrottle, LoginThrottled, LogLimiter,
                                    client_key, parse_rate)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, d: float) -> None:
        self.slept.append(d)
        self.now += d
        await asyncio.sleep(0)


def test_client_key_groups_ipv6_by_64_and_unmaps_ipv4():
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key(None) is None


def test_connection_limits_per_address_and_overall():
    lim = ConnectionLimits(max_total=5, max_per_ip=2)
    a1, a2 = lim.admit("10.0.0.1"), lim.admit("10.0.0.1")
    refused = lim.admit("10.0.0.1")
    assert isinstance(refused, str) and "max_connections_per_ip=2" in refused
    others = [lim.admit(f"10.0.0.{i}") for i in (2, 3, 4)]
    assert lim.total == 5
    over = lim.admit("10.0.0.9")
    assert isinstance(over, str) and "max_connections=5" in over
    unix = lim.admit(None)
    assert isinstance(unix, str)          # the overall cap counts Unix-socket clients too
    a1.release()
    a1.release()                          # idempotent
    assert lim.total == 4 and lim.per_ip["10.0.0.1"] == 1
    assert not isinstance(lim.admit("10.0.0.1"), str)
    for s in [a2, *others]:
        s.release()
    assert lim.total == 1 and set(lim.per_ip) == {"10.0.0.1"}


def test_penalty_doubles_from_the_base_up_to_the_maximum():
    p = FailurePolicy(base_delay=2, max_delay=60, rate=None)
    assert [p.penalty(n) for n in range(0, 8)] == [0, 2, 4, 8, 16, 32, 60, 60]
    assert FailurePolicy(base_delay=0).penalty(5) == 0


def test_nth_failure_from_an_address_is_held_by_the_policy_delay_and_blocks_the_address():
    clock = Clock()
    p = FailurePolicy(base_delay=2, max_delay=30, rate=None, clock=clock)
    ip = "198.51.100.1"
    holds = []
    for n in range(1, 8):
        wait = p.wait_before(ip, f"user{n}")      # a different user each time: the address counts
        clock.now += wait
        holds.append(p.failed(ip, f"user{n}"))
        assert p.wait_before(ip, "anyone") == pytest.approx(holds[-1])   # the address waits that long
    assert holds == [2, 4, 8, 16, 30, 30, 30]
    # A clean address is never slowed, whatever its neighbour did.
    assert p.wait_before("198.51.100.2", "user1") == 0


def test_failures_for_one_user_across_addresses_grow_and_slow_dirty_addresses_only():
    clock = Clock()
    p = FailurePolicy(base_delay=1, max_delay=100, rate=None, clock=clock)
    holds = [p.failed(f"203.0.113.{i}", "alice") for i in range(1, 6)]   # a botnet, one try each
    assert holds == [1, 2, 4, 8, 16]                 # each answer waits by the user's count
    # An address with its own failure must also wait for alice's turn ...
    assert p.wait_before("203.0.113.1", "alice") == pytest.approx(16)
    # ... but alice from an address without failures is not slowed, and her success clears her.
    assert p.wait_before("192.0.2.50", "alice") == 0
    p.succeeded("192.0.2.50", "alice")
    assert p.wait_before("203.0.113.1", "alice") == pytest.approx(p.penalty(1) - 0)  # the address's own


def test_server_wide_rate_spaces_checks_from_dirty_addresses():
    clock = Clock()
    p = FailurePolicy(base_delay=1, max_delay=1, rate=(2, 10), clock=clock)   # one check per 5 s
    ips = [f"203.0.113.{i}" for i in range(1, 5)]
    for ip in ips:
        p.failed(ip, "x-" + ip)
    clock.now += 1                                    # every address's own penalty is over
    starts = []
    for ip in ips:
        w = p.wait_before(ip, "y-" + ip)
        p.reserve(ip, "y-" + ip, clock.now + w)
        starts.append(clock.now + w)
    assert [b - a for a, b in zip(starts, starts[1:])] == [5, 5, 5]
    assert p.wait_before("192.0.2.1", "z") == 0       # a clean address skips the queue


def test_records_are_forgotten_after_an_hour_without_failures_and_bounded_in_number():
    clock = Clock()
    p = FailurePolicy(base_delay=2, max_delay=60, rate=None, clock=clock, max_tracked=10)
    p.failed("192.0.2.1", "u")
    assert p.is_dirty("192.0.2.1")
    clock.now += 3601
    assert not p.is_dirty("192.0.2.1") and p.wait_before("192.0.2.1", "u") == 0
    for i in range(50):
        p.failed(f"10.1.0.{i}", f"user{i}")
    assert len(p.addresses) <= 10 and len(p.users) <= 10


def _run(coro):
    return asyncio.run(coro)


def test_throttle_holds_failures_and_lets_a_clean_correct_login_through_at_once():
    clock = Clock()
    t = LoginThrottle(FailurePolicy(base_delay=2, max_delay=8, rate=(1, 1), clock=clock), sleep=clock.sleep)

    async def ok():
        return "account"

    async def wrong():
        return None

    async def go():
        assert await t.attempt("192.0.2.9", "alice", ok) == "account"
        assert clock.slept == []
        for _ in range(4):
            assert await t.attempt("198.51.100.7", "alice", wrong) is None
        assert clock.slept[0] == 2                # the first failure's answer waits the base delay
        assert sum(clock.slept) >= 2 + 4 + 8 + 8
        before = list(clock.slept)
        # alice is under attack, yet her correct password from her clean address is not slowed
        assert await t.attempt("192.0.2.9", "alice", ok) == "account"
        assert clock.slept == before

    _run(go())
    assert t.checks == 6 and t.throttled == 0


def test_throttle_refuses_a_second_parallel_attempt_from_a_dirty_address_without_checking():
    clock = Clock()
    t = LoginThrottle(FailurePolicy(base_delay=2, max_delay=8, rate=None, clock=clock), sleep=clock.sleep)
    checked = []
    gate = asyncio.Event

    async def go():
        release = gate()

        async def slow_wrong():
            checked.append(1)
            await release.wait()
            return None

        async def wrong():
            checked.append(1)
            return None

        await t.attempt("198.51.100.7", "bob", wrong)          # the address is dirty now
        first = asyncio.ensure_future(t.attempt("198.51.100.7", "bob", slow_wrong))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        with pytest.raises(LoginThrottled):
            await t.attempt("198.51.100.7", "bob", wrong)
        release.set()
        assert await first is None

    _run(go())
    assert len(checked) == 2 and t.throttled == 1


def test_throttle_refuses_when_the_turn_is_further_off_than_the_maximum_delay():
    clock = Clock()
    t = LoginThrottle(FailurePolicy(base_delay=1, max_delay=4, rate=(1, 60), clock=clock), sleep=clock.sleep)

    async def wrong():
        return None

    async def go():
        await t.attempt("198.51.100.1", "u1", wrong)
        await t.attempt("198.51.100.2", "u2", wrong)
        clock.now += 5
        await t.attempt("198.51.100.1", "u1", wrong)    # takes the server-wide slot for 60 s
        with pytest.raises(LoginThrottled) as e:
            await t.attempt("198.51.100.2", "u2", wrong)
        assert e.value.retry_after > 4 and "try again in" in str(e.value)

    _run(go())


def test_zero_base_delay_turns_the_throttle_off():
    t = LoginThrottle(FailurePolicy(base_delay=0))

    async def wrong():
        return None

    async def go():
        for _ in range(20):
            assert await t.attempt("198.51.100.1", "u", wrong) is None

    _run(go())
    assert t.checks == 20 and t.throttled == 0


def test_log_limiter_says_it_once_then_counts():
    records = []

    class H(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("test.netlimits.limiter")
    logger.addHandler(H())
    logger.propagate = False
    clock = Clock()
    lim = LogLimiter(logger, interval=60, clock=clock)
    for _ in range(1000):
        lim.warning("emfile", "out of file descriptors")
    clock.now += 61
    lim.warning("emfile", "out of file descriptors")
    assert records == ["out of file descriptors", "out of file descriptors (999 more times since the last message)"]


def test_config_keys_check_values(tmp_path):
    import fetchdeliver.imapserver.settings as imap_settings
    from fetchdeliver.errors import ConfigError

    keys = imap_settings.IMAP_KEYS
    assert keys["login_timeout"]("90s", "f") == 90 and keys["login_timeout"](0.5, "f") == 0.5
    assert parse_rate("60/1m") == (60, 60) and parse_rate("5/s") == (5, 1)
    for key, bad in (("login_failure_rate", "fast"), ("max_connections", 0), ("max_connections_per_ip", True),
                     ("login_timeout", -1), ("login_timeout", 0)):
        with pytest.raises(ValueError):
            keys[key](bad, "f")
    cfg = tmp_path / "config.toml"
    cfg.write_text('[imap]\nmax_connections_per_ip = 0\n')
    with pytest.raises(ConfigError) as e:
        config.load(str(cfg), cache=False)
    assert "imap.max_connections_per_ip" in str(e.value) and str(cfg) in str(e.value)
    cfg.write_text('[imap]\nlogin_timeout = "20s"\nlogin_failure_rate = "10/1m"\nmax_connections = 50\n')
    opts = imap_settings.limit_options(config.load(str(cfg), cache=False)["imap"])
    assert opts == {"max_connections": 50, "max_connections_per_ip": 100, "login_timeout": 20.0,
                    "login_failure_max_delay": 60.0, "login_failure_rate": (10, 60)}


def test_accepted_connections_have_nagle_off():
    """An answer written in two parts must not wait for the peer's delayed ACK (40 ms per command)."""
    import socket

    from fetchdeliver.netlimits import bind_tcp

    async def main():
        listener = bind_tcp("127.0.0.1", 0)
        client = socket.create_connection(listener.getsockname())
        try:
            conn, _ = await asyncio.get_running_loop().sock_accept(listener)
            _reader, writer = await asyncio.open_connection(sock=conn)
            nodelay = writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            writer.close()
            return nodelay
        finally:
            client.close()
            listener.close()

    assert _run(main())
