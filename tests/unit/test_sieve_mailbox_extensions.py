"""special-use (RFC 8579) and mailboxid (RFC 9042): where fileinto goes, and the tests."""

from __future__ import annotations

import pytest

from fetchdeliver.message import Message
from fetchdeliver.sieve import SieveEnv, compile_text, run
from fetchdeliver.sieve.errors import SieveCompileError

MSG = Message(b"From: a@example.org\nSubject: x\n\nbody\n", "a@example.org", ["me@example.net"])
OPTS = {"extensions": "+special-use +mailboxid"}


def folders(script: str, **options) -> list[str]:
    compiled = compile_text(script, options=OPTS)
    env = SieveEnv(MSG, options={**OPTS, **options}, mailbox_exists=lambda n: n in ("INBOX", "Spam", "Work"))
    return [a.mailbox for a in run(compiled, MSG, env).actions]


def test_specialuse_files_into_the_mailbox_with_the_attribute():
    script = 'require ["fileinto", "special-use"];\nfileinto :specialuse "\\\\Junk" "Junk";\n'
    assert folders(script, special_use={"\\Junk": "Spam"}) == ["Spam"]
    assert folders(script) == ["Junk"]  # no mailbox has it: the named one (RFC 8579 section 4)


def test_specialuse_exists():
    script = ('require ["special-use", "fileinto"];\n'
              'if specialuse_exists "\\\\Junk" { fileinto "yes"; }\n'
              'if specialuse_exists "Spam" "\\\\Junk" { fileinto "on-spam"; }\n'
              'if specialuse_exists "Work" "\\\\Junk" { fileinto "on-work"; }\n')
    assert folders(script, special_use={"\\Junk": "Spam"}) == ["yes", "on-spam"]
    assert folders(script) == ["INBOX"]


def test_specialuse_attribute_is_checked():
    with pytest.raises(SieveCompileError) as e:
        compile_text('require ["fileinto", "special-use"];\nfileinto :specialuse "Junk" "x";\n', options=OPTS)
    assert "invalid special-use flag 'Junk'" in str(e.value)
    with pytest.raises(SieveCompileError):
        compile_text('require "special-use";\n')  # off by default, as in Pigeonhole


def test_mailboxid():
    script = ('require ["fileinto", "mailboxid"];\n'
              'if mailboxidexists "F2212" { fileinto :mailboxid "F2212" "Lost"; }\n'
              'else { fileinto :mailboxid "F9999" "Fallback"; }\n')
    assert folders(script, mailbox_ids={"F2212": "Work"}) == ["Work"]
    assert folders(script, mailbox_ids={"F2212": "Gone"}) == ["Fallback"]  # the mailbox no longer exists
    with pytest.raises(SieveCompileError) as e:
        compile_text('require ["fileinto", "mailboxid"];\nfileinto :mailboxid "a b" "x";\n', options=OPTS)
    assert "invalid mailbox id 'a b'" in str(e.value)
