"""Hostile Sieve input cannot stop delivery (issue 19): the poisoned-regex mail, a script over its CPU
budget, a 500-level script and a 5 MB script, through `deliver`, `sieve check`/`sieve test`, the LMTP
server, `fetch` from a real Dovecot and the daemon (which still honours SIGTERM)."""

from __future__ import annotations

import os
import select
import signal
import smtplib
import subprocess

import pytest
from conftest import make_message
from fetchsetup import FetchSetup, lf, originals
from lmtp_support import RawClient, Server, dot_stuff, maildir_messages, split_trace, to_wire, write_config
from test_daemon import daemons, start, wait_for, write_extra  # noqa: F401 (daemons: the fixture)

# The rule and the mail of the report: 2^40 ways to split the a's for a backtracking engine.
POISON_RULES = 'require ["regex", "fileinto"];\nif header :regex "x-bt" "^(a+)+$" {\n  fileinto "Trap";\n}\n'
POISON = (b"From: Mallory <m@example.org>\r\nTo: alice@example.com\r\nSubject: poisoned\r\n"
          b"Message-ID: <poison@example.org>\r\nX-Bt: " + b"a" * 40 + b"!\r\n\r\nbody\r\n")
# A rule that is slow by sheer size (N header values x 2,000 keys, about 3.5 us each: 14 s for 2,000
# values, 28 s for 4,000): only the CPU time budget (or SIGTERM) ends it.
SLOW_RULES = ('require "fileinto";\nif header :matches "x-h" [' + ", ".join(f'"*zz{i}*"' for i in range(2000))
              + '] {\n  fileinto "Never";\n}\n')


def slow_message(values: int = 2000) -> bytes:
    return (b"From: Mallory <m@example.org>\r\nTo: alice@example.com\r\nSubject: slow\r\n"
            b"Message-ID: <slow@example.org>\r\n" + b"".join(b"X-H: " + b"a" * 100 + b"\r\n" for _ in range(values))
            + b"\r\nbody\r\n")


SLOW = slow_message()
DEEP_RULES = "if true {\n" * 500 + "keep;\n" + "}\n" * 500


def run(cmd, args, stdin=b"", timeout=120):
    return subprocess.run(cmd + args, input=stdin, capture_output=True, timeout=timeout)


def new_files(md) -> list[bytes]:
    d = os.path.join(md, "new")
    return [open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))] if os.path.isdir(d) else []


def folders(md) -> list[str]:
    return sorted(n for n in os.listdir(md) if n.startswith(".")) if os.path.isdir(md) else []


# -- deliver (the MDA) ------------------------------------------------------------------------------

def test_deliver_poisoned_regex_mail_is_delivered(tmp_path, fetchdeliver_cmd):
    rules = tmp_path / "rules.sieve"
    rules.write_text(POISON_RULES)
    md = tmp_path / "Mail"
    r = run(fetchdeliver_cmd, ["deliver", "--maildir", str(md), "--rules", str(rules), "-f", "m@example.org"],
            POISON)
    assert r.returncode == 0, r.stderr
    assert new_files(md) == [POISON]          # INBOX, byte-exact
    assert folders(md) == []
    assert b"Traceback" not in r.stderr


def test_deliver_over_budget_keeps_the_message_and_names_the_rule(tmp_path, fetchdeliver_cmd):
    rules = tmp_path / "rules.sieve"
    rules.write_text(SLOW_RULES)
    md = tmp_path / "Mail"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[delivery]\nmaildir = "{md}"\nrules = "{rules}"\nstate_dir = "{tmp_path}/st"\n'
                   f'[sieve]\nmax_run_time = "1s"\n')
    r = run(fetchdeliver_cmd, ["deliver", "-c", str(cfg), "-f", "m@example.org"], SLOW)
    assert r.returncode == 0, r.stderr
    assert new_files(md) == [SLOW]
    err = r.stderr.decode()
    assert f"{rules}:2: error: the script used more than its CPU time budget" in err
    assert "max_run_time = 1s" in err and "implicit keep" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", ["deep", "huge"])
