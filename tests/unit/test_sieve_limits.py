"""Sieve within a budget (issue 19): linear-time :regex, the CPU time budget, the compile-time limits
(script size, block and test nesting) and the run-time ones (actions, redirects). The limits and their
messages are Pigeonhole's (checked with sieve-test 0.5.19: 31 nested blocks or tests compile, 32 do not)."""

from __future__ import annotations

import threading

import pytest

from fetchdeliver.config import ConfigErrors, Settings, parse_file
from fetchdeliver.sieve import cache, compile_text
from fetchdeliver.sieve.errors import SieveCompileError
from fetchdeliver.sieve.extensions.regex import Untranslatable, translate

from sieve_helpers import actions, result

POISON = b"From: a@example.com\r\nX-Bt: " + b"a" * 40 + b"!\r\nSubject: x\r\n\r\nbody\r\n"


def compile_error(src: str, options: dict | None = None) -> SieveCompileError:
    with pytest.raises(SieveCompileError) as e:
        compile_text(src, "t.sieve", options=options)
    return e.value


# -- :regex ----------------------------------------------------------------------------------------

def test_nested_repetition_regex_is_answered_without_backtracking():
    # With a backtracking engine this one test runs for hours (2^40 ways to split the a's).
    s = 'require ["regex", "fileinto"];\nif header :regex "x-bt" "^(a+)+$" { fileinto "Trap"; }\n'
    r = result(s, POISON)
    assert r.errors == []
    assert [a.to_json()["mailbox"] for a in r.actions] == ["INBOX"]
    s2 = 'require ["regex", "fileinto"];\nif header :regex "x-bt" "^([a-z]+ ?)*!$" { fileinto "Hit"; }\n'
    assert actions(s2, POISON) == [("fileinto", "Hit")]


@pytest.mark.parametrize("ere, re2", [
    ("^(a+)+$", "^(a+)+$"),
    ("[]a-]", "[\\]a\\-]"),           # "]" first and "-" last are literal in a bracket expression
    ("[^]a]", "[^\\]a]"),
    ("[a\\]", "[a\\\\]"),             # a backslash in brackets is literal in POSIX
    ("\\d", "d"),                     # the C library takes an unknown escape as the letter
    ("[[:alpha:][:digit:]_]+", "[[:alpha:][:digit:]_]+"),
    ("[[.a.]-c]", "[a-c]"),
    ("(a))", "(a)\\)"),               # an unmatched ")" is ordinary in ERE
    ("a{2,3}b}", "a{2,3}b\\}"),
    ("a{1,}", "a{1,}"),
    ("a{,3}", "a{0,3}"),
    ("\\`a\\'", "\\Aa\\z"),
    ("\\<cat\\>", "\\bcat\\b"),
])
def test_posix_ere_translation(ere, re2):
    assert translate(ere) == re2


@pytest.mark.parametrize("ere, why", [
    ("([a-", "unmatched ["),
    ("(a", "unmatched ("),
    ("(a)\\1", "back-references"),
    ("a*\\>", "word anchor"),
    ("\\<a?", "word anchor"),
    ("x{1001}", "too large"),
    ("[[:nope:]]", "invalid character class name"),
    ("[z-a]", "invalid range end"),
    ("a\\", "trailing backslash"),
    ("a{x", "unmatched {"),
    ("a{x}", "invalid content of {x}"),
    ("a{3,2}", "invalid content of {3,2}"),
    ("^*a", "invalid preceding regular expression"),
    ("a|+b", "invalid preceding regular expression"),
    ("\\b?", "invalid preceding regular expression"),
])
def test_untranslatable_patterns_say_why(ere, why):
    with pytest.raises(Untranslatable) as e:
        translate(ere)
    assert why in str(e.value)


def test_a_literal_pattern_re2_cannot_take_is_a_compile_error_at_the_key():
    e = compile_error('require "regex";\nif header :regex "subject"\n    "(a)\\\\1" { keep; }\n')
    assert (e.line, e.column) == (3, 5)
    assert "invalid regular expression '(a)\\1' for regex match: back-references" in str(e)
    assert str(e).startswith("t.sieve:3:5: error: ")


def test_a_pattern_built_at_run_time_that_re2_cannot_take_is_implicit_keep():
    s = ('require ["regex", "variables", "fileinto"];\nset "p" "(a)\\\\1";\nfileinto "Before";\n'
         'if header :regex "subject" "${p}" { fileinto "X"; }\n')
    r = result(s)
    assert [a.to_json()["type"] for a in r.actions] == ["keep"]
    assert r.actions[0].implicit
    assert len(r.errors) == 1 and r.errors[0].startswith("test.sieve:4: error: invalid regular expression")
    assert "implicit keep" in r.errors[0]


