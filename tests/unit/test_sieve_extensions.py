"""One group of tests per Sieve extension (expected values checked against Pigeonhole's sieve-test)."""

import pytest

from fetchdeliver.sieve import compile_text
from fetchdeliver.sieve.errors import SieveCompileError

from sieve_helpers import IMPLICIT, MSG, actions, folders, result

MIME = (b"From: a@example.com\r\nTo: rcpt@example.org\r\nSubject: m\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello w\xc3\xb6rld, this is the body.\r\n--XX\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Some <b>HTML</b> text</p>\r\n--XX\r\n"
        b"Content-Type: application/pdf; name=\"x.pdf\"\r\n"
        b"Content-Disposition: attachment; filename=\"x.pdf\"\r\n\r\nJVBERi0=\r\n--XX--\r\nepilogue\r\n")


def test_fileinto_and_copy():
    s = 'require ["fileinto", "copy"];\nfileinto :copy "A";\nredirect :copy "x@example.com";'
    assert actions(s) == [("fileinto", "A"), ("redirect", "x@example.com"), IMPLICIT]


def test_envelope_parts():
    s = ('require ["envelope", "fileinto"];\nif envelope :localpart "from" "sender" { fileinto "from"; }\n'
         'if envelope :domain "to" "example.org" { fileinto "to"; }\n'
         'if envelope :is "from" "" { fileinto "null"; }')
    assert folders(s) == ["from", "to"]
    assert folders(s, sender="") == ["to", "null"]


def test_encoded_character():
    s = 'require ["encoded-character", "fileinto"];\nfileinto "${hex:41 42}${unicode:263a}${hex:zz}";'
    assert folders(s) == ["AB\u263a${hex:zz}"]
    assert folders('require "fileinto";\nfileinto "${hex:41}";') == ["${hex:41}"]


def test_variables_modifiers_and_match_variables():
    s = ('require ["variables", "fileinto"];\nset "a" "Hello World";\nset :lower "b" "${a}";\n'
         'set :upper :lowerfirst "c" "${a}";\nset :length "d" "${a}";\n'
         'set :quotewildcard "e" "a*b?c\\\\d";\nset :upperfirst "f" "xyz";\n'
         'fileinto "v-${b}-${c}-${d}-${e}-${f}";\n'
         'if header :matches "subject" "*[*]*" { fileinto "m-${1}-${2}-${3}"; }\n'
         'set "n" "${x";\nfileinto "lit-${n}-${1a}-${}-${UNDEFINED}";')
    assert folders(s) == ["v-hello world-hELLO WORLD-11-a\\*b\\?c\\\\d-Xyz", "m-Grüße -list- Weekly *news*",
                          "lit-${x-${1a}-${}-"]


def test_string_test_default_comparator_is_octet_like_pigeonhole():
    s = ('require ["variables", "fileinto"];\nset "v" "aXb";\nif string :is "${v}" "AXB" { fileinto "1"; }\n'
         'if string :comparator "i;ascii-casemap" :is "${v}" "AXB" { fileinto "2"; }\n'
         'if string :count "eq" ["a", "", "c"] "2" { fileinto "3"; }')
    with pytest.raises(SieveCompileError):
        compile_text(s)  # :count needs relational
    s = s.replace('"fileinto"]', '"fileinto", "relational"]')
    assert folders(s) == ["2", "3"]


def test_imap4flags():
    s = ('require ["imap4flags", "fileinto", "variables"];\naddflag "\\\\Seen";\n'
         'addflag ["$Label", "\\\\FLAGGED", "\\\\seen", "two words"];\nfileinto "Foo";\n'
         'removeflag "words";\nkeep :flags "\\\\Answered";\nsetflag "v" "\\\\Draft x";\n'
         'if hasflag :contains "v" "raf" { fileinto :flags "${v}" "Var"; }\n'
         'if hasflag "$label" { fileinto "has"; }')
    assert actions(s) == [("fileinto", "Foo", ("\\Seen", "$Label", "\\Flagged", "two", "words")),
                          ("keep", "INBOX", ("\\Answered",)), ("fileinto", "Var", ("\\Draft", "x")),
                          ("fileinto", "has", ("\\Seen", "$Label", "\\Flagged", "two"))]


