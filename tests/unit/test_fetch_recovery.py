"""After a crash, pending deliveries are looked up by their token: only complete messages count."""

import hashlib
import os
import time

from fetchdeliver.delivery.maildir import MaildirStore
from fetchdeliver.delivery.mbox import MboxStore
from fetchdeliver.sources.recovery import find_tokens


def with_token(token: str, raw: bytes) -> bytes:
    return f"Received: from h by me with IMAPS id {token}; now\r\n".encode() + raw


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


RAW_A = b"Subject: a\r\n\r\nFrom the body\r\n>From quoted\r\n"
RAW_B = b"Subject: b\r\n\r\n" + b"b" * 5000 + b"\r\n"
RAW_C = b"Subject: c\r\n\r\nno final newline"


def test_maildir_counts_new_and_cur_but_not_tmp(tmp_path):
    store = MaildirStore(str(tmp_path / "Mail"))
    store.deliver(with_token("fdAAAA", RAW_A))
    store.deliver(with_token("fdBBBB", RAW_B), "Lists/x", ["\\Seen"])
    os.makedirs(tmp_path / "Mail" / "tmp", exist_ok=True)
    (tmp_path / "Mail" / "tmp" / "123.partial").write_bytes(with_token("fdCCCC", RAW_C)[:40])
    wanted = {"fdAAAA": digest(RAW_A), "fdBBBB": digest(RAW_B), "fdCCCC": digest(RAW_C)}
    assert find_tokens([str(tmp_path / "Mail")], wanted, time.time() - 60) == {"fdAAAA", "fdBBBB"}
    # Mail older than the pending rows is not even read.
    assert find_tokens([str(tmp_path / "Mail")], wanted, time.time() + 3600) == set()


def test_mbox_ignores_a_message_cut_short_by_a_crash(tmp_path):
    box = str(tmp_path / "mbox")
    store = MboxStore(box)
    store.deliver(with_token("fdAAAA", RAW_A), sender="a@x")
    store.deliver(with_token("fdCCCC", RAW_C), sender="c@x")
    # A writer killed mid-append: half of B, then the next delivery goes on after it.
    with open(box, "ab") as f:
        f.write(b"From b@x Mon Nov 24 10:00:00 2025\n" + with_token("fdBBBB", RAW_B)[:3000])
    store.deliver(b"Subject: later\r\n\r\nafter the crash\r\n", sender="d@x")
    wanted = {"fdAAAA": digest(RAW_A), "fdBBBB": digest(RAW_B), "fdCCCC": digest(RAW_C)}
    assert find_tokens([box], wanted, time.time() - 60) == {"fdAAAA", "fdCCCC"}


def test_mbox_recognises_a_message_stored_with_lf_for_its_crlf_wire_digest(tmp_path):
    """fetch stores CRLF as LF (the default); the pending row's digest is of the wire bytes."""
    from fetchdeliver.sources.runner import stored_bytes

    box = str(tmp_path / "mbox")
    store = MboxStore(box)
    store.deliver(stored_bytes(with_token("fdAAAA", RAW_A)), sender="a@x")
    store.deliver(stored_bytes(with_token("fdCCCC", RAW_C)), sender="c@x")
    with open(box, "ab") as f:
        f.write(b"From b@x Mon Nov 24 10:00:00 2025\n" + stored_bytes(with_token("fdBBBB", RAW_B))[:3000])
    wanted = {"fdAAAA": digest(RAW_A), "fdBBBB": digest(RAW_B), "fdCCCC": digest(RAW_C)}
    assert find_tokens([box], wanted, time.time() - 60) == {"fdAAAA", "fdCCCC"}