def test_regex_case_and_captures():
    s = ('require ["regex", "variables", "fileinto"];\n'
         'if header :regex "subject" "\\\\[(LIST)\\\\] ([a-z]+)" { fileinto "${1}-${2}"; }\n')
    assert actions(s) == [("fileinto", "list-Weekly")]


# -- the CPU time budget -----------------------------------------------------------------------------

# Slow by sheer size: 2,000 header values x 2,000 keys, some seconds of work; only the budget ends it.
SLOW_GLOB = ('require "fileinto";\nkeep;\nif header :matches "x-h" ['
             + ", ".join(f'"*zz{i}*"' for i in range(2000)) + '] {\n  fileinto "Never";\n}\n')
LONG_A = b"Subject: slow\r\n" + b"".join(b"X-H: " + b"a" * 100 + b"\r\n" for _ in range(2000)) + b"\r\nbody\r\n"


def test_matches_is_linear_on_long_values():
    # "*a*a*a*a*b" on 20,000 a's: seconds per value with the old depth-first search.
    s = 'require "fileinto";\nif header :matches "x-bt" "*a*a*a*a*b" { fileinto "Never"; }\n'
    r = result(s, b"X-Bt: " + b"a" * 20000 + b"\r\n\r\nbody\r\n")
    assert r.errors == [] and [a.to_json()["mailbox"] for a in r.actions] == ["INBOX"]


def test_a_run_over_its_budget_takes_implicit_keep_and_names_the_rule():
    r = result(SLOW_GLOB, LONG_A, options={"max_run_time": 1})
    assert [(a.to_json()["type"], a.implicit) for a in r.actions] == [("keep", True)]
    assert len(r.errors) == 1
    err = r.errors[0]
    assert err.startswith("test.sieve:3: error: the script used more than its CPU time budget"), err
    assert "max_run_time = 1s" in err and "implicit keep" in err


def test_budget_applies_per_thread_in_parallel_runs():
    results = []

    def go():
        results.append(result(SLOW_GLOB, LONG_A, options={"max_run_time": 1}))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2
    assert all("budget" in r.errors[0] for r in results)


def test_any_exception_in_the_interpreter_is_implicit_keep_naming_the_rule():
    def boom(name):
        raise RuntimeError("the store fell over")

    s = 'require ["mailbox", "fileinto"];\nfileinto "A";\nif mailboxexists "Lists" {\n  fileinto "B";\n}\n'
    r = result(s, mailbox_exists=boom)
    assert [(a.to_json()["type"], a.implicit) for a in r.actions] == [("keep", True)]
    assert r.errors == ["test.sieve:3: error: internal error while running this rule: RuntimeError: "
                        "the store fell over; the message is kept (implicit keep)"]


# -- nesting and size --------------------------------------------------------------------------------

def blocks(n: int) -> str:
    return "if true {\n" * n + "keep;\n" + "}\n" * n


def chain_of_tests(n: int) -> str:
    return "if " + "not " * (n - 1) + "false { keep; }\n"


def nested_test_lists(n: int) -> str:
    return "if " + "anyof(" * (n - 1) + "true" + ")" * (n - 1) + " { keep; }\n"


def test_pigeonhole_nesting_limits():
    for make in (blocks, chain_of_tests, nested_test_lists):
        compile_text(make(31))
    e = compile_error(blocks(32))
    assert str(e) == "t.sieve:32:1: error: cannot nest command blocks deeper than 32 levels"
    e = compile_error(chain_of_tests(32))
    assert str(e) == "t.sieve:1:128: error: cannot nest tests deeper than 32 levels"
    e = compile_error(nested_test_lists(32))
    assert "cannot nest tests deeper than 32 levels" in str(e)


@pytest.mark.parametrize("depth", [500, 5000])
def test_deep_nesting_is_a_compile_error_not_a_recursion_error(depth):
    for make in (blocks, chain_of_tests, nested_test_lists):
        e = compile_error(make(depth))
        assert "cannot nest" in str(e)


def test_configured_nesting_limits():
    opts = {"max_block_nesting": 4, "max_test_nesting": 3}
    compile_text(blocks(3) + chain_of_tests(2), options=opts)
    assert "deeper than 4 levels" in str(compile_error(blocks(4), opts))
    assert "deeper than 3 levels" in str(compile_error(chain_of_tests(3), opts))
    # The largest the config allows still compiles and runs, in a worker thread too.
    big = {"max_block_nesting": 100, "max_test_nesting": 100}
    src = "if true {\n" * 98 + chain_of_tests(99) + "}\n" * 98
    out = []
    t = threading.Thread(target=lambda: out.append(result(src, options=big)))
    t.start()
    t.join(60)
    assert out and out[0].errors == []


