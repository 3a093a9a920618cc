"""The [filter] clients' answer parsers, header folding, Sieve defaults and the lazy import."""

import os
import subprocess
import sys

import pytest

from fetchdeliver.config import ConfigError, validate
from fetchdeliver.errors import FilterUnavailable
from fetchdeliver.filter import Filter, add_headers, clamd, rspamd, spamd
from fetchdeliver.filter.verdict import SpamVerdict, fold
from fetchdeliver.message import Message


def test_spamd_answer():
    v = spamd.parse(b"SPAMD/1.1 0 EX_OK\r\nContent-length: 12\r\nSpam: True ; 1000.5 / 5.0\r\n\r\n"
                    b"GTUBE,NO_DNS\r\n")
    assert (v.spam, v.score, v.required, v.tests) == (True, 1000.5, 5.0, ["GTUBE", "NO_DNS"])
    v = spamd.parse(b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; -1.2 / 5.0\r\n\r\n")
    assert (v.spam, v.score, v.tests) == (False, -1.2, [])


@pytest.mark.parametrize("answer,why", [
    (b"SPAMD/1.0 76 Bad header line: x\r\n", "error 76"),
    (b"", "without an answer"),
    (b"HTTP/1.1 400 Bad\r\n\r\n", "not a SPAMD answer"),
    (b"SPAMD/1.1 0 EX_OK\r\n\r\n", "no Spam header"),
])
def test_spamd_bad_answers_are_unavailable(answer, why):
    with pytest.raises(FilterUnavailable, match=why):
        spamd.parse(answer, "spamd 127.0.0.1:783")


def test_clamd_answers():
    assert clamd.parse(b"stream: OK\0").infected is False
    v = clamd.parse(b"stream: Eicar-Test-Signature FOUND\0")
    assert (v.infected, v.name) == (True, "Eicar-Test-Signature")
    with pytest.raises(FilterUnavailable, match="size limit exceeded"):
        clamd.parse(b"INSTREAM size limit exceeded. ERROR\0")
    with pytest.raises(FilterUnavailable, match="ERROR"):
        clamd.parse(b"stream: Can't allocate memory ERROR\0")


def test_rspamd_answers():
    v = rspamd.parse(b'{"is_skipped":false,"score":7.5,"required_score":15.0,"action":"add header",'
                     b'"symbols":{"B":{},"A":{}}}')
    assert (v.spam, v.score, v.required, v.tests) == (True, 7.5, 15.0, ["A", "B"])
    v = rspamd.parse(b'{"score":1.0,"required_score":15.0,"action":"no action","symbols":{}}')
    assert v.spam is False
    with pytest.raises(FilterUnavailable, match="not a /checkv2 answer"):
        rspamd.parse(b"<html>")


def test_headers_fold_long_test_lists():
    v = SpamVerdict("spamd", True, 12.25, 5.0, [f"SOME_LONG_RULE_NAME_{i}" for i in range(12)])
    status = dict(v.headers())["X-Spam-Status"]
    block = fold("X-Spam-Status", status, b"\r\n")
    lines = block.split(b"\r\n")[:-1]
    assert len(lines) > 2 and all(len(x) <= 78 for x in lines)
    assert all(x.startswith(b"\t") for x in lines[1:])
    assert b"".join(x.lstrip(b"\t") if i else x for i, x in enumerate(lines)).startswith(
        b"X-Spam-Status: Yes, score=12.2 required=5.0 tests=SOME_LONG_RULE_NAME_0,")


def test_add_headers_keeps_the_message_byte_exact_in_its_line_ending():
    for raw in (b"Subject: x\r\n\r\nbody\r\n", b"Subject: x\n\nbody", b"no headers at all"):
        m = add_headers(Message(raw), [("X-Virus-Scanned", "clamd"), ("X-Virus-Status", "Clean")])
        eol = b"\r\n" if b"\r\n" in raw else b"\n"
        assert m.raw == b"X-Virus-Scanned: clamd" + eol + b"X-Virus-Status: Clean" + eol + raw


def test_sieve_defaults_leave_the_users_settings_alone():
    f = Filter({"spamd": "127.0.0.1:783", "clamd": "/run/clamav/clamd.ctl"})
    opts = f.apply_sieve_defaults({"spamtest_header": "X-Mine", "extensions": ["+editheader", "-virustest"]})
    assert opts["spamtest_header"] == "X-Mine" and "spamtest_header" not in f.applied
    assert opts["virustest_header"].startswith("X-Virus-Status:") and "virustest_header" in f.applied
    # Ours first, so the user's own "-virustest" still wins.
    assert opts["extensions"] == ["+spamtest", "+spamtestplus", "+virustest", "+editheader", "-virustest"]
    from fetchdeliver.sieve.registry import enabled_extensions

    assert "virustest" not in enabled_extensions(opts["extensions"])
    assert "spamtest" in enabled_extensions(opts["extensions"])
    # Bare names replace the default set: the user chose exactly what is enabled.
    assert f.apply_sieve_defaults({"extensions": ["fileinto"]})["extensions"] == ["fileinto"]
    assert "spamtest_header" not in Filter({"clamd": "/x"}).apply_sieve_defaults({})


def test_spamtest_reads_our_headers_with_the_defaults():
    from fetchdeliver import sieve

    opts = Filter({"spamd": "127.0.0.1:783", "clamd": "/x"}).apply_sieve_defaults({})
    script = sieve.compile_text(
        'require ["spamtestplus", "virustest", "fileinto", "variables"];\n'
        'if spamtest :matches "*" { set "s" "${1}"; }\n'
        'if spamtest :percent :matches "*" { set "p" "${1}"; }\n'
        'if virustest :matches "*" { set "v" "${1}"; }\n'
        'fileinto "s${s}-p${p}-v${v}";\n', "t.sieve", options=opts)

    def folder(headers):
        m = add_headers(Message(b"Subject: x\n\nbody\n"), headers)
        r = sieve.run(script, m, sieve.SieveEnv(m, options=opts))
        return [a.mailbox for a in r.actions if a.type == "fileinto"][0]

    spam = SpamVerdict("spamd", True, 1000.0, 5.0, ["GTUBE"]).headers()
    ham = SpamVerdict("spamd", False, -0.5, 5.0, []).headers()
    half = SpamVerdict("spamd", False, 2.5, 5.0, []).headers()
    virus = [("X-Virus-Scanned", "clamd"), ("X-Virus-Status", "Infected (Eicar-Test-Signature)")]
    clean = [("X-Virus-Scanned", "clamd"), ("X-Virus-Status", "Clean")]
    assert folder(spam + virus) == "s10-p100-v5"
    assert folder(ham + clean) == "s1-p0-v1"
    assert folder(half + clean) == "s5-p50-v1"
    assert folder([]) == "s0-p0-v0"  # not scanned: not tested


@pytest.mark.parametrize("table,key", [
    ({"spamd": "127.0.0.1:783", "rspamd": "http://127.0.0.1:11333"}, "filter.spamd"),
    ({"spamd": "127.0.0.1"}, "filter.spamd"),
    ({"clamd": "host:99999"}, "filter.clamd"),
    ({"rspamd": "ftp://x"}, "filter.rspamd"),
    ({"spamd": "127.0.0.1:783", "timeout": "0s"}, "filter.timeout"),
    ({"spamd": "127.0.0.1:783", "on_failure": "drop"}, "filter.on_failure"),
])
def test_config_errors(table, key):
    with pytest.raises(ConfigError) as e:
        validate({"filter": table}, "/etc/fd.toml")
    assert f"/etc/fd.toml: {key}: " in str(e.value)


def test_config_accepts_the_issue_example():
    out = validate({"filter": {"spamd": "127.0.0.1:783", "clamd": "/run/clamav/clamd.ctl",
                               "timeout": "20s", "on_failure": "deliver"}}, "/etc/fd.toml")
    assert out["filter"] == {"spamd": "127.0.0.1:783", "clamd": "/run/clamav/clamd.ctl", "timeout": 20,
                             "on_failure": "deliver"}


LAZY = r"""
import sys
from fetchdeliver.cli import main
rc = main(["deliver", "--maildir", sys.argv[1]])
sys.stderr.write("rc=%s filter-loaded=%s\n" % (rc, any(m.startswith("fetchdeliver.filter") for m in sys.modules)))
"""


def test_mda_without_filter_imports_no_filter_code(tmp_path):
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "cfg"), XDG_CACHE_HOME=str(tmp_path / "cache"),
               XDG_STATE_HOME=str(tmp_path / "state"))
    out = subprocess.run([sys.executable, "-c", LAZY, str(tmp_path / "Mail")], input=b"Subject: x\n\nb\n",
                         capture_output=True, env=env, timeout=60)
    assert b"rc=0 filter-loaded=False" in out.stderr, out.stderr


def test_sieve_test_with_a_filter_config_reads_the_verdict_headers(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[filter]\nspamd = "127.0.0.1:783"\n')
    script = tmp_path / "junk.sieve"
    script.write_text('require ["spamtest", "fileinto", "relational", "comparator-i;ascii-numeric"];\n'
                      'if spamtest :value "ge" :comparator "i;ascii-numeric" "6" { fileinto "Junk"; }\n')
    msg = tmp_path / "m.eml"
    msg.write_bytes(add_headers(Message(b"Subject: x\n\nb\n"),
                                SpamVerdict("spamd", True, 1000.0, 5.0, ["GTUBE"]).headers()).raw)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    run = [sys.executable, "-m", "fetchdeliver", "sieve", "test"]
    out = subprocess.run(run + ["-c", str(cfg), str(script), str(msg)], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "store message in folder: Junk" in out.stdout
    # Without [filter], spamtest stays off as in Pigeonhole.
    out = subprocess.run(run + [str(script), str(msg)], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode != 0 and "unknown Sieve capability 'spamtest'" in out.stderr
