"""Behaviour the Pigeonhole testsuite pinned down (issue #16), checked here directly."""

from __future__ import annotations

import pytest

from sieve_helpers import actions, result

from fetchdeliver.sieve import compile_text
from fetchdeliver.sieve.errors import SieveCompileError


def errors(text: str, **options) -> list[str]:
    with pytest.raises(SieveCompileError) as e:
        compile_text(text, "t.sieve", options=options or None)
    return [x.message for x in e.value.errors]


def test_parser_recovers_and_reports_each_bad_command():
    errs = errors("if true {\n  keep\n}\nif true {\n  keep,\n  keep\n}\nif anyof(true,) { }\nkeep;\n")
    assert len(errs) == 3
    assert errs[0].startswith("expected ';' or '{'") and "found ','" in errs[1]
    assert errors("if anyof(true; false) {}") == ["expected ')' or ',' in test list, found ';'"]


def test_one_error_per_bad_command_and_unknown_tags_told_once():
    errs = errors('require "body";\nif body :content :frml "x" {}\nif body :frop "a" {}\nif body :frop "b" {}\n')
    # Tags are looked up first, wherever they stand (as Pigeonhole): the unknown :frml is the error.
    assert errs == ["unknown tagged argument ':frml' for the body test (reported only once at first occurrence)",
                    "unknown tagged argument ':frop' for the body test (reported only once at first occurrence)"]


def test_conflicting_require_keeps_the_first_meaning():
    errs = errors('require ["enotify", "notify"];\nnotify :options "x@example.org";',
                  extensions="+notify")
    assert len(errs) == 2 and "cannot be used together" in errs[0]
    assert "positional" in errs[1]  # enotify's notify wants its method
    assert "cannot be used together" in errors('require ["duplicate", "vnd.dovecot.duplicate"];',
                                               extensions="+vnd.dovecot.duplicate")[0]


def test_break_names_an_enclosing_loop_and_loops_nest_four_deep():
    assert errors('require "foreverypart";\nforeverypart :name "a" { break :name "b"; }') == [
        "the break command is not valid outside a foreverypart loop named 'b'"]
    deep = 'require "foreverypart";\n' + "foreverypart {" * 5 + "break;" + "}" * 5
    assert len(errors(deep)) == 1
    assert "cannot be used without the foreverypart" in errors('require ["extracttext", "variables"];')[0]


def test_variable_references_are_checked():
    errs = errors('require ["variables", "fileinto"];\nfileinto "${ns.x}";\nif string "${33}" "" {}\n'
                  'set "' + "v" * 65 + '" "x";')
    assert errs == ["referring to variable in unknown namespace 'ns'", "match value index 33 out of range (max: 32)",
                    f"invalid variable name '{'v' * 65}' for the set command"]
    many = 'require "variables";\n' + "".join(f'set "v{i}" "x";\n' for i in range(300))
    assert errors(many) == ["(implicit) declaration of new variable 'v255' exceeds the limit (max variables: 255)"]


def test_variable_values_and_encodeurl_are_cut_to_the_size_limit():
    s = ('require ["variables", "enotify", "fileinto"];\nset "a" "${b}";\n'
         'set :encodeurl "e" "@@@@";\nset :length "n" "${e}";\nfileinto "${n}";')
    assert actions(s, options={"variables_max_variable_size": 10}) == [("fileinto", "9")]


def test_an_invalid_regex_built_at_run_time_matches_nothing():
    s = ('require ["regex", "variables", "fileinto"];\nset "p" "[";\n'
         'if header :regex "subject" "${p}" { fileinto "A"; } else { fileinto "B"; }')
    r = result(s)
    assert [a.mailbox for a in r.actions] == ["B"]
    assert len(r.errors) == 1 and "invalid regular expression '['" in r.errors[0]


def test_addheader_value_checks():
    opts = {"extensions": "+editheader +encoded-character"}
    assert "contains NUL" in errors('require ["editheader", "encoded-character"];\n'
                                    'addheader "X-A" "a${hex:00}b";', **opts)[0]
    big = "x" * 1500
    compile_text(f'require "editheader";\naddheader "X-A" "{big}";', options=opts)
    assert "too large" in errors(f'require "editheader";\naddheader "X-A" "{big}";',
                                 editheader_max_header_size=1024, **opts)[0]
    r = result('require "editheader";\naddheader "X-A" "one\r\n two";', options=opts)
    assert r.message.get("X-A") == "one two"


def test_metadata_tests_read_the_store():
    from fetchdeliver.message import Message
    from fetchdeliver.sieve import SieveEnv, run

    entries = {("INBOX", "/private/comment"): "hello", (None, "/shared/admin"): "ops@example.org"}
    s = compile_text('require ["mboxmetadata", "servermetadata", "fileinto"];\n'
                     'if allof(metadata "INBOX" "/private/comment" "hello",'
                     ' metadataexists "INBOX" "/private/comment",'
                     ' servermetadata :contains "/shared/admin" "ops",'
                     ' not metadataexists "INBOX" "/private/none",'
                     ' not metadata "INBOX" "comment" "hello") { fileinto "Yes"; }',
                     options={"extensions": "+mboxmetadata +servermetadata"})
    m = Message(b"Subject: x\r\n\r\n", "a@example.org", ["b@example.org"])
    r = run(s, m, SieveEnv(m, metadata=lambda box, name: entries.get((box, name))))
    assert [a.mailbox for a in r.actions] == ["Yes"]