def test_duplicate_stores_merge_last_flags_win():
    s = ('require ["imap4flags", "fileinto", "copy"];\nfileinto :flags "a" "A";\nfileinto :flags "b" "A";\n'
         'keep :flags "\\\\Seen";\nkeep;\nfileinto :copy "B";\nfileinto "B";')
    assert actions(s) == [("fileinto", "A", ("b",)), ("keep", "INBOX"), ("fileinto", "B")]
    s2 = 'require ["fileinto", "copy"];\nfileinto :copy "L";\nfileinto "L";'
    assert actions(s2) == [("fileinto", "L"), IMPLICIT]  # the duplicate does not cancel the implicit keep


def test_implicit_keep_takes_final_flags():
    s = 'require ["imap4flags", "fileinto", "copy"];\naddflag "\\\\Seen";\nfileinto :copy "A";\naddflag "foo";'
    assert actions(s) == [("fileinto", "A", ("\\Seen",)), ("keep", "INBOX", ("\\Seen", "foo"), "implicit")]


def test_reject_and_ereject():
    assert actions('require "reject";\nreject "no";\ndiscard;') == [("reject",), ("discard",)]
    r = result('require "ereject";\nereject "no";', options={"extensions": ["+ereject"]})
    assert [a.to_json() for a in r.actions] == [{"type": "ereject", "reason": "no"}]
    assert result('require "reject";\nkeep;\nreject "x";').errors


def test_relational():
    s = ('require ["relational", "comparator-i;ascii-numeric", "fileinto"];\n'
         'if header :value "gt" :comparator "i;ascii-numeric" "x-spam-score" "6" { fileinto "gt"; }\n'
         'if header :count "ge" :comparator "i;ascii-numeric" "received" "2" { fileinto "count"; }\n'
         'if address :count "eq" :comparator "i;ascii-numeric" ["to", "cc"] "2" { fileinto "acount"; }\n'
         'if header :value "lt" "subject" "A" { fileinto "lt"; }')
    assert folders(s) == ["gt", "count", "acount"]


def test_subaddress():
    s = ('require ["subaddress", "fileinto", "envelope"];\nif address :detail "from" "tag" { fileinto "d"; }\n'
         'if address :user "from" "alice" { fileinto "u"; }\n'
         'if envelope :detail "to" "" { fileinto "empty-detail"; }')
    assert folders(s) == ["d", "u"]
    assert folders(s, rcpt="me+@example.org") == ["d", "u", "empty-detail"]


def test_body_transforms():
    s = ('require ["body", "fileinto"];\nif body :contains "wörld" { fileinto "text"; }\n'
         'if body :raw :contains "JVBERi0" { fileinto "raw"; }\n'
         'if body :content "text/html" :contains "<b>" { fileinto "html"; }\n'
         'if body :text :contains "HTML text" { fileinto "htmltext"; }\n'
         'if body :content "application" :contains "JVBER" { fileinto "app"; }\n'
         'if body :content "multipart" :contains "preamble" { fileinto "pre"; }')
    # Pigeonhole does not find "HTML text" in the text/html part with :text either.
    assert folders(s, MIME) == ["text", "raw", "html", "app", "pre"]


def test_regex():
    s = ('require ["regex", "fileinto", "variables"];\n'
         'if header :regex "subject" "\\\\[(.*)\\\\] ([a-z]+)" { fileinto "rx-${1}-${2}"; }\n'
         'if address :regex :localpart "from" "^ALICE\\\\+(.*)$" { fileinto "rx2-${1}"; }')
    assert folders(s) == ["rx-list-Weekly", "rx2-tag"]


def test_mailbox():
    s = ('require ["mailbox", "fileinto"];\nif mailboxexists "INBOX" { fileinto "i"; }\n'
         'if mailboxexists "Nope" { fileinto "n"; }\nfileinto :create "New";')
    r = result(s)
    assert [a.to_json().get("mailbox") for a in r.actions] == ["i", "New"]
    assert r.actions[1].create
    assert folders(s, mailbox_exists=lambda name: True) == ["i", "n", "New"]


