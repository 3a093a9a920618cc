"""The delivery log: compact Sieve traces, rows written by the engine, search, retention."""

from __future__ import annotations

import sqlite3
import time

from fetchdeliver import deliverylog, engine
from fetchdeliver.config import Settings
from fetchdeliver.message import Message
from fetchdeliver.pipeline import build_context

SCRIPT = """require ["fileinto", "imap4flags"];
if anyof (header :contains "subject" "nothing", header :contains "subject" "invoice") {
    addflag "\\\\Seen";
    fileinto "Bills";
}
"""


def _settings(tmp_path, extra: dict | None = None) -> Settings:
    rules = tmp_path / "rules.sieve"
    rules.write_text(SCRIPT)
    data = {"delivery": {"maildir": str(tmp_path / "Maildir"), "state_dir": str(tmp_path / "state"),
                         "cache_dir": str(tmp_path / "cache"), "rules": str(rules)}}
    data.update(extra or {})
    return Settings(data)


def _deliver(ctx, subject: str, origin: str = "work", sender: str = "a@example.org"):
    raw = f"From: Ann <{sender}>\nSubject: {subject}\n\nx\n".encode()
    return engine.process(Message(raw, sender=sender, recipients=["me@example.org"], origin=origin), ctx)


def test_rows_carry_where_flags_and_the_matching_rule(tmp_path):
    settings = _settings(tmp_path)
    ctx = build_context(settings)
    assert ctx.delivery_log is not None
    assert _deliver(ctx, "invoice 7").status == engine.DELIVERED
    assert _deliver(ctx, "hello", origin="lmtp[127.0.0.1] <me@example.org>").status == engine.DELIVERED
    rows = deliverylog.query(settings.state_dir)
    assert [r["subject"] for r in rows] == ["hello", "invoice 7"]
    hello, invoice = rows
    assert invoice["dest"] == ["maildir:Bills"] and invoice["flags"] == ["\\Seen"]
    assert invoice["store"] == str(tmp_path / "Maildir")
    explained = [deliverylog.describe(t) for t in invoice["trace"]]
    # Tests nested on one line (the false one, the true one, anyof) read as one rule; then the action.
    assert explained == ['rule at line 2 matched `anyof (header :contains "subject" "nothing", '
                         'header :contains "subject" "invoice")`', "line 4: fileinto Bills flags \\Seen"]
    assert hello["trace"] == [] and hello["dest"] == ["maildir:INBOX"]
    assert deliverylog.source_kind(hello["source"]) == "LMTP"
    assert deliverylog.source_kind("deliver") == "MDA"
    assert [r["subject"] for r in deliverylog.query(settings.state_dir, folder="Bills")] == ["invoice 7"]
    assert [r["subject"] for r in deliverylog.query(settings.state_dir, subject="hel")] == ["hello"]
    assert deliverylog.query(settings.state_dir, sender="nobody") == []
    assert deliverylog.query(settings.state_dir, store="/elsewhere") == []
    counts = deliverylog.hourly_counts(settings.state_dir, 24)
    assert len(counts) == 24 and counts[-1] == 2 and sum(counts) == 2
    assert deliverylog.hourly_counts(settings.state_dir, 24, source="work")[-1] == 1


def test_dry_runs_and_disabled_logs_write_nothing(tmp_path):
    settings = _settings(tmp_path, {"log": {"deliveries": False}})
    assert build_context(settings).delivery_log is None
    settings = _settings(tmp_path)
    ctx = build_context(settings, dry_run=True)
    assert ctx.delivery_log is None
    _deliver(ctx, "invoice")
    assert deliverylog.query(settings.state_dir) == []
    assert build_context(settings, delivery_log=False).delivery_log is None


def test_old_rows_expire(tmp_path):
    settings = _settings(tmp_path)
    ctx = build_context(settings)
    _deliver(ctx, "first")
    db = sqlite3.connect(deliverylog.database_path(settings.state_dir))
    db.execute("UPDATE delivery_log SET at = ?", (time.time() - 31 * 86400,))
    db.commit()
    assert deliverylog.expire(db, deliverylog.DEFAULT_KEEP) == 1
    db.commit()
    db.close()
    assert deliverylog.query(settings.state_dir) == []


def test_a_log_that_cannot_be_written_never_fails_the_delivery(tmp_path):
    settings = _settings(tmp_path)
    ctx = build_context(settings)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.sqlite").write_bytes(b"this is not a database" * 100)
    out = _deliver(ctx, "invoice")
    assert out.status == engine.DELIVERED and out.where() == ["maildir:Bills"]


def test_compact_trace_keeps_true_tests_and_actions_with_source_text(tmp_path):
    script = tmp_path / "s.sieve"
    script.write_text('if header :is "x" "y" {\n  discard;\n}\n')
    lines = [f"{script}:1: header test: false", f"{script}:1: header test: true", f"{script}:2: discard",
             "runtime error: boom; keeping the message"]
    out = deliverylog.compact_trace(lines, str(script))
    assert out == [{"line": 1, "what": "header test: true", "src": 'if header :is "x" "y" {'},
                   {"line": 2, "what": "discard", "src": "discard;"},
                   {"line": 0, "what": "runtime error: boom; keeping the message", "src": ""}]
    assert deliverylog.describe(out[0]) == 'rule at line 1 matched `header :is "x" "y"`'


def test_the_mda_imports_neither_the_web_stack_nor_the_log_by_default(tmp_path):
    import subprocess
    import sys

    conf = tmp_path / "config.toml"
    conf.write_text(f'[delivery]\nmaildir = "{tmp_path / "Maildir"}"\nstate_dir = "{tmp_path / "state"}"\n'
                    f'cache_dir = "{tmp_path / "cache"}"\n\n[web]\nlisten = "127.0.0.1:8025"\n')
    code = ("import sys\nfrom fetchdeliver.cli import main\nrc = main(['deliver', '-c', sys.argv[1]])\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn', 'jinja2', "
            "'itsdangerous', 'sqlite3') or m in ('fetchdeliver.deliverylog', 'fetchdeliver.web.app'))\n"
            "print(rc, bad)\n")
    for _ in range(2):  # the second run reads the config from its cache
        r = subprocess.run([sys.executable, "-c", code, str(conf)], input=b"Subject: x\n\nx\n",
                           capture_output=True, timeout=60)
        assert r.stdout.decode().strip() == "0 []", r.stdout + r.stderr
    assert not (tmp_path / "state" / "state.sqlite").exists()
