"""Sieve lexical rules, parse errors (file:line:col and what was expected), validation errors."""

import pytest
from hypothesis import given, settings, strategies as st

from fetchdeliver.sieve import compile_text
from fetchdeliver.sieve.errors import SieveCompileError, SieveSyntaxError
from fetchdeliver.sieve.parser import parse

from sieve_helpers import folders


def errors(text: str) -> list[str]:
    with pytest.raises(SieveCompileError) as info:
        compile_text(text, "rules.sieve")
    return [str(e) for e in info.value.errors]


# -- lexical rules ------------------------------------------------------------

def test_comments_and_whitespace():
    text = ('# hash comment\r\nrequire /* bracket\r\n comment */ "fileinto";\t# trailing\n'
            'fileinto /**/ "A"; /* multi * star ** */ fileinto "B";')
    assert folders(text) == ["A", "B"]


def test_quoted_string_escapes():
    nodes = parse(r'x "a\"b\\c\d";')
    assert nodes[0].args[0].value == 'a"b\\cd'


def test_quoted_string_line_breaks_become_crlf():
    assert parse('x "a\nb";')[0].args[0].value == "a\r\nb"
    assert parse('x "a\r\nb";')[0].args[0].value == "a\r\nb"


def test_multiline_string_dot_unstuffing_and_crlf():
    text = 'x text: # comment\n line1\n..dotted\n.not end\n.\n;'
    assert parse(text)[0].args[0].value == " line1\r\n.dotted\r\n.not end\r\n"
    crlf = 'x text:\r\nA\r\n.\r\n;'
    assert parse(crlf)[0].args[0].value == "A\r\n"


def test_numbers_with_units():
    nodes = parse("x 1 2K 3m 4G 0;")
    assert [a.value for a in nodes[0].args] == [1, 2048, 3 << 20, 4 << 30, 0]


def test_tags_lists_tests_and_blocks():
    nodes = parse('if anyof (header :IS ["a", "b"] "c", not true) { keep; } else { discard; }')
    node = nodes[0]
    assert node.name == "if" and node.tests[0].name == "anyof" and node.tests[0].test_list
    header = node.tests[0].tests[0]
    assert header.args[0].kind == "tag" and header.args[0].value == "is"
    assert header.args[1].value == ["a", "b"]
    assert nodes[1].name == "else" and nodes[1].block[0].name == "discard"


def test_positions_are_kept():
    nodes = parse('\n\n  keep;')
    assert (nodes[0].line, nodes[0].column) == (3, 3)


def test_case_insensitive_identifiers():
    assert folders('REQUIRE "fileinto"; FileInto "X";') == ["X"]


# -- parse errors ---------------------------------------------------------------

def test_error_format_expected_semicolon():
    errs = errors('require "fileinto";\nif true { fileinto "a" }')
    assert errs == ["rules.sieve:2:24: error: expected ';' or '{' after fileinto arguments, found '}'"]


def test_error_has_file_line_column_attributes():
    with pytest.raises(SieveCompileError) as info:
        compile_text("keep;\n  keep", "f.sieve")
    e = info.value.errors[0]
    assert isinstance(e, SieveSyntaxError)
    assert (e.file, e.line) == ("f.sieve", 2)
    assert "end of script" in e.message


@pytest.mark.parametrize("text, where, fragment", [
    ('if true {', "1:10", "expected a command or '}', found end of script"),
    ('keep "a', "1:6", "unterminated quoted string"),
    ('/* never closed', "1:1", "unterminated comment"),
    ('x text:\nfoo\n', "1:3", "unterminated multi-line string"),
    ('x text: junk\nfoo\n.\n;', "1:3", "after 'text:'"),
    ('x ["a" "b"];', "1:8", "expected ',' or ']' in string list, found string \"b\""),
    ('x [1];', "1:4", "expected a string in string list, found number 1"),
    ('if anyof(true false) {}', "1:16", "found identifier 'false'") if False else
    ('if anyof(true; false) {}', "1:14", "expected ')' or ','"),
    ('}', "1:1", "expected a command, found '}'"),
    ("x 'a';", "1:3", "unexpected character"),
    ("x 99999999999999999999;", "1:3", "number '99999999999999999999' is too large"),
    ("x :;", "1:3", "invalid tag"),
])
def test_parse_error_messages(text, where, fragment):
    errs = errors(text)
    # Stray characters: the command is reported unfinished too, and skipped (as Pigeonhole).
    assert len(errs) == (2 if fragment == "unexpected character" else 1), errs
    assert errs[0].startswith(f"rules.sieve:{where}: error: ")
    assert fragment in errs[0]


# -- validation errors ----------------------------------------------------------