def test_deliver_with_a_script_over_the_limits_keeps_the_message(tmp_path, fetchdeliver_cmd, kind):
    rules = tmp_path / "rules.sieve"
    if kind == "deep":
        rules.write_text(DEEP_RULES)
        expected = f"{rules}:32:1: error: cannot nest command blocks deeper than 32 levels"
    else:
        rules.write_bytes(b'require "fileinto";\nfileinto "' + b"x" * (5 << 20) + b'";\n')
        expected = f"{rules}:1:1: error: script is too large"
    md = tmp_path / "Mail"
    msg = make_message(1, "limits")
    for _ in range(2):  # the second time through the cache: still a clean error, still delivered
        r = run(fetchdeliver_cmd, ["deliver", "--maildir", str(md), "--rules", str(rules)], msg)
        assert r.returncode == 0, r.stderr
        assert expected in r.stderr.decode()
        assert b"Traceback" not in r.stderr
    assert new_files(md) == [msg, msg]


@pytest.mark.parametrize("kind", ["deep", "deep-tests", "huge"])
def test_sieve_check_and_test_report_the_limit(tmp_path, fetchdeliver_cmd, kind):
    rules = tmp_path / "rules.sieve"
    if kind == "deep":
        rules.write_text(DEEP_RULES)
        expected = f"{rules}:32:1: error: cannot nest command blocks deeper than 32 levels"
    elif kind == "deep-tests":
        rules.write_text("if " + "not " * 600 + "true { keep; }\n")
        expected = f"{rules}:1:128: error: cannot nest tests deeper than 32 levels"
    else:
        rules.write_bytes(b"# " + b"x" * (5 << 20) + b"\nkeep;\n")
        expected = f"{rules}:1:1: error: script is too large ({(5 << 20) + 9} bytes; max_script_size is 1048576"
    msg = tmp_path / "m.eml"
    msg.write_bytes(make_message(1))
    for args in (["sieve", "check", str(rules)], ["sieve", "test", str(rules), str(msg)]):
        r = run(fetchdeliver_cmd, args)
        assert r.returncode == 1, r
        assert expected in r.stderr.decode()
        assert b"Traceback" not in r.stderr and b"RecursionError" not in r.stderr


# -- LMTP -----------------------------------------------------------------------------------------------

def test_lmtp_slow_and_poisoned_mail_do_not_hold_up_another_session(tmp_path):
    slow_rules, poison_rules = tmp_path / "slow.sieve", tmp_path / "poison.sieve"
    slow_rules.write_text(SLOW_RULES)
    poison_rules.write_text(POISON_RULES)
    a, b, c = tmp_path / "slow", tmp_path / "other", tmp_path / "poison"
    server = Server(write_config(tmp_path, f"""
        [sieve]
        max_run_time = "3s"
        [[recipient]]
        address = "slow@example.com"
        maildir = "{a}"
        rules = "{slow_rules}"
        [[recipient]]
        address = "other@example.com"
        maildir = "{b}"
        [[recipient]]
        address = "poison@example.com"
        maildir = "{c}"
        rules = "{poison_rules}"
        """))
    try:
        first = RawClient(server.host, server.port)
        assert first.reply()[0] == 220
        assert first.cmd("LHLO t")[0] == 250
        assert first.cmd("MAIL FROM:<m@example.org>")[0] == 250
        assert first.cmd("RCPT TO:<slow@example.com>")[0] == 250
        assert first.cmd("DATA")[0] == 354
        first.send(dot_stuff(to_wire(SLOW)))
        # Meanwhile (the slow run needs 3 s of CPU before its budget ends it), a second session is
        # answered in full: the poisoned mail and a plain one.
        with smtplib.LMTP(server.host, server.port) as second:
            assert second.sendmail("m@example.org", ["poison@example.com"], POISON) == {}
            assert second.sendmail("m@example.org", ["other@example.com"], make_message(1, "lmtp")) == {}
        readable, _, _ = select.select([first.sock], [], [], 0)
        assert not readable and not first.buf, "the slow message was answered before the second session"
        code, lines = first.reply()
        assert code == 250, lines
        first.cmd("QUIT")
        first.close()
    finally:
        server.stop()
    for md, raw in ((a, SLOW), (b, make_message(1, "lmtp")), (c, POISON)):
        stored = maildir_messages(md)
        assert len(stored) == 1
        assert split_trace(stored[0])[1] == raw.replace(b"\r\n", b"\n")
        assert folders(md) == []   # INBOX: implicit keep


# -- fetch from a real Dovecot ------------------------------------------------------------------------------

