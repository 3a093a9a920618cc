"""Back-off when a provider throttles or is down, per server, shown in `status`, reset on success.

Microsoft 365's "Suggested Backoff Time" and Gmail's "Too many simultaneous connections" come from
the scripted responder (no server here says them), each case named after the provider behaviour.
"""

from __future__ import annotations

import re

import pytest
from conftest import make_message
from fetchsetup import FetchSetup, lf, originals, toml_value
from scripted_imap import GmailTooManySimultaneousConnections, MicrosoftThrottlesWithSuggestedBackoff
from test_daemon import DaemonProc, status, wait_for


@pytest.fixture
def daemons():
    started: list[DaemonProc] = []
    yield started
    for d in started:
        d.kill()


def _config(tmp_path, port: int, extra: str = "", **keys) -> FetchSetup:
    s = FetchSetup(tmp_path, None, [])
    acc = {"name": "provider", "protocol": "imap", "host": "127.0.0.1", "port": port, "tls": "none",
           "user": "alice", "password": "secret", "poll": "1s", **keys}
    with open(s.config, "w") as f:
        f.write(f"[delivery]\nmaildir = {toml_value(s.maildir)}\nstate_dir = {toml_value(s.state_dir)}\n\n"
                "[[account]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in acc.items()) + extra)
    return s


def _daemon(setup, cmd, daemons) -> DaemonProc:
    setup.cmd = cmd
    d = DaemonProc(cmd, setup.config, str(setup.dir / "daemon.log"))
    daemons.append(d)
    d.wait_log(r"ready: ")
    return d


def test_microsoft_suggested_backoff_time_is_waited_and_shown_then_reset(tmp_path, fetchdeliver_cmd, daemons):
    raw = make_message(1, "ms")
    with MicrosoftThrottlesWithSuggestedBackoff(messages=[raw], backoff_ms=6000) as srv:
        setup = _config(tmp_path, srv.port)
        d = _daemon(setup, fetchdeliver_cmd, daemons)
        d.wait_log(r"provider: 127\.0\.0\.1:\d+ asks us to wait \(Suggested Backoff Time: 6000 milliseconds\)")
        out = status(setup)
        assert re.search(rf"servers backing off:\n  127\.0\.0\.1:{srv.port}: no connection until \S+ \S+ \(in \d+s\) "
                         r"after Suggested Backoff Time: 6000 milliseconds \(1 throttling reply in a row\)", out), out
        assert "result:    waiting: 127.0.0.1:" in out or "Request is throttled" in out, out
        wait_for(lambda: setup.count_delivered() == 1, 30, "delivery after the back-off", proc=d)
        assert originals(setup.delivered()) == [lf(raw)]
        # The poll interval is 1s, but nobody connected again before the suggested time was over.
        first, second = srv.connections[0], srv.connections[1]
        assert first["refused"].startswith("2 NO Request is throttled") or "Request is throttled" in first["refused"]
        assert second["at"] - first["at"] >= 6.0, srv.connections
        d.wait_log(r"127\.0\.0\.1:\d+ answers normally again: back-off over")
        assert "servers backing off: none" in status(setup)
        assert d.stop()[0] == 0


def test_gmail_too_many_simultaneous_connections_backs_off_then_resets(tmp_path, fetchdeliver_cmd,
                                                                                   daemons):
    raw = make_message(1, "gmail")
    with GmailTooManySimultaneousConnections(messages=[raw], refused=2) as srv:
        # backoff_max caps the per-server wait (first 60 s, then doubled): 2 s keeps the test short.
        setup = _config(tmp_path, srv.port, extra='\n[daemon]\nbackoff_max = "2s"\n')
        d = _daemon(setup, fetchdeliver_cmd, daemons)
        d.wait_log(r"asks us to wait \(\[ALERT\] Too many simultaneous connections\.")
        wait_for(lambda: setup.count_delivered() == 1, 30, "delivery once Gmail takes the login", proc=d)
        assert [c["refused"] is not None for c in srv.connections[:3]] == [True, True, False]
        assert srv.connections[1]["at"] - srv.connections[0]["at"] >= 2.0
        assert srv.connections[2]["at"] - srv.connections[1]["at"] >= 2.0
        d.wait_log(r"answers normally again: back-off over")
        assert "servers backing off: none" in status(setup)
        assert d.stop()[0] == 0


def test_dovecot_unavailable_during_an_auth_outage_backs_off_push_and_polls_then_resets(
        tmp_path, dovecot_outage, fetchdeliver_cmd, daemons):
    import os

    dc = dovecot_outage
    open(dc.outage_flag, "w").close()
    setup = FetchSetup(tmp_path, dc, fetchdeliver_cmd)
    setup.account("work", "imap", idle=True, poll="1s")
    with open(setup.config, "a") as f:
        f.write('\n[daemon]\nbackoff_max = "2s"\n')
    d = _daemon(setup, fetchdeliver_cmd, daemons)
    d.wait_log(r"work: 127\.0\.0\.1:\d+ asks us to wait \(\[UNAVAILABLE\] Temporary authentication failure")
    out = wait_for(lambda: (lambda t: t if "after [UNAVAILABLE] Temporary authentication failure" in t else None)(
        status(setup)), 20, "the back-off in status", proc=d)
    assert re.search(rf"servers backing off:\n  127\.0\.0\.1:{dc.port('imaps')}: no connection until ", out), out
    raw = make_message(1, "outage")
    dc.append("alice", raw)
    os.unlink(dc.outage_flag)   # the auth backend is back
    wait_for(lambda: setup.count_delivered() == 1, 30, "delivery after the outage", proc=d)
    d.wait_log(r"answers normally again: back-off over")
    d.wait_log(r"work: (IDLE connected on INBOX|NOTIFY connected)")
    assert originals(setup.delivered()) == [lf(raw)]
    wait_for(lambda: "servers backing off: none" in status(setup), 20, "the back-off reset in status", proc=d)
    assert d.stop()[0] == 0
