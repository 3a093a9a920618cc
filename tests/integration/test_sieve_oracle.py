"""Differential tests of fetchdeliver's Sieve against Pigeonhole's sieve-test.

The corpus lives in tests/sieve_oracle/ (scripts, messages, cases.toml, README.md).
- test_ours_matches_pigeonhole: fetchdeliver's result for each case == the recording of
  sieve-test's result in tests/sieve_oracle/expected/ (runs everywhere).
- test_recording_matches_live_oracle: the recording == the live sieve-test (needs
  dovecot-sieve; skipped otherwise), so stale recordings cannot hide.
Re-record with `python tests/sieve_oracle/record.py` after changing the corpus.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

ORACLE_DIR = Path(__file__).resolve().parents[1] / "sieve_oracle"


def _load_oracle():
    spec = importlib.util.spec_from_file_location("sieve_oracle_harness", ORACLE_DIR / "oracle.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


oracle = _load_oracle()
CASES = oracle.load_cases()
EXPECTED = oracle.load_expected()
OURS_CASES = [c for c in CASES if c.compare_ours]
RERECORD = "re-record with: python tests/sieve_oracle/record.py"


def _recorded(case) -> list[tuple]:
    """The recording for case, checked to be made for the same envelope and options."""
    entry = EXPECTED.get(case.id)
    assert entry is not None, f"{case.id}: no recording in {oracle.EXPECTED_DIR}; {RERECORD}"
    made_for = (entry["message"], entry["sender"], entry["recipient"], entry["env_sha1"])
    now = (case.message, case.sender, case.recipient, case.env_fingerprint())
    assert made_for == now, f"{case.id}: recorded for {made_for}, cases.toml now says {now}; {RERECORD}"
    return entry["result"]


def _explain(case, expected: list[tuple], got: list[tuple], what: str) -> str:
    from collections import Counter
    missing = sorted((Counter(expected) - Counter(got)).elements(), key=repr)
    extra = sorted((Counter(got) - Counter(expected)).elements(), key=repr)
    errors = EXPECTED.get(case.id, {}).get("errors") or []
    lines = [
        f"{case.id}: {what}",
        f"  script:    {case.script_path}",
        f"  message:   {case.message_path}",
        f"  envelope:  from {case.sender} to {case.recipient}",
        f"  expected:  {expected}",
        f"  got:       {got}",
        f"  missing:   {missing}",
        f"  extra:     {extra}",
    ]
    if errors:
        lines.append(f"  sieve-test said: {errors}")
    if case.note:
        lines.append(f"  note: {case.note}")
    return "\n".join(lines)


class _LocalZone:
    """Set TZ for the duration of one call (date/currentdate without :zone use local time)."""

    def __init__(self, zone: str):
        self.zone = zone

    def __enter__(self):
        self.old = os.environ.get("TZ")
        os.environ["TZ"] = self.zone
        time.tzset()

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = self.old
        time.tzset()


# ----------------------------------------------------------------------------- (a) ours

@pytest.mark.parametrize("case", OURS_CASES, ids=lambda c: c.id)
def test_ours_matches_pigeonhole(case):
    expected = _recorded(case)
    # Imported here: the corpus must load (and the other tests run) whatever state
    # the Sieve implementation is in; a missing module fails these tests, as it should.
    from fetchdeliver.sieve.errors import SieveSyntaxError
    from fetchdeliver.sieve.tool import test_json

    with _LocalZone(case.env_options.get("timezone") or "UTC"):
        try:
            result = test_json(str(case.script_path), case.message_path.read_bytes(),
                               sender=case.sender, recipient=case.recipient,
                               env_options=case.resolved_options())
        except SieveSyntaxError:  # SieveCompileError and its kin: the script does not compile
            result = {"error": "compile"}
    got = oracle.normalize_ours(result)
    assert got == expected, _explain(case, expected, got, "fetchdeliver differs from Pigeonhole")


# ----------------------------------------------------------------------------- (b) live

@pytest.fixture(scope="module")
def live_runs():
    """Every case through the real sieve-test, in a few parallel processes (about 10 s)."""
    reason = oracle.unavailable_reason()
    if reason:
        pytest.skip(f"live oracle not available: {reason}")

    def run(case):
        try:
            return oracle.run_case(case)
        except Exception as exc:  # reported by the test of this case, not the whole module
            return exc

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip((c.id for c in CASES), pool.map(run, CASES)))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_recording_matches_live_oracle(case, live_runs):
    expected = _recorded(case)
    run = live_runs[case.id]
    if isinstance(run, Exception):
        pytest.fail(f"{case.id}: sieve-test could not be run: {run}")
    assert run.result == expected, _explain(case, expected, run.result,
                                            f"the recording is stale; {RERECORD}")


def test_no_orphan_recordings():
    orphans = sorted(set(EXPECTED) - {c.id for c in CASES})
    assert not orphans, f"recordings for cases that cases.toml no longer has: {orphans}; {RERECORD}"


def test_corpus_size():
    """The corpus the lead asked for: >= 40 scripts x >= 10 messages, >= 400 runs."""
    scripts = {c.script for c in CASES}
    messages = {c.message for c in CASES}
    assert len(scripts) >= 40 and len(messages) >= 10 and len(CASES) >= 400, (
        len(scripts), len(messages), len(CASES))


# ----------------------------------------------------------------------------- normalizers

# A sieve-test report as printed by Pigeonhole 0.5.19 (abridged from real runs).
_REPORT = """
Performed actions:

 * store message in folder: Work
        + create mailbox if it does not exist
        + add IMAP flags: \\answered X
 * redirect message to: <a@b.example>
        + preserve implicit keep
 * track duplicate with handle: from
 * send vacation message:
    => seconds : 86400
    => from    : Bob B <bob@y.example>
    => handle  : Content-Type: text/plain

