"""The daemon's pieces without a server: schedule arithmetic, config tables, watch rules, log formats, status."""

from __future__ import annotations

import json
import logging
import random

import pytest

from fetchdeliver.config import ConfigErrors, validate
from fetchdeliver.daemon import logsetup
from fetchdeliver.daemon.idle import backoff
from fetchdeliver.daemon.scheduler import describe_interval, jittered, next_delay
from fetchdeliver.daemon.settings import parse_rate
from fetchdeliver.daemon.watch import WatchRule, WatchRules, _Limiter
from fetchdeliver.message import Message

ACC = {"name": "a", "protocol": "imap", "host": "h", "user": "u", "password": "p"}


def test_schedule_jitter_and_backoff():
    rnd = random.Random(1)
    values = [jittered(300, 0.1, rnd) for _ in range(200)]
    assert all(270 <= v <= 330 for v in values) and len(set(values)) > 100
    assert next_delay(300, 0, 3600) == 300
    assert [next_delay(300, n, 3600) for n in (1, 2, 3, 4, 5, 6)] == [300, 600, 1200, 2400, 3600, 3600]
    assert next_delay(7200, 3, 3600) == 7200          # never sooner than the interval itself
    assert [backoff(n) for n in (0, 1, 2, 3, 10, 20)] == [0, 1, 2, 4, 300, 300]
    assert describe_interval(300) == "5m" and describe_interval(3600) == "1h" and describe_interval(90) == "90s"


def test_rate_limit_syntax():
    assert parse_rate("10/1m") == (10, 60)
    assert parse_rate("3/h") == (3, 3600)
    for bad in ("10", "x/1m", "0/1m", "10/soon"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def _errors(data: dict) -> str:
    with pytest.raises(ConfigErrors) as e:
        validate(data, "/cfg.toml")
    return str(e.value)


def test_config_tables_and_account_keys():
    out = validate({"account": [dict(ACC, poll="5m", idle=True)], "daemon": {"poll": "2m", "jitter": 0.2},
                    "spool": {"dir": "spool"},
                    "watch": [{"from": "a@b.c", "command": "notify-send", "rate_limit": "5/1m"}]}, "/etc/x/cfg.toml")
    assert out["account"][0]["poll"] == 300 and out["account"][0]["idle"] is True
    assert out["daemon"] == {"poll": 120, "jitter": 0.2}
    assert out["spool"]["dir"] == "/etc/x/spool"
    assert "daemon.pol: unknown key" in _errors({"daemon": {"pol": "5m"}})
    assert "account[0] (a).poll" in _errors({"account": [dict(ACC, poll="often")]})
    assert "account[0] (a).idle: IDLE is an IMAP feature" in _errors(
        {"account": [dict(ACC, protocol="pop3", idle=True)]})
    assert "watch[0] (w).command: a watch rule needs `command` or `mailto`" in _errors(
        {"watch": [{"name": "w", "from": "x@y"}]})
    assert "watch[0].subject: not a valid regular expression" in _errors(
        {"watch": [{"subject": "(", "command": "c"}]})
    assert "daemon.idle_renew: must be below 29 minutes" in _errors({"daemon": {"idle_renew": "30m"}})
    assert "spool.dir: missing required key" in _errors({"spool": {"rules": "r"}})


def _m(frm: str, subject: str) -> Message:
    return Message(f"From: {frm}\r\nSubject: {subject}\r\n\r\nx\r\n".encode())


def test_watch_rule_matching():
    rules = WatchRules([WatchRule({"name": "a", "from": ["alice@example.com", "*@boss.example"]}, 0),
                        WatchRule({"name": "s", "subject": "(?i)urgent", "accounts": ["work"]}, 1),
                        WatchRule({"name": "both", "from": ["bob@x.org"], "subject": "^re:"}, 2)])
    names = lambda m, acc="home": [r.name for r in rules.matching(m, acc)]  # noqa: E731
    assert names(_m("Alice <ALICE@example.com>", "hi")) == ["a"]
    assert names(_m("ceo@boss.example", "hi")) == ["a"]
    assert names(_m("carol@example.com", "alice@example.com")) == []
    assert names(_m("x@y", "URGENT: now"), "work") == ["s"]
    assert names(_m("x@y", "URGENT: now"), "home") == []
    assert names(_m("bob@x.org", "re: lunch")) == ["both"]
    assert names(_m("bob@x.org", "lunch")) == []
    assert names(_m("=?utf-8?q?Al=C3=AFce?= <alice@example.com>", "=?utf-8?q?Caf=C3=A9?=")) == ["a"]


def test_rate_limiter(caplog):
    rule = WatchRule({"name": "r", "subject": "x", "rate_limit": "3/1m"}, 0)
    lim = _Limiter()
    with caplog.at_level(logging.WARNING):
        got = [lim.allow(rule, t) for t in (0, 1, 2, 3, 4, 5)]
        assert got == [True, True, True, False, False, False]
        assert lim.allow(rule, 61)        # the window moved on
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("rate limit 3/1m reached" in m for m in msgs) == 1
    assert any("3 notifications were suppressed" in m for m in msgs)


def _record(level=logging.ERROR, msg="work: LOGIN failed", **extra):
    r = logging.LogRecord("fetchdeliver.daemon", level, __file__, 1, msg, (), None)
    for k, v in extra.items():
        setattr(r, k, v)
    return r


def test_log_formats(monkeypatch):
    assert logsetup.JournalFormatter().format(_record()) == "<3>work: LOGIN failed"
    assert logsetup.JournalFormatter().format(_record(logging.INFO, "a\nb")) == "<6>a\n<6>b"
    line = json.loads(logsetup.JsonFormatter().format(_record(account="work")))
    assert line["level"] == "error" and line["account"] == "work" and line["message"] == "work: LOGIN failed"
    assert line["time"].endswith("Z")
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    assert logsetup.under_systemd()
    monkeypatch.delenv("JOURNAL_STREAM")
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    assert not logsetup.under_systemd()
    assert "2026" not in logsetup.JournalFormatter().format(_record())


def test_status_reads_what_the_writer_wrote(tmp_path):
    from fetchdeliver.daemon.status import StatusWriter, format_status, read_status
    from fetchdeliver.state import State

    with State(str(tmp_path)) as st:
        w = StatusWriter(st)
        w.started("/cfg.toml")
        w.listeners([{"kind": "lmtp", "where": "127.0.0.1:2424"}])
        w.account("work", mode="poll every 5m", last_poll=1000.0, result="ok: 1 fetched", next_poll=1300.0)
        w.account("home", mode="idle", last_poll=1000.0, result="failed: x", error="LOGIN: no", failures=2)
        first_since = read_status(str(tmp_path))["accounts"][0]["error_since"]
        w.account("home", mode="idle", last_poll=1100.0, result="failed: x", error="LOGIN: no", failures=3)
        text = format_status(read_status(str(tmp_path)), ["work", "home", "new"], now=1200.0)
    assert read_status(str(tmp_path))["accounts"][0]["error_since"] == first_since  # same error: same since
    assert "daemon: running, pid" in text
    assert "  work (poll every 5m):" in text and "result:    ok: 1 fetched" in text
    assert "error:     LOGIN: no" in text and "3 failures in a row" in text
    assert "  new: never polled" in text
    assert "lmtp: 127.0.0.1:2424" in text and "outbound queue: 0 messages" in text
