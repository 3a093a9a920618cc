"""vnd.dovecot.debug, vnd.dovecot.environment, vnd.dovecot.duplicate, and duplicate within one run."""

from __future__ import annotations

import pytest

from fetchdeliver.message import Message
from fetchdeliver.sieve import SieveEnv, compile_text, run
from fetchdeliver.sieve.errors import SieveCompileError

MSG = Message(b"From: a@example.org\nMessage-ID: <x@example.org>\nSubject: hi\n\nbody\n", "a@example.org",
              ["me@example.net"])


def result(script, trace=False, **options):
    opts = {"extensions": "+vnd.dovecot.debug +vnd.dovecot.environment +vnd.dovecot.duplicate", **options}
    seen: set = set()

    def duplicate_seen(key, seconds):
        was = key in seen
        seen.add(key)
        return was
    env = SieveEnv(MSG, options=opts, trace=trace, auth_user="me", duplicate_seen=duplicate_seen)
    res = run(compile_text(script, options=opts), MSG, env)
    assert not res.errors, res.errors
    return res


def test_debug_log_goes_to_the_trace_and_changes_nothing():
    res = result('require ["vnd.dovecot.debug", "variables"];\nset "x" "42";\ndebug_log "x is ${x}";\n',
                 trace=True)
    assert any("debug_log: x is 42" in line for line in res.trace)
    assert [a.type for a in res.actions] == ["keep"]


def test_vnd_environment_items_and_env_variables():
    script = ('require ["vnd.dovecot.environment", "variables", "fileinto"];\n'
              'if environment :is "vnd.dovecot.default-mailbox" "INBOX" { fileinto "a"; }\n'
              'if environment :is "vnd.dovecot.username" "me" { fileinto "b"; }\n'
              'if environment :is "vnd.dovecot.config.team" "ops" { fileinto "c"; }\n'
              'if string "${env.vnd.dovecot.default_mailbox}" "INBOX" { fileinto "d"; }\n')
    res = result(script, env_team="ops")
    assert [a.mailbox for a in res.actions] == ["a", "b", "c", "d"]
    with pytest.raises(SieveCompileError):
        compile_text('require "vnd.dovecot.environment";\n')  # off by default, as in Pigeonhole


def test_duplicate_twice_in_one_run_and_the_vnd_name():
    script = ('require ["vnd.dovecot.duplicate", "fileinto"];\n'
              'if duplicate { fileinto "dup1"; }\nif duplicate { fileinto "dup2"; }\n')
    assert [a.mailbox for a in result(script).actions] == ["INBOX"]


def test_deprecated_imapflags_mark_and_conflict():
    opts = {"extensions": "+imapflags"}
    script = 'require ["imapflags", "fileinto"];\nmark;\nfileinto "a";\nunmark;\naddflag "$x";\nfileinto "b";\n'
    res = run(compile_text(script, options=opts), MSG, SieveEnv(MSG, options=opts))
    assert [(a.mailbox, a.flags) for a in res.actions] == [("a", ["\\Flagged"]), ("b", ["$x"])]
    with pytest.raises(SieveCompileError) as e:
        compile_text('require ["imapflags", "imap4flags"];\n', options=opts)
    assert "cannot be used together with the imap4flags extension" in str(e.value)


def test_deprecated_notify_and_denotify():
    opts = {"extensions": "+notify"}
    script = ('require "notify";\n'
              'notify :options ["a@example.com", "A@example.com"] :id "one" :message "$from$: $subject$";\n'
              'notify :options "b@example.com" :id "two" :low;\n'
              'denotify :is "two";\n')
    res = run(compile_text(script, options=opts), MSG, SieveEnv(MSG, options=opts))
    notes = [a for a in res.actions if a.type == "notify"]
    assert [(n.method, n.message, n.importance) for n in notes] == [("mailto:a@example.com", "a@example.org: hi", "2")]
    with pytest.raises(SieveCompileError) as e:
        compile_text('require ["notify", "enotify"];\n', options=opts)
    assert "cannot be used together with the enotify extension" in str(e.value)


def test_vacation_default_subject_options():
    def subject(raw, **options):
        msg = Message(raw, "a@example.org", ["me@example.net"])
        res = run(compile_text('require "vacation";\nvacation "away";\n'), msg, SieveEnv(msg, options=options))
        return res.actions[0].subject

    with_subject = b"From: a@example.org\nSubject: Bloemetjes\n\nx\n"
    without = b"From: a@example.org\n\nx\n"
    opts = {"vacation_default_subject": "Away", "vacation_default_subject_template": "Automatisch: %$"}
    assert subject(with_subject, **opts) == "Automatisch: Bloemetjes"
    assert subject(without, **opts) == "Away"
    assert subject(with_subject) is None  # the outbound default, "Auto: Bloemetjes"
