"""editheader: protected headers, by default and configured (editheader_protected/_forbid_add/_forbid_delete)."""

from __future__ import annotations

from fetchdeliver.message import Message
from fetchdeliver.sieve import SieveEnv, compile_text, run

RAW = b"Received: by mx\nDelivery-Date: today\nX-Friep: 3\nSubject: hi\n\nbody\n"
SCRIPT = ('require "editheader";\ndeleteheader "received";\ndeleteheader "delivery-date";\n'
          'deleteheader "x-friep";\ndeleteheader "subject";\naddheader "X-Frop" "1";\n')


def edited(**options) -> bytes:
    opts = {"extensions": "+editheader", **options}
    msg = Message(RAW, "a@example.org", ["b@example.org"])
    return run(compile_text(SCRIPT, options=opts), msg, SieveEnv(msg, options=opts)).message.raw


def test_default_protection():
    out = edited()
    assert b"Received: by mx" in out and b"Delivery-Date" not in out and b"Subject" not in out
    assert out.startswith(b"X-Frop: 1\n")


def test_configured_protection_never_covers_subject():
    out = edited(editheader_protected="delivery-date x-frop subject")
    assert b"Delivery-Date: today" in out and b"X-Frop" not in out and b"Subject" not in out
    out = edited(editheader_forbid_delete="x-friep", editheader_forbid_add="x-frop")
    assert b"X-Friep: 3" in out and b"X-Frop" not in out and b"Delivery-Date" not in out