def test_ihave_is_decided_at_compile_time():
    s = 'require ["ihave", "fileinto"];\nif ihave "foo" { foo "x"; } else { fileinto "no-foo"; }\n' \
        'if ihave "body" { if body :contains "body" { fileinto "body"; } }'
    assert folders(s) == ["no-foo", "body"]
    r = result('require "ihave";\nerror "stop here";')
    assert "stop here" in r.errors[0] and r.actions[0].implicit


def test_environment():
    s = ('require ["environment", "fileinto", "variables"];\nif environment :is "location" "MDA" { fileinto "mda"; }\n'
         'if environment :matches "host" "*" { fileinto "host-${1}"; }\n'
         'if environment :is "nosuch" "" { fileinto "nosuch"; }')
    assert folders(s, hostname="mx.example.org") == ["mda", "host-mx.example.org"]


def test_date_and_index():
    s = ('require ["date", "index", "fileinto", "variables"];\n'
         'if date :is "date" "year" "2024" { fileinto "year"; }\n'
         'if date :zone "+0000" :is "date" "hour" "07" { fileinto "utc-hour"; }\n'
         'if date :originalzone :is "date" "time" "09:30:15" { fileinto "orig"; }\n'
         'if date :matches "date" "iso8601" "*" { fileinto "iso-${1}"; }\n'
         'if date :matches "date" "std11" "*" { fileinto "std-${1}"; }\n'
         'if date :is "date" "weekday" "1" { fileinto "monday"; }\n'
         'if date :matches "date" "julian" "*" { fileinto "jul-${1}"; }\n'
         'if header :index 2 :matches "received" "from *" { fileinto "idx-${1}"; }\n'
         'if date :index 1 :is "received" "hour" "08" { fileinto "rdate"; }\n'
         'if currentdate :zone "+0000" :is "date" "2030-01-02" { fileinto "now"; }')
    got = folders(s, timezone=0, now=1893542400.0)  # 2030-01-02 00:00 UTC
    assert got == ["year", "utc-hour", "orig", "iso-2024-06-03T07:30:15Z", "std-Mon, 03 Jun 2024 07:30:15 +0000",
                   "monday", "jul-60464", "idx-c by d; Mon, 3 Jun 2024 09:00:00 +0200", "rdate", "now"]
    assert "iso-2024-06-03T08:30:15+01:00" in folders(s, timezone=3600)


def test_editheader():
    s = ('require ["editheader", "fileinto", "variables"];\naddheader "X-New" "v1";\n'
         'addheader :last "X-Last" "v2";\ndeleteheader "received";\n'
         'if header :is "X-New" "v1" { fileinto "new"; }\ndeleteheader :index 1 "received";\n'
         'deleteheader "subject";\nif not exists "subject" { fileinto "nosubj"; }\n'
         'addheader "X-Utf" "Grüße";')
    r = result(s, options={"extensions": ["+editheader"]})
    assert [a.to_json().get("mailbox") for a in r.actions] == ["new", "nosubj"]
    raw = r.message.raw
    assert raw.startswith(b"X-Utf: =?utf-8?")
    assert b"X-New: v1\r\n" in raw and b"Subject:" not in raw
    assert raw.count(b"Received:") == 2  # protected
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.endswith(b"X-Last: v2") and body == MSG.split(b"\r\n\r\n", 1)[1]
    with pytest.raises(SieveCompileError):
        compile_text('require "editheader";')  # off by default, as in Pigeonhole


def test_vacation_decides_reply():
    to_me = b"From: boss@example.com\r\nTo: rcpt@example.org\r\nSubject: hi\r\n\r\nx\r\n"
    s = 'require "vacation";\nvacation :days 3 :subject "away" "I am away";'
    r = result(s, to_me)
    v = r.actions[0]
    assert v.type == "vacation" and v.seconds == 3 * 86400 and v.subject == "away"
    assert v.handle == "I am awayaway<default-from><NO-MIME>"
    assert r.actions[1].implicit
    # As in Pigeonhole's sieve-test, the script's decision is reported whatever the message;
    # RFC 5230 4.5 (no reply to lists, robots, auto-submitted mail) is the outbound queue's
    # check when the reply would be sent (tests/integration/test_outbound.py).
    for extra in (b"List-Id: <l.example.com>\r\n", b"Precedence: bulk\r\n", b"Auto-Submitted: auto-replied\r\n"):
        assert [a.type for a in result(s, extra + to_me).actions] == ["vacation", "keep"]
    assert [a.type for a in result(s, to_me, sender="MAILER-DAEMON@example.com").actions] == ["vacation", "keep"]
    seconds = 'require "vacation-seconds";\nvacation :seconds 60 "x";'
    opts = {"extensions": ["+vacation-seconds"]}
    assert result(seconds, to_me, options=opts).actions[0].seconds == 86400
    opts["vacation_min_period"] = 0
    assert result(seconds, to_me, options=opts).actions[0].seconds == 60
    assert result('require "vacation";\nvacation "a";\nvacation "b";', to_me).errors


