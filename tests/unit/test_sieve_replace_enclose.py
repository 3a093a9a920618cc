"""RFC 5703 replace and enclose: the message the script leaves for delivery."""

from __future__ import annotations

from email import message_from_bytes, policy

from fetchdeliver.message import Message
from fetchdeliver.sieve import SieveEnv, compile_text, run

OPTS = {"extensions": "+replace +enclose"}
RAW = (b"From: Alice <alice@example.org>\nTo: me@example.net\nSubject: Report\nX-Keep: yes\n"
       b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b1\n\n--b1\nContent-Type: text/plain\n\n"
       b"hello\n--b1\nContent-Type: application/zip\n\nUEsDBAo=\n--b1--\n")


def result(script: str, raw: bytes = RAW):
    msg = Message(raw, "alice@example.org", ["me@example.net"])
    res = run(compile_text(script, options=OPTS), msg, SieveEnv(msg, options=OPTS, hostname="example.net"))
    assert not res.errors, res.errors
    return res


def test_replace_whole_message_keeps_headers_and_renames_subject_and_from():
    res = result('require ["replace", "fileinto"];\n'
                 'replace :subject "Replaced" :from "bot@example.net" "gone";\n'
                 'if header :is "subject" "Replaced" { fileinto "later-tests-see-it"; }\n')
    out = message_from_bytes(res.message.raw, policy=policy.compat32)
    assert out["Subject"] == "Replaced" and out["Original-Subject"] == "Report"
    assert out["From"] == "bot@example.net" and out["Original-From"] == "Alice <alice@example.org>"
    assert out["X-Keep"] == "yes" and out.get_content_type() == "text/plain"
    assert out.get_payload().strip() == "gone"
    assert [a.mailbox for a in res.actions] == ["later-tests-see-it"]


def test_replace_inside_foreverypart_replaces_the_current_part():
    res = result('require ["replace", "foreverypart", "mime"];\n'
                 'foreverypart { if header :mime :type "content-type" "application" {\n'
                 '  replace :mime text:\nContent-Type: text/plain\n\nattachment removed\n.\n; } }\n')
    out = message_from_bytes(res.message.raw, policy=policy.compat32)
    parts = out.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/plain"]
    assert parts[0].get_payload().strip() == "hello"
    assert parts[1].get_payload().strip() == "attachment removed"
    assert out["Subject"] == "Report"


def test_enclose_wraps_the_original_and_last_enclose_wins():
    res = result('require "enclose";\nenclose :subject "first" "one";\n'
                 'enclose :subject "Suspicious: Report" :headers ["X-Scanned: yes"] "Look at this";\n')
    out = message_from_bytes(res.message.raw, policy=policy.compat32)
    assert out["Subject"] == "Suspicious: Report" and out["X-Scanned"] == "yes"
    assert out["From"] == "me@example.net" and out["Message-ID"] and out["Date"]
    text, inner = out.get_payload()
    assert text.get_payload().strip() == "Look at this"
    assert inner.get_content_type() == "message/rfc822"
    enclosed = inner.get_payload()[0]
    assert enclosed["Subject"] == "Report" and enclosed.get_content_type() == "multipart/mixed"
    assert RAW.split(b"\n\n", 1)[1] in res.message.raw  # the original body, byte for byte


def test_off_by_default():
    import pytest

    from fetchdeliver.sieve.errors import SieveCompileError

    with pytest.raises(SieveCompileError):
        compile_text('require "enclose";\n')
