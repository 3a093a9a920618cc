"""vnd.dovecot.report: an RFC 5965 feedback report queued for sending."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from fetchdeliver.delivery.maildir import MaildirStore
from fetchdeliver.engine import Context, process
from fetchdeliver.message import Message
from fetchdeliver.outbound.queue import OutboundQueue
from fetchdeliver.outbound.settings import OutboundSettings
from fetchdeliver.sieve import compile_text
from fetchdeliver.sieve.errors import SieveCompileError

OPTS = {"extensions": "+vnd.dovecot.report"}
RAW = b"From: spammer@example.org\nTo: me@example.net\nSubject: Cheap\n\nBuy now\n"


def queued(tmp_path, script, **options):
    queue = OutboundQueue(OutboundSettings(state_dir=str(tmp_path / "state"), queue={"hostname": "mx.example.net"}))
    opts = {**OPTS, **options}
    ctx = Context(MaildirStore(str(tmp_path / "Maildir"), fsync=False), compile_text(script, options=opts),
                  sieve_options=opts, outbound=queue)
    out = process(Message(RAW, "spammer@example.org", ["me@example.net"]), ctx)
    assert out.status == "delivered", out.errors
    items = queue.due(all_items=True)
    return [(i, message_from_bytes(open(f"{queue.msg_dir}/{i.id}", "rb").read(), policy=policy.compat32))
            for i in items]


def test_report_is_queued_as_arf(tmp_path):
    [(item, msg)] = queued(tmp_path, 'require "vnd.dovecot.report";\nreport "abuse" "This is spam" "abuse@example.com";\n')
    assert (item.kind, item.sender, item.recipient) == ("report", "", "abuse@example.com")
    assert msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "feedback-report"
    assert msg["From"] == "postmaster@mx.example.net" and msg["To"] == "abuse@example.com"
    text, feedback, original = msg.get_payload()
    assert "This is spam" in text.get_payload()
    assert "Feedback-Type: abuse" in str(feedback) and "Original-Mail-From: <spammer@example.org>" in str(feedback)
    assert original.get_content_type() == "message/rfc822" and "Buy now" in str(original)


def test_headers_only_and_from(tmp_path):
    [(_, msg)] = queued(tmp_path, 'require "vnd.dovecot.report";\n'
                                  'report :headers_only "abuse" "spam" "abuse@example.com";\n',
                        report_from="recipient")
    assert msg["From"] == "me@example.net"
    assert msg.get_payload()[2].get_content_type() == "text/rfc822-headers"
    assert "Buy now" not in msg.as_string()


def test_report_arguments_are_checked():
    with pytest.raises(SieveCompileError) as e:
        compile_text('require "vnd.dovecot.report";\nreport "abuse" "x" "not an address";\n', options=OPTS)
    assert "specified address 'not an address' is invalid" in str(e.value)
