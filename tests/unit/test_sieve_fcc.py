"""RFC 8580 fcc on vacation and notify: the action carries where the copy goes."""

from __future__ import annotations

import pytest

from fetchdeliver.message import Message
from fetchdeliver.sieve import SieveEnv, compile_text, run
from fetchdeliver.sieve.errors import SieveCompileError

MSG = Message(b"From: a@example.org\nTo: me@example.net\nSubject: hi\n\nbody\n", "a@example.org",
              ["me@example.net"])
OPTS = {"extensions": "+fcc"}


def actions(script):
    res = run(compile_text(script, options=OPTS), MSG, SieveEnv(MSG, options=OPTS))
    assert not res.errors, res.errors
    return [a.to_json() for a in res.actions]


def test_vacation_and_notify_carry_fcc():
    out = actions('require ["fcc", "vacation", "enotify", "imap4flags", "mailbox"];\n'
                  'vacation :fcc "Sent" :flags "\\\\Seen" :create "away";\n'
                  'notify :fcc "Notes" "mailto:me@example.net";\n')
    assert out[0]["fcc"] == {"mailbox": "Sent", "flags": ["\\Seen"], "create": True}
    assert out[1]["fcc"] == {"mailbox": "Notes", "flags": [], "create": False}


def test_fcc_tags_are_checked():
    with pytest.raises(SieveCompileError) as e:
        compile_text('require ["fcc", "vacation", "imap4flags"];\nvacation :flags "\\\\Seen" "x";\n', options=OPTS)
    assert ":flags tag of the vacation command needs :fcc" in str(e.value)
    with pytest.raises(SieveCompileError) as e:
        compile_text('require ["fcc", "vacation"];\nvacation :fcc "Sent" :create "x";\n', options=OPTS)
    assert 'needs require "mailbox"' in str(e.value)
    with pytest.raises(SieveCompileError):
        compile_text('require ["vacation"];\nvacation :fcc "Sent" "x";\n', options=OPTS)
