"""RFC 5228 core semantics: actions, implicit keep, tests, comparators, match types, addresses."""

import pytest

from fetchdeliver.sieve.addresses import parse_address_list
from fetchdeliver.sieve.matching import glob

from sieve_helpers import IMPLICIT, actions, folders, result


def test_empty_script_is_implicit_keep():
    assert actions("") == [IMPLICIT]


def test_keep_fileinto_discard_cancel_implicit_keep():
    assert actions("keep;") == [("keep", "INBOX")]
    assert actions('require "fileinto"; fileinto "A";') == [("fileinto", "A")]
    assert actions("discard;") == [("discard",)]


def test_redirect_and_stop():
    assert actions('redirect "Joe <joe@example.net>"; stop; keep;') == [("redirect", "joe@example.net")]


def test_if_elsif_else_chain():
    script = ('require "fileinto";\nif false { fileinto "1"; } elsif true { fileinto "2"; }\n'
              'elsif true { fileinto "3"; } else { fileinto "4"; }\nif false {} else { fileinto "5"; }')
    assert folders(script) == ["2", "5"]


def test_allof_anyof_not():
    s = ('require "fileinto";\nif allof(true, not false) { fileinto "a"; }\n'
         'if anyof(false, false) { fileinto "b"; }')
    assert folders(s) == ["a"]


def test_header_decoding_and_casemap():
    s = ('require "fileinto";\nif header :contains "subject" "GRÜßE" { fileinto "nonascii-case"; }\n'
         'if header :contains "SUBJECT" "grüße" { fileinto "decoded"; }\n'
         'if header :is "x-spam-score" "7.5" { fileinto "is"; }')
    # i;ascii-casemap folds ASCII only: Ü does not match ü.
    assert folders(s) == ["decoded", "is"]


def test_matches_wildcards_and_escapes():
    s = ('require "fileinto";\nif header :matches "subject" "*\\\\*news\\\\*" { fileinto "esc"; }\n'
         'if header :matches "subject" "Gr??e*" { fileinto "q"; }')
    assert folders(s) == ["esc", "q"]


def test_glob_is_leftmost_shortest():
    assert glob("a.b.c", "*.*", str) == ["a", "b.c"]
    assert glob("aaa", "*a*", str) == ["", "aa"]
    assert glob("abcd", "*??", str) == ["ab", "c", "d"]
    assert glob("abc", "a\\bc", str) == []
    assert glob("f*o", "f\\*o", str) == []
    assert glob("foo", "f\\*o", str) is None


def test_glob_pathological_pattern_is_fast():
    assert glob("a" * 200, "*a" * 30 + "b", str) is None


def test_size():
    s = 'require "fileinto";\nif size :over 10 { fileinto "over"; }\nif size :under 1M { fileinto "under"; }'
    assert folders(s) == ["over", "under"]


def test_exists_needs_all_headers():
    s = ('require "fileinto";\nif exists ["from", "to"] { fileinto "both"; }\n'
         'if exists ["from", "x-nope"] { fileinto "no"; }')
    assert folders(s) == ["both"]


def test_address_parts_and_domain_case():
    s = ('require "fileinto";\nif address :domain :is "from" "example.com" { fileinto "dom"; }\n'
         'if address :localpart :is "from" "alice+tag" { fileinto "local"; }\n'
         'if address :all :is "to" "bob@example.net" { fileinto "all"; }')
    assert folders(s) == ["dom", "local", "all"]


@pytest.mark.parametrize("value, expected", [
    ('"Doe, John" <john@example.com>, jane@example.org (Jane)', ["john@example.com", "jane@example.org"]),
    ("undisclosed-recipients:;", ["undisclosed-recipients:;"]),
    ("nodomain", ["nodomain"]),
    ("nodomain, a@b", ["a@b"]),
    ("a@b, , c@d", ["a@b", "c@d"]),
    ("Group: a@b, c@d; e@f", ["a@b", "c@d"]),
    ("Group: a@b, c@d;, e@f", ["a@b", "c@d", "e@f"]),
    ('"quoted local"@example.com', ['"quoted local"@example.com']),
    ("a.b.@c.d", ['"a.b."@c.d']),
    (" a @ b . c ", ["a@b.c"]),
    ("<@route:a@b>", ["a@b"]),
    ("a@b (comment", ["a@b (comment"]),
    ("a@b@c", ["a@b"]),
    ("<a@b> trailing", ["a@b"]),
])
def test_address_list_parser_matches_pigeonhole(value, expected):
    # Expected values measured with Pigeonhole's sieve-test (address :all :matches "*").
    assert [a.all() for a in parse_address_list(value)] == expected


def test_invalid_address_has_no_localpart():
    raw = b"From: nodomain\r\nSubject: x\r\n\r\nbody\r\n"
    s = ('require ["fileinto", "variables"];\nif address :all :matches "from" "*" { fileinto "all-${1}"; }\n'
         'if address :localpart :matches "from" "*" { fileinto "lp"; }')
    assert folders(s, raw) == ["all-nodomain"]


def test_comparators():
    s = ('require ["fileinto", "comparator-i;ascii-numeric", "relational"];\n'
         'if header :comparator "i;octet" :is "subject" "grüße [LIST] weekly *news*" { fileinto "octet"; }\n'
         'if header :comparator "i;ascii-numeric" :is "x-spam-score" "7" { fileinto "numeric"; }\n'
         'if header :comparator "i;ascii-numeric" :value "gt" "subject" "99999" { fileinto "inf"; }')
    assert folders(s) == ["numeric", "inf"]


def test_redirect_limit_is_runtime_error_keeping_message():
    s = "".join(f'redirect "u{i}@example.com";' for i in range(5))
    r = result(s)
    assert [a.to_json()["type"] for a in r.actions] == ["keep"] and r.actions[0].implicit
    assert r.errors and "exceeds policy limit (5 > 4)" in r.errors[0] and "test.sieve:1" in r.errors[0]


def test_duplicate_redirects_count_once():
    s = 'redirect "a@b.c"; redirect "a@b.c"; redirect "b@b.c"; redirect "c@b.c"; redirect "d@b.c";'
    assert result(s).errors == []


def test_runtime_error_discards_queued_actions():
    s = 'require ["fileinto", "reject"];\nfileinto "A";\nreject "no";'
    r = result(s)
    assert [a.to_json() for a in r.actions] == [
        {"type": "keep", "mailbox": "INBOX", "flags": [], "copy": False, "implicit": True}]
    assert "test.sieve:3:" in r.errors[0] and "conflicts" in r.errors[0]


def test_message_without_headers():
    raw = b"just a body line\n"
    s = 'require "fileinto";\nif exists "from" { fileinto "x"; }\nif header :contains "subject" "" { stop; }'
    assert actions(s, raw) == [IMPLICIT]


def test_trace_lists_tests():
    r = result('if header :contains "subject" "news" { keep; }', trace=True)
    assert any("header test: true" in line for line in r.trace)
    assert any("keep INBOX" in line for line in r.trace)
