"""RFC 8580 fcc in delivery: the queued vacation reply is also filed into the :fcc mailbox."""

from __future__ import annotations

import os

from fetchdeliver.engine import Context, process
from fetchdeliver.message import Message
from fetchdeliver.delivery.maildir import MaildirStore
from fetchdeliver.outbound.queue import OutboundQueue
from fetchdeliver.outbound.settings import OutboundSettings
from fetchdeliver.sieve import compile_text

OPTS = {"extensions": "+fcc"}
RAW = b"From: alice@example.org\nTo: me@example.net\nSubject: Plans\nMessage-ID: <1@example.org>\n\nhello\n"


def run(tmp_path, script):
    store = MaildirStore(str(tmp_path / "Maildir"), fsync=False)
    queue = OutboundQueue(OutboundSettings(state_dir=str(tmp_path / "state")))
    ctx = Context(store, compile_text(script, options=OPTS), sieve_options=OPTS, outbound=queue)
    out = process(Message(RAW, "alice@example.org", ["me@example.net"]), ctx)
    return out, tmp_path / "Maildir"


def files(folder):
    return [p for sub in ("new", "cur") if (folder / sub).is_dir() for p in (folder / sub).iterdir()]


def test_vacation_copy_is_filed(tmp_path):
    out, maildir = run(tmp_path, 'require ["fcc", "vacation", "mailbox"];\n'
                                 'vacation :fcc "Sent" :create :subject "Away" "I am away";\n')
    assert out.status == "delivered", out.errors
    sent = files(maildir / ".Sent")
    assert len(sent) == 1
    copy = sent[0].read_bytes()
    assert b"Subject: Away" in copy and b"I am away" in copy and b"To: <alice@example.org>" in copy
    assert len(files(maildir)) == 1  # the message itself: implicit keep in INBOX


def test_fcc_into_a_missing_mailbox_without_create_does_not_fail_the_message(tmp_path):
    out, maildir = run(tmp_path, 'require ["fcc", "vacation"];\nvacation :fcc "Nowhere" "I am away";\n')
    assert out.status == "delivered", out.errors
    assert not os.path.exists(maildir / ".Nowhere")
    assert len(files(maildir)) == 1
