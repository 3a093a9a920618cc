"""RFC 6785 (imapsieve), the Sieve side: a script run for an IMAP event, without the server."""

from __future__ import annotations

import pytest

from fetchdeliver.message import Message
from fetchdeliver.sieve import SieveEnv, compile_text
from fetchdeliver.sieve.errors import SieveCompileError
from fetchdeliver.sieve.imapsieve import ImapEvent, compile_text_for_events, run_event

RAW = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


def answer(script: str, event: ImapEvent, **options):
    s = compile_text_for_events(script, options=options or None)
    m = Message(RAW, "", [])
    return run_event(s, m, event, SieveEnv(m, options=options))


def test_environment_items_of_the_event():
    script = ('require ["imapsieve", "environment", "variables", "imap4flags"];\n'
              'if environment :matches "imap.cause" "*" { set "c" "${1}"; }\n'
              'if environment :matches "imap.mailbox" "*" { set "m" "${1}"; }\n'
              'if environment :matches "imap.user" "*" { set "u" "${1}"; }\n'
              'if environment :matches "imap.email" "*" { set "e" "${1}"; }\n'
              'if environment :matches "imap.changedflags" "*" { set "f" "${1}"; }\n'
              'if environment :matches "location" "*" { set "l" "${1}"; }\n'
              'if environment :matches "phase" "*" { set "p" "${1}"; }\n'
              'if string :is "${c}|${m}|${u}|${e}|${f}|${l}|${p}"\n'
              '   "FLAG|Work|alice|alice@example.org|\\\\Seen|MS|post" { addflag "ok"; }\n')
    a = answer(script, ImapEvent("flag", "Work", user="alice", email="alice@example.org",
                                 changed_flags=["\\Seen"], flags=["\\Seen"]))
    assert a.keep and a.errors == []
    assert a.flags == ["\\Seen", "ok"]


def test_in_delivery_the_items_are_empty_and_location_is_the_mda():
    s = compile_text('require ["imapsieve", "environment", "fileinto"];\n'
                     'if allof(environment :is "imap.cause" "", environment :is "location" "MDA") '
                     '{ fileinto "Delivered"; }', options={"extensions": "+imapsieve"})
    from fetchdeliver.sieve import run

    m = Message(RAW, "s@example.org", ["b@example.org"])
    r = run(s, m, SieveEnv(m))
    assert [a.mailbox for a in r.actions] == ["Delivered"]


def test_moving_into_junk_pipes_and_keeps():
    # The classic use: a COPY into Junk trains the spam filter.
    a = answer('require ["imapsieve", "environment", "vnd.dovecot.pipe", "copy"];\n'
               'if allof(environment :is "imap.cause" "COPY", environment :is "imap.mailbox" "Junk")'
               ' { pipe :copy "learn-spam"; }', ImapEvent("COPY", "Junk", flags=["\\Seen"]),
               extensions="+vnd.dovecot.pipe")
    assert a.keep and a.flags == ["\\Seen"] and a.copies == []
    assert [(x.type, x.program) for x in a.outgoing] == [("pipe", "learn-spam")]


def test_fileinto_copies_and_marks_the_original_deleted():
    a = answer('require ["imapsieve", "fileinto", "editheader"];\n'
               'addheader "X-Seen-By" "sieve"; fileinto "Archive";',
               ImapEvent("APPEND", "Sent", flags=["\\Seen"]), extensions="+editheader")
    assert not a.keep
    assert a.flags == ["\\Seen", "\\Deleted"]
    [(mailbox, flags, raw)] = a.copies
    assert mailbox == "Archive" and raw.startswith(b"X-Seen-By: sieve")  # transient edits go with it


def test_discard_with_explicit_keep_does_nothing():
    a = answer('require "imapsieve"; keep; discard;', ImapEvent("APPEND", "INBOX"))
    assert a.keep and "\\Deleted" not in a.flags


def test_delivery_only_extensions_and_envelope_are_errors():
    with pytest.raises(SieveCompileError, match="not applicable to scripts run for IMAP events"):
        compile_text_for_events('require ["vacation"]; vacation "away";')
    with pytest.raises(SieveCompileError, match="not applicable"):
        compile_text_for_events('require "reject"; reject "no";')
    a = answer('require ["imapsieve", "envelope", "fileinto", "imap4flags"];\n'
               'addflag "x"; if envelope "from" "a@example.org" { fileinto "X"; }',
               ImapEvent("FLAG", "INBOX", changed_flags=["x"], flags=["\\Answered"]))
    # A run-time error: as if no script had run (the message and its flags untouched).
    assert a.keep and a.flags == ["\\Answered"] and a.copies == [] and len(a.errors) == 1
    assert "envelope test is not applicable" in a.errors[0]


def test_unknown_cause_is_refused():
    with pytest.raises(ValueError):
        ImapEvent("MOVE", "INBOX")