def test_fetch_delivers_all_20_messages_past_poisoned_and_slow_ones(tmp_path, dovecot, fetchdeliver_cmd):
    rules = tmp_path / "rules.sieve"
    rules.write_text(POISON_RULES + SLOW_RULES.split("\n", 1)[1])
    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd, rules=str(rules))
    setup.account("work", "imap", after="delete")
    write_extra(setup, '[sieve]\nmax_run_time = "1s"\n')
    msgs = [make_message(i, "fetch") for i in range(20)]
    msgs[3] = POISON
    msgs[9] = SLOW
    dovecot.append_many("alice", msgs)
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "CPU time budget" in r.stderr and "rules.sieve:5: error" in r.stderr
    assert sorted(originals(setup.delivered())) == sorted(lf(msgs))
    assert setup.delivered("Trap") == [] and setup.delivered("Never") == []
    assert dovecot.contents("alice") == {}   # every message acknowledged (deleted) after delivery


def test_fetch_with_a_too_deep_script_delivers_to_inbox(tmp_path, dovecot, fetchdeliver_cmd):
    rules = tmp_path / "rules.sieve"
    rules.write_text(DEEP_RULES)
    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd, rules=str(rules))
    setup.account("work", "imap", after="delete")
    msgs = [make_message(i, "deep") for i in range(3)]
    dovecot.append_many("alice", msgs)
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert f"{rules}:32:1: error: cannot nest command blocks deeper than 32 levels" in r.stderr
    assert "Traceback" not in r.stderr and "RecursionError" not in r.stderr
    assert sorted(originals(setup.delivered())) == sorted(lf(msgs))


# -- the daemon ---------------------------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_daemon_delivers_poisoned_mail_and_honours_sigterm_during_a_slow_run(tmp_path, dovecot, fetchdeliver_cmd,
                                                                             daemons):
    rules = tmp_path / "rules.sieve"
    rules.write_text(POISON_RULES + SLOW_RULES.split("\n", 1)[1])
    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd, rules=str(rules))
    setup.account("work", "imap", poll="1s", after="delete")
    write_extra(setup, '[sieve]\nmax_run_time = "10m"\n')  # only SIGTERM can end this run
    slow = slow_message(4000)
    dovecot.append_many("alice", [POISON, slow])
    d = start(daemons, setup)
    wait_for(lambda: setup.count_delivered() == 1, 30, "the poisoned message delivered", proc=d)
    assert originals(setup.delivered()) == [lf(POISON)]
    busy_from = _cpu_seconds(d.p.pid)
    wait_for(lambda: _cpu_seconds(d.p.pid) > busy_from + 1.0, 30, "the slow Sieve run under way", proc=d)
    rc, took = d.stop(signal.SIGTERM, timeout=10)
    assert rc == 0, d.log()
    assert "Traceback" not in d.log()
    # The slow message was not acknowledged: it is still on the server for the next run (the delivered
    # one's delete is recorded and happens at the next start, as docs/daemon.md says).
    assert slow in [raw for _, raw in dovecot.contents("alice").values()]
    assert setup.count_delivered() == 1


def test_daemon_starts_with_a_too_deep_script_and_reload_refuses_one(tmp_path, dovecot, fetchdeliver_cmd, daemons):
    rules = tmp_path / "rules.sieve"
    rules.write_text(DEEP_RULES)
    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd, rules=str(rules))
    setup.account("work", "imap", poll="1s", after="delete")
    write_extra(setup, "[daemon]\nreload = false\n")
    dovecot.append("alice", make_message(1, "deep"))
    d = start(daemons, setup)
    d.wait_log(r"STARTED WITHOUT A SIEVE SCRIPT: .*rules\.sieve:32:1: error: cannot nest command blocks")
    wait_for(lambda: setup.count_delivered() == 1, 30, "implicit keep with the broken script", proc=d)
    assert originals(setup.delivered()) == [lf(make_message(1, "deep"))]
    d.wait_log(r"rules not used, message kept in INBOX: .*cannot nest command blocks")

    rules.write_text('require "fileinto";\nfileinto "Fixed";\n')
    d.p.send_signal(signal.SIGHUP)
    d.wait_log(r"configuration and scripts reloaded")
    dovecot.append("alice", make_message(2, "deep"))
    wait_for(lambda: len(setup.delivered("Fixed")) == 1, 30, "the fixed script in use", proc=d)

    rules.write_text(DEEP_RULES)
    d.p.send_signal(signal.SIGHUP)
    d.wait_log(r"the new configuration is refused, the running one stays: .*cannot nest command blocks")
    dovecot.append("alice", make_message(3, "deep"))
    wait_for(lambda: len(setup.delivered("Fixed")) == 2, 30, "the kept script in use", proc=d)
    rc, _ = d.stop()
    assert rc == 0
    log = d.log()
    assert "Traceback" not in log and "never retrieved" not in log and "RecursionError" not in log