gone
<default-subject>me@y.example<MIME>

START MESSAGE
Line one\r
 * store message in folder: NotAnAction\r

END MESSAGE
 * send notification with method 'mailto:':
    => importance   : 1
    => subject      : hi
    => recipients   :
       + To: x@y.example
       + Cc: c@y.example
    => body         : 
--
hello
--

 * pipe message to external program 'archive':
    => try           : no


Implicit keep:

 * store message in folder: INBOX
        + add IMAP flags: \\seen Foo

"""


def test_parse_report_reads_every_action_kind():
    got = oracle.parse_report(_REPORT)
    assert got == sorted([
        ("store", "Work", ("\\answered", "x")),
        ("create", "Work"),
        ("redirect", "a@b.example"),
        ("vacation", None, 86400, "Bob B <bob@y.example>",
         "Line one\n * store message in folder: NotAnAction"),
        ("notify", "mailto", 1, "hi", None, ("cc:c@y.example", "to:x@y.example")),
        ("pipe", "archive"),
        # the implicit keep is dropped: a pipe without :copy cancels it when executed
    ], key=repr)


def test_parse_report_keeps_implicit_keep_without_pipe():
    text = _REPORT.replace(" * pipe message to external program 'archive':\n"
                           "    => try           : no\n", "")
    assert ("store", "INBOX", ("\\seen", "foo"), "implicit") in oracle.parse_report(text)


def test_parse_report_rejects_unknown_lines():
    with pytest.raises(oracle.OracleError):
        oracle.parse_report("\nPerformed actions:\n\n * teleport message to: Mars\n")


def test_normalize_ours_maps_every_action_type():
    got = oracle.normalize_ours({"actions": [
        {"type": "keep", "mailbox": "INBOX", "flags": ["\\Seen", "\\seen", "Foo"], "copy": False,
         "implicit": True},
        {"type": "fileinto", "mailbox": "Work", "flags": ["X", "\\Answered"], "copy": False,
         "implicit": False, "create": True},
        {"type": "keep", "mailbox": "INBOX", "flags": [], "copy": False, "implicit": False},
        {"type": "redirect", "address": "A <a@b.example>", "copy": True},
        {"type": "discard"},
        {"type": "reject", "reason": "no\nthanks\n"},
        {"type": "vacation", "subject": None, "seconds": 604800, "from": None,
         "reason": "gone\r\n"},
        {"type": "notify", "method": "mailto:x@y.example%2Cz@y.example?cc=c@y.example&bcc=b@y.example",
         "from": None, "importance": None, "options": [], "message": None},
        {"type": "pipe", "program": "archive", "args": ["a"]},
        {"type": "filter", "program": "tag-header", "args": []},
        {"type": "execute", "program": "upper", "args": []},
    ]})
    assert got == sorted([
        ("store", "INBOX", ("\\seen", "foo"), "implicit"),
        ("store", "Work", ("\\answered", "x")),
        ("create", "Work"),
        ("store", "INBOX", ()),
        ("redirect", "a@b.example"),
        ("discard",),
        ("reject", "no??thanks??"),
        ("vacation", None, 604800, None, "gone"),
        ("notify", "mailto", 2, None, None, ("cc:c@y.example", "to:x@y.example", "to:z@y.example")),
        ("pipe", "archive"),
    ], key=repr)


def test_normalize_ours_errors_and_duplicates():
    assert oracle.normalize_ours({"error": "compile", "message": "x"}) == [("compile-error",)]
    assert oracle.normalize_ours({"error": {"kind": "runtime"}}) == [("runtime-error",)]
    failed = {"actions": [{"type": "keep", "mailbox": "INBOX", "flags": [], "implicit": True}],
              "errors": ["reject conflicts with fileinto"]}
    assert oracle.normalize_ours(failed) == [("runtime-error",)]
    twice = {"actions": [{"type": "fileinto", "mailbox": "A", "flags": []}] * 2}
    # Not merged: the interpreter must merge duplicate stores itself, as Pigeonhole does.
    assert oracle.normalize_ours(twice) == [("store", "A", ())] * 2
    with pytest.raises(ValueError):
        oracle.normalize_ours({"actions": [{"type": "teleport"}]})