def test_a_5mb_script_is_refused_before_parsing(tmp_path):
    from fetchdeliver.sieve import compile_file

    path = tmp_path / "big.sieve"
    path.write_bytes(b"# " + b"x" * (5 << 20) + b"\nkeep;\n")
    with pytest.raises(SieveCompileError) as e:
        compile_file(str(path), use_cache=False)
    assert str(e.value) == (f"{path}:1:1: error: script is too large ({5 * (1 << 20) + 9} bytes; "
                            f"max_script_size is 1048576 bytes)")
    # Also as text, and a string literal of 5 MB.
    with pytest.raises(SieveCompileError):
        compile_text('fileinto "' + "y" * (5 << 20) + '";')
    # 0 lifts the limit; a smaller one is kept.
    compile_text("# " + "x" * 2000 + "\nkeep;\n", options={"max_script_size": 0})
    assert "too large" in str(compile_error("# " + "x" * 2000 + "\nkeep;\n", {"max_script_size": 1000}))


def test_an_included_script_over_the_size_limit(tmp_path):
    (tmp_path / "big.sieve").write_text("# " + "x" * 3000 + "\nkeep;\n")
    main = tmp_path / "main.sieve"
    main.write_text('require "include";\ninclude :personal "big";\n')
    from fetchdeliver.sieve import compile_file

    with pytest.raises(SieveCompileError) as e:
        compile_file(str(main), use_cache=False, options={"max_script_size": 1000,
                                                         "personal_dir": str(tmp_path)})
    assert "too large" in str(e.value) and "failed to compile included script 'big'" in str(e.value)


def test_limits_are_part_of_the_cache_key():
    raw = b"keep;\n"
    assert cache.key(raw, {}) == cache.key(raw, None)
    assert cache.key(raw, {"max_block_nesting": 5}) != cache.key(raw, {})
    assert cache.key(raw, {"max_run_time": 5}) == cache.key(raw, {})  # run time only


# -- actions and redirects -------------------------------------------------------------------------

def test_max_actions_and_max_redirects_from_the_options():
    s = 'require "fileinto";\nfileinto "A";\nfileinto "B";\nfileinto "C";\n'
    assert actions(s, options={"max_actions": 3}) == [("fileinto", "A"), ("fileinto", "B"), ("fileinto", "C")]
    r = result(s, options={"max_actions": 2})
    assert [a.implicit for a in r.actions] == [True]
    assert "test.sieve:4: error: total number of actions exceeds policy limit (3 > 2)" in r.errors[0]
    assert len(actions(s, options={"max_actions": 0})) == 3   # 0: no limit
    red = "".join(f'redirect "u{i}@example.com";\n' for i in range(3))
    r = result(red, options={"max_redirects": 2})
    assert "number of redirect actions exceeds policy limit (3 > 2)" in r.errors[0]
    assert [a.to_json()["type"] for a in result(red).actions] == ["redirect"] * 3


# -- configuration -----------------------------------------------------------------------------------

def test_config_keys(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[sieve]\nmax_run_time = "2s"\nmax_script_size = "512K"\nmax_block_nesting = 10\n'
                 'max_test_nesting = 12\nmax_actions = 50\nmax_redirects = 3\n')
    sieve = Settings(parse_file(str(p)), str(p)).sieve
    assert (sieve["max_run_time"], sieve["max_script_size"], sieve["max_block_nesting"],
            sieve["max_test_nesting"], sieve["max_actions"]) == (2, 512 * 1024, 10, 12, 50)
    p.write_text('[sieve]\nmax_block_nesting = 1000\nmax_script_size = "lots"\n')
    with pytest.raises(ConfigErrors) as e:
        parse_file(str(p))
    text = str(e.value)
    assert "sieve.max_block_nesting" in text and "sieve.max_script_size" in text



def test_escaped_lower_case_letter_under_casemap_matches_nothing_as_glibc_reg_icase():
    # Checked against Pigeonhole in tests/sieve_oracle/scripts/52-regex-posix.sieve.
    octet = 'require ["regex", "variables", "fileinto"];\nif string :regex "d" "^\\\\d$" { fileinto "hit"; }\n'
    casemap = octet.replace(":regex", ':regex :comparator "i;ascii-casemap"')
    assert actions(octet) == [("fileinto", "hit")]
    assert actions(casemap) == [("keep", "INBOX", "implicit")]
    assert translate("\\d", ignore_case=True) != translate("\\D", ignore_case=True) == "D"


def test_body_text_of_hostile_html_is_linear():
    # 50,000 unclosed "<script>" tags: a backtracking regex rescanned to the end for each one
    # (about a minute, holding the GIL); the linear scan takes milliseconds.
    html = b"<p>hello</p>" + b"<script>" * 50000 + b"<" * 100000
    raw = (b"From: a@example.com\r\nSubject: h\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n"
           + html + b"\r\n")
    s = 'require ["body", "fileinto"];\nif body :text :contains "hello" { fileinto "Hello"; }\n'
    r = result(s, raw, options={"max_run_time": 60})
    assert r.errors == []
    assert [a.to_json()["mailbox"] for a in r.actions] == ["Hello"]