def test_include_scopes_once_optional_return(tmp_path):
    from fetchdeliver.sieve import compile_file

    (tmp_path / "sub.sieve").write_text('require ["include", "variables", "fileinto"];\nglobal "g";\n'
                                        'fileinto "sub-${g}";\nset "g" "${g}x";\nset "local" "L";\n'
                                        'return;\nfileinto "notreached";\n')
    main = tmp_path / "main.sieve"
    main.write_text('require ["include", "variables", "fileinto"];\nglobal "g";\nset "g" "one";\n'
                    'include "sub";\ninclude :once "sub";\ninclude :once "sub";\n'
                    'include :optional "nothere";\nfileinto "after-${g}-${local}";\n')
    from fetchdeliver.message import Message
    from fetchdeliver.sieve import SieveEnv, run

    script = compile_file(str(main), use_cache=False)
    m = Message(MSG, "s@example.com", ["rcpt@example.org"])
    r = run(script, m, SieveEnv(m))
    assert [a.mailbox for a in r.actions] == ["sub-one", "after-onex-"]


def test_include_missing_and_circular_are_compile_errors(tmp_path):
    from fetchdeliver.sieve import compile_file

    (tmp_path / "a.sieve").write_text('require "include";\ninclude "b";\n')
    (tmp_path / "b.sieve").write_text('require "include";\ninclude "a";\n')
    (tmp_path / "m.sieve").write_text('require "include";\ninclude :global "missing";\n')
    with pytest.raises(SieveCompileError, match="circular include"):
        compile_file(str(tmp_path / "a.sieve"), use_cache=False)
    with pytest.raises(SieveCompileError, match="included global script 'missing' does not exist"):
        compile_file(str(tmp_path / "m.sieve"), use_cache=False, options={"global_dir": str(tmp_path)})
    with pytest.raises(SieveCompileError, match="invalid script name"):
        compile_text('require "include";\ninclude "../x";')


def test_enotify():
    s = ('require ["enotify", "variables", "fileinto"];\n'
         'if valid_notify_method "mailto:a@b.c" { fileinto "valid"; }\n'
         'if valid_notify_method "xmpp:a@b.c" { fileinto "xmpp"; }\n'
         'if notify_method_capability "mailto:a@b.c" "online" "maybe" { fileinto "cap"; }\n'
         'set :encodeurl "q" "a b&c";\nfileinto "enc-${q}";\n'
         'notify :importance "1" :message "hi" "mailto:alice@example.com";')
    r = result(s)
    assert [a.to_json().get("mailbox") for a in r.actions[:3]] == ["valid", "cap", "enc-a%20b%26c"]
    assert r.actions[3].to_json() == {"type": "notify", "method": "mailto:alice@example.com", "from": None,
                                      "importance": "1", "options": [], "message": "hi"}
    with pytest.raises(SieveCompileError, match="invalid method"):
        compile_text('require "enotify";\nnotify "mailto:";')


def test_duplicate_uses_callback():
    seen: dict = {}

    def dup(key, seconds):
        was = key in seen
        seen[key] = seconds
        return was

    s = 'require ["duplicate", "fileinto"];\nif duplicate { fileinto "dup"; }'
    assert folders(s, duplicate_seen=dup) == []
    assert folders(s, duplicate_seen=dup) == ["dup"]
    assert list(seen.values()) == [7 * 86400]
    r = result('require "duplicate";\nif duplicate :uniqueid "x" :seconds 60 :handle "h" { stop; }')
    assert r.duplicate_keys == [("h\0x", 60, False)]


