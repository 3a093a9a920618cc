"""RFC 5293 section 7 in delivery: each store gets the header fields as they were when the
script filed it; the implicit keep gets the final ones."""

from __future__ import annotations

from fetchdeliver.delivery.maildir import MaildirStore
from fetchdeliver.engine import Context, process
from fetchdeliver.message import Message
from fetchdeliver.sieve import compile_text

OPTS = {"extensions": "+editheader"}
RAW = b"From: alice@example.org\nTo: me@example.net\nSubject: Plans\n\nhello\n"


def deliver(tmp_path, script):
    store = MaildirStore(str(tmp_path / "Maildir"), fsync=False)
    ctx = Context(store, compile_text(script, options=OPTS), sieve_options=OPTS)
    out = process(Message(RAW, "alice@example.org", ["me@example.net"]), ctx)
    assert out.status == "delivered", out.errors
    return tmp_path / "Maildir"


def only(folder):
    found = [p for sub in ("new", "cur") if (folder / sub).is_dir() for p in (folder / sub).iterdir()]
    assert len(found) == 1, found
    return found[0].read_bytes()


def test_each_store_gets_the_headers_of_its_time(tmp_path):
    maildir = deliver(tmp_path, 'require ["editheader", "fileinto", "copy"];\n'
                                'fileinto :copy "Before";\n'
                                'addheader "X-Step" "one";\n'
                                'fileinto :copy "Middle";\n'
                                'deleteheader "Subject";\n')
    before = only(maildir / ".Before")
    middle = only(maildir / ".Middle")
    inbox = only(maildir)  # the implicit keep: after every edit
    assert before == RAW
    assert middle.startswith(b"X-Step: one\n") and b"Subject: Plans" in middle
    assert inbox.startswith(b"X-Step: one\n") and b"Subject:" not in inbox


def test_a_runtime_error_keeps_the_received_message(tmp_path):
    maildir = deliver(tmp_path, 'require ["editheader", "ihave"];\n'
                                'addheader "X-Step" "one";\n'
                                'error "stop here";\n')
    assert only(maildir) == RAW