@pytest.mark.parametrize("text, fragment", [
    ('fileinto "a";', "unknown command 'fileinto' (missing require \"fileinto\")"),
    ('require "nosuch";', "unknown Sieve capability 'nosuch'"),
    ('keep;\nrequire "fileinto";', "require commands can only be placed at top level"),
    ('else { keep; }', "the else command must follow an if or elsif command"),
    ('if header :is :contains "a" "b" {}', "duplicate MATCH-TYPE argument (:contains)"),
    ('if header :comparator "i;ascii-numeric" "a" "b" {}', "unknown comparator 'i;ascii-numeric'"),
    ('require "comparator-i;ascii-numeric";\nif header :comparator "i;ascii-numeric" :contains "a" "b" {}',
     "does not support the :contains match type"),
    ('require "fileinto";\nfileinto ["a", "b"];', "expects a string as argument 1 (folder), but a string list was found"),
    ('require ["fileinto", "copy"];\nfileinto "x" :copy;', "unexpected tagged argument ':copy'"),
    ('require "fileinto";\nfileinto :copy "x";', "unknown tagged argument ':copy'"),
    ('redirect "bad addr";', "specified redirect address 'bad addr' is invalid"),
    ('keep "x";', "requires 0 positional argument(s), but 1 is/are specified"),
    ('if true;', "the if command requires a command block, but it is missing"),
    ('keep { }', "does not accept a command block"),
    ('if size 100 {}', "exactly one of the :over or :under tags"),
    ('if nosuchtest {}', "unknown test 'nosuchtest'"),
    ('if address "subject" "x" {}', "specified header 'subject' is not allowed for the address test"),
    ('header "a" "b";', "attempted to use test 'header' as command"),
    ('if keep {}', "attempted to use command 'keep' as test"),
    ('if header :regex "a" "b" {}', "unknown tagged argument ':regex'"),
    ('if exists "a" "b" {}', "requires 1 positional argument(s), but 2 is/are specified"),
    ('if not (true, false) {}', "requires one sub-test, but a list of tests is specified"),
    ('if allof true {}', "requires a list of sub-tests, but a single test is specified"),
    ('require "relational";\nif header :count "xx" "a" "1" {}', "invalid relational match type 'xx'"),
    ('require "variables";\nset "a-b" "x";', "invalid variable name 'a-b'"),
    ('require "variables";\nset :lower :upper "a" "x";', "same precedence"),
    ('require "ereject";', "unknown Sieve capability 'ereject'"),
])
def test_validation_error_messages(text, fragment):
    errs = errors(text)
    assert any(fragment in e for e in errs), errs
    assert all(e.startswith("rules.sieve:") for e in errs)


def test_invalid_header_name_is_a_warning_and_never_matches():
    # Pigeonhole warns and runs the script (its testsuite's test-header.svtest relies on it).
    from fetchdeliver.message import Message
    from fetchdeliver.sieve import SieveEnv, compile_text, run

    script = compile_text('if header :contains ["a b", "subject:"] "" { discard; }', "rules.sieve")
    assert script.data["warnings"][0].startswith("rules.sieve:1:")
    assert "warning: specified header field name 'a b' is invalid" in script.data["warnings"][0]
    msg = Message(b"Subject: x\n\nbody\n", "a@b.c", ["d@e.f"])
    assert [a.type for a in run(script, msg, SieveEnv(msg)).actions] == ["keep"]


def test_several_errors_are_collected_with_lines():
    errs = errors('require "fileinto";\nfoo;\nbar;\nkeep 1;\n')
    assert [e.split(":")[1] for e in errs] == ["2", "3", "4"]


def test_unknown_command_reported_once():
    assert len(errors("foo;\nfoo;\nfoo;")) == 1


def test_invalid_utf8_script_is_a_compile_error(tmp_path):
    from fetchdeliver.sieve import compile_file

    path = tmp_path / "bad.sieve"
    path.write_bytes(b'keep;\n# \xff\n')
    with pytest.raises(SieveCompileError) as info:
        compile_file(str(path), use_cache=False)
    assert ":2:" in str(info.value) and "UTF-8" in str(info.value)


# -- robustness -------------------------------------------------------------------

ALPHABET = st.sampled_from(list('abcdefiklnorstuvx_ :;,{}[]()"\\#/*.\n\r\t0123456789KMG') +
                           ["text:", "if", "require", "keep", "fileinto", "header", ":is", "anyof",
                            "\"fileinto\"", "${hex:41}", "elsif", "else", "stop", "/*", "*/"])


@settings(max_examples=300, deadline=None)
@given(st.lists(ALPHABET, max_size=40).map("".join))
def test_random_text_raises_only_sieve_errors(text):
    try:
        compile_text(text, "fuzz.sieve")
    except SieveCompileError as e:
        assert e.errors and all(isinstance(x, SieveSyntaxError) for x in e.errors)
        assert str(e).startswith("fuzz.sieve:")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_random_unicode_raises_only_sieve_errors(text):
    try:
        compile_text(text, "fuzz.sieve")
    except SieveCompileError:
        pass
