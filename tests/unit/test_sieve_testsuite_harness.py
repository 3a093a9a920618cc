"""The vnd.dovecot.testsuite harness on small files of our own (the real suite: tests/integration)."""

from __future__ import annotations

import io

import pytest

from fetchdeliver.sieve import compile_text
from fetchdeliver.sieve.errors import SieveCompileError
from fetchdeliver.sieve.testsuite import run_file
from fetchdeliver.sieve.testsuite.command import main

HEADER = 'require "vnd.dovecot.testsuite";\nrequire "fileinto";\nrequire "relational";\nrequire "envelope";\n' \
         'require "comparator-i;ascii-numeric";\n'


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_extension_is_not_available_to_normal_scripts():
    with pytest.raises(SieveCompileError) as e:
        compile_text('require "vnd.dovecot.testsuite";\n')
    assert "unknown Sieve capability 'vnd.dovecot.testsuite'" in str(e.value)
    with pytest.raises(SieveCompileError):
        compile_text('require "vnd.dovecot.testsuite";\n', options={"extensions": "+vnd.dovecot.testsuite"})


def test_passing_and_failing_tests_are_counted(tmp_path):
    path = write(tmp_path, "a.svtest", HEADER + '''
test "good" {
  test_set "message" text:
From: a@example.org
To: b@example.net
Subject: hello

body
.
;
  if not header :is "subject" "hello" { test_fail "subject not set"; }
  if not envelope :is "from" "a@example.org" { test_fail "envelope from not taken from the message"; }
}
test "bad" {
  if header :is "subject" "hello" { test_fail "it says hello"; }
}
test "after" { }
''')
    res = run_file(path)
    assert (res.total, res.passed, res.ok) == (3, 2, False)
    assert res.first_failure == "test 'bad' FAILED: it says hello"


def test_script_run_result_execute_and_mailstore(tmp_path):
    write(tmp_path, "sub.sieve", 'require "fileinto";\nfileinto "Lists";\nredirect "x@example.com";\n')
    path = write(tmp_path, "b.svtest", HEADER + '''require "mailbox";
test "run" {
  if not test_script_compile "sub.sieve" { test_fail "compile"; }
  if not test_script_run { test_fail "run"; }
  if not test_result_action :count "eq" :comparator "i;ascii-numeric" "2" { test_fail "two actions"; }
  if not test_result_action :index 1 "store" { test_fail "store first"; }
  if not test_result_action :index 2 "redirect" { test_fail "redirect second"; }
  if test_result_execute { test_fail "Lists does not exist: the store must fail"; }
  test_mailbox_create "Lists";
  test_result_reset;
  if not test_script_run { test_fail "run again"; }
  if not test_result_execute { test_fail "execute"; }
  if not test_message :folder "Lists" 0 { test_fail "no message in Lists"; }
  test_message :smtp 0;  # test_result_reset emptied the outgoing box, as in Pigeonhole
  if not envelope :is "to" "x@example.com" { test_fail "redirect envelope"; }
}
''')
    res = run_file(path)
    assert res.ok, res.first_failure


def test_compile_errors_are_matched_by_test_error(tmp_path):
    write(tmp_path, "broken.sieve", 'frobnicate;\nkeep :what;\n')
    path = write(tmp_path, "c.svtest", HEADER + '''
test "errors" {
  if test_script_compile "broken.sieve" { test_fail "compiled"; }
  if not test_error :count "eq" :comparator "i;ascii-numeric" "3" { test_fail "two errors and the phase"; }
  if not test_error :index 1 :matches "unknown command 'frobnicate'*" { test_fail "first error"; }
  if not test_error :index 3 "validation failed" { test_fail "the failed phase is logged last"; }
}
''')
    res = run_file(path)
    assert res.ok, res.first_failure


def test_expect_failure_and_cli_lines(tmp_path):
    ok = write(tmp_path, "ok.svtest", HEADER + 'test "t" { }\n')
    bad = write(tmp_path, "bad.svtest", HEADER + 'test "t" { test_fail "boom"; }\n')
    out = io.StringIO()
    assert main([ok, bad], out=out) == 1
    assert out.getvalue().splitlines() == [f"PASS {ok}", f"FAIL {bad}: test 't' FAILED: boom",
                                           "1/2 files passed, 1/2 tests passed"]
    out = io.StringIO()
    assert main([bad], expect_failure=True, out=out) == 0
    assert out.getvalue().splitlines()[0] == f"PASS {bad}"


def test_runtime_error_aborts_the_file(tmp_path):
    path = write(tmp_path, "d.svtest", HEADER + 'require "variables";\n'
                 'test "first" { set "n" ""; fileinto "${n}"; }\ntest "never" { }\n')
    res = run_file(path)
    assert not res.ok
    assert "aborted due to error" in res.first_failure and "first" in res.first_failure