def test_mime_foreverypart_extracttext():
    s = ('require ["mime", "foreverypart", "extracttext", "variables", "fileinto"];\n'
         'if header :mime :type "content-type" "multipart" { fileinto "top-multi"; }\n'
         'if header :mime :anychild :subtype "content-type" "pdf" { fileinto "has-pdf"; }\n'
         'if header :mime :anychild :param "filename" "content-disposition" "x.pdf" { fileinto "fname"; }\n'
         'if exists :mime :anychild "content-disposition" { fileinto "has-cd"; }\n'
         'foreverypart {\n  if header :mime :contenttype "content-type" "text/plain" {\n'
         '    extracttext :first 5 "t";\n    fileinto "part-${t}";\n  }\n'
         '  if header :mime :type "content-type" "application" { fileinto "app"; break; }\n'
         '  fileinto "iter";\n}')
    # Pigeonhole visits the message itself first and merges the repeated fileinto "iter".
    assert folders(s, MIME) == ["top-multi", "has-pdf", "fname", "has-cd", "iter", "part-Hello", "app"]
    with pytest.raises(SieveCompileError, match="break command is not valid outside"):
        compile_text('require "foreverypart";\nbreak;')


@pytest.mark.parametrize("score, plain, percent", [
    ("0", "1", "0"), ("0.4", "1", "4"), ("5", "5", "50"), ("9.9", "9", "99"), ("12", "10", "100")])
def test_spamtest_like_pigeonhole(score, plain, percent):
    raw = MSG.replace(b"X-Spam-Score: 7.5", b"X-Spam-Score: " + score.encode())
    opts = {"extensions": ["+spamtest", "+spamtestplus", "+virustest"], "spamtest_header": "X-Spam-Score",
            "spamtest_max": 10}
    s = ('require ["spamtestplus", "virustest", "fileinto", "variables"];\n'
         'if spamtest :matches "*" { fileinto "s-${1}"; }\n'
         'if spamtest :percent :matches "*" { fileinto "p-${1}"; }\n'
         'if virustest :matches "*" { fileinto "v-${1}"; }')
    assert folders(s, raw, options=opts) == [f"s-{plain}", f"p-{percent}", "v-0"]


def test_extprograms(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"clean": "printf 'X-Clean: yes\\n'; cat", "log": "printf '%s' \"$*\"",
                       "fails": "exit 1"}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    opts = {"extensions": ["+vnd.dovecot.pipe", "+vnd.dovecot.filter", "+vnd.dovecot.execute"],
            "pipe_bin_dir": str(bin_dir)}
    s = ('require ["vnd.dovecot.pipe", "vnd.dovecot.filter", "vnd.dovecot.execute", "copy",\n'
         '         "variables", "fileinto"];\n'
         'filter "clean";\nif header :is "x-clean" "yes" { fileinto "filtered"; }\n'
         'execute :output "out" "log" ["a", "b"];\nfileinto "out-${out}";\n'
         'if not execute "fails" { fileinto "failed"; }\n'
         'pipe :copy "archive" ["x"];\npipe "sa-learn";')
    r = result(s, options=opts)
    # filter and execute ran while the script ran; only the pipes are left as actions.
    assert [a.to_json() for a in r.actions if a.type == "pipe"] == [
        {"type": "pipe", "program": "archive", "args": ["x"]},
        {"type": "pipe", "program": "sa-learn", "args": []}]
    assert [a.mailbox for a in r.actions if a.type == "fileinto"] == ["filtered", "out-a b", "failed"]
    assert r.message.raw.startswith(b"X-Clean: yes\n")
    # A failing program used as a command is a runtime error: the message is kept.
    failing = result('require "vnd.dovecot.execute";\nexecute "fails";', options=opts)
    assert failing.errors and [a.type for a in failing.actions] == ["keep"]
    with pytest.raises(SieveCompileError, match="invalid program name"):
        compile_text('require "vnd.dovecot.pipe";\npipe "/bin/sh";', options=opts)
    with pytest.raises(SieveCompileError, match="unknown Sieve capability"):
        compile_text('require "vnd.dovecot.pipe";')
