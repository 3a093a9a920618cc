"""`fetchdeliver convert procmailrc`: each recipe form, run through our Sieve interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sieve_helpers import actions

from fetchdeliver.convert import procmailrc
from fetchdeliver.convert.procmail_regex import Untranslatable, header_tests, text_pattern

ENV = {"HOME": "/home/me", "LOGNAME": "me"}
OPTS = {"extensions": ["+vnd.dovecot.pipe", "+vnd.dovecot.filter", "+vnd.dovecot.execute"]}


def conv(rc: str, **kw) -> procmailrc.Result:
    text = "MAILDIR=/home/me/Mail\nDEFAULT=$MAILDIR/\n" + rc
    return procmailrc.convert(text, "rc", env=ENV, **kw)


def msg(subject="hello", frm="Alice <alice@example.org>", to="me@example.net", extra="", body="body\n"):
    return (f"From: {frm}\nTo: {to}\nSubject: {subject}\n{extra}\n{body}").encode()


def run(rc: str, raw: bytes, **env) -> list:
    r = conv(rc)
    assert r.complete, [str(p) for p in r.problems]
    return actions(r.script, raw, OPTS, **env)


def boxes(rc: str, raw: bytes, **env) -> list[str]:
    """Where the message goes: fileinto mailboxes and keep (INBOX)."""
    return [a[1] if a[0] in ("fileinto", "keep") else a[0] for a in run(rc, raw, **env)]


def test_header_condition_maildir_and_mbox_folders():
    rc = ":0\n* ^From:.*alice\n.Friends.Alice/\n:0\n* ^Subject:.*invoice\nbilling\n"
    assert boxes(rc, msg()) == ["Friends/Alice"]
    assert boxes(rc, msg(frm="bob@x", subject="Your Invoice")) == ["billing"]
    assert boxes(rc, msg(frm="bob@x")) == ["INBOX"]


def test_case_insensitive_unless_D():
    rc = ":0 D\n* ^Subject: CAPS\ncaps/\n:0\n* ^subject: loud\nloud/\n"
    assert boxes(rc, msg(subject="CAPS here")) == ["caps"]
    assert boxes(rc, msg(subject="caps here")) == ["INBOX"]
    assert boxes(rc, msg(subject="LOUD")) == ["loud"]


def test_negation_and_several_conditions():
    rc = ":0\n* ^From:.*alice\n* ! ^Subject:.*\\[urgent\\]\nalice/\n"
    assert boxes(rc, msg()) == ["alice"]
    assert boxes(rc, msg(subject="[urgent] now")) == ["INBOX"]


def test_to_macro_matches_cc_and_address_boundaries():
    rc = ":0\n* ^TO_bob@example\\.org\nbob/\n"
    assert boxes(rc, msg(to="x@y", extra="Cc: Bob <bob@example.org>\n")) == ["bob"]
    assert boxes(rc, msg(to="jimbob@example.org")) == ["INBOX"]


def test_from_daemon():
    rc = ":0\n* ^FROM_DAEMON\ndaemon/\n"
    assert boxes(rc, msg(frm="MAILER-DAEMON@mx.example.net")) == ["daemon"]
    assert boxes(rc, msg(extra="Precedence: bulk\n")) == ["daemon"]
    assert boxes(rc, msg()) == ["INBOX"]


def test_body_flag_and_line_anchors():
    rc = ":0 B\n* ^KEYWORD:\nkw/\n"
    assert boxes(rc, msg(body="first\nKEYWORD: x\n")) == ["kw"]
    assert boxes(rc, msg(body="first KEYWORD: x\n")) == ["INBOX"]
    assert boxes(rc, msg(subject="KEYWORD: in the header")) == ["INBOX"]


def test_size_conditions():
    rc = ":0\n* > 1000\nbig/\n:0\n* < 200\nsmall/\n"
    assert boxes(rc, msg(body="x" * 2000)) == ["big"]
    assert boxes(rc, msg(body="x")) == ["small"]
    assert boxes(rc, msg(body="x" * 500)) == ["INBOX"]


def test_carbon_copy_keeps_default_delivery():
    rc = ":0 c\n* ^Subject:.*report\narchive/\n"
    assert sorted(boxes(rc, msg(subject="report"))) == ["INBOX", "archive"]


def test_A_and_E_flags():
    rc = (":0 c\n* ^Subject:.*report\narchive/\n"
          ":0 A\n* ^From:.*carol\ncarol/\n"
          ":0 E\n* ^Subject:.*invoice\nbilling/\n")
    assert sorted(boxes(rc, msg(subject="report", frm="carol@x"))) == ["archive", "carol"]
    # the A recipe did not run, so E does
    assert sorted(boxes(rc, msg(subject="report invoice"))) == ["archive", "billing"]
    # the A recipe's condition chain is false (no report), E runs
    assert boxes(rc, msg(subject="invoice", frm="carol@x")) == ["billing"]


def test_nested_and_c_blocks():
    rc = (":0\n* ^Subject:.*lunch\n{\n  :0\n  * ^From:.*alice\n  social/\n  :0 E\n  other/\n}\n"
          ":0 c\n{\n  :0\n  * ^X-Copy: yes\n  copies/\n  :0\n  more/\n}\n")
    assert boxes(rc, msg(subject="lunch")) == ["social"]
    assert boxes(rc, msg(subject="lunch", frm="bob@x")) == ["other"]
    # the clone delivers once and stops; the original goes on to DEFAULT
    assert sorted(boxes(rc, msg(extra="X-Copy: yes\n"))) == ["INBOX", "copies"]
    assert sorted(boxes(rc, msg())) == ["INBOX", "more"]


def test_variables_dollar_conditions_and_match():
    rc = ("BOSS=carol@corp\\.example\n"
          ":0\n* $ ^From:.*$BOSS\nboss/\n"
          ":0\n* ^Subject:.*\\/(monthly|weekly)\n.Reports.$MATCH/\n"
          ":0\n* ^List-Id:.*<\\/[a-z-]+\n{\n  NAME=$MATCH\n  :0\n  * NAME ?? ^py\n  .Lists.$NAME/\n}\n")
    assert boxes(rc, msg(frm="carol@corp.example")) == ["boss"]
    assert boxes(rc, msg(subject="the weekly report")) == ["Reports/weekly"]
    assert boxes(rc, msg(extra="List-Id: <python-dev.python.org>\n")) == ["Lists/python-dev"]
    assert boxes(rc, msg(extra="List-Id: <debian.lists>\n")) == ["INBOX"]


def test_redirect_discard_and_default():
    rc = ":0\n* ^Subject:.*fwd\n! -oi other@example.com\n:0\n* ^Subject:.*spam\n/dev/null\n"
    assert run(rc, msg(subject="fwd this")) == [("redirect", "other@example.com")]
    assert run(rc, msg(subject="spam")) == [("discard",)]
    r = conv(":0 c\n! a@x b@y\n")
    assert 'redirect :copy "a@x";' in r.script and 'redirect :copy "b@y";' in r.script


def test_pipe_and_filter_need_programs_in_pipe_bin_dir():
    r = conv(":0 fw\n| /usr/bin/formail -A \"X-Tag: yes\"\n:0 c\n| /usr/local/bin/notify --quiet\n",
             pipe_bin_dir="/srv/bin")
    assert r.complete
    assert 'filter "formail" ["-A", "X-Tag: yes"]' in r.script
    assert 'pipe :copy "notify" ["--quiet"];' in r.script
    assert "formail -> /usr/bin/formail" in r.script
    assert 'pipe_bin_dir = "/srv/bin"' in r.config and "+vnd.dovecot.filter" in r.config


def test_filter_changes_what_later_recipes_see(tmp_path):
    prog = tmp_path / "tagger"
    prog.write_text("#!/bin/sh\nprintf 'X-Tag: yes\\n'\ncat\n")
    prog.chmod(0o755)
    r = conv(":0 fw\n| tagger\n:0\n* ^X-Tag: yes\ntagged/\n")
    assert r.complete
    opts = dict(OPTS, pipe_bin_dir=str(tmp_path))
    assert [a[1] for a in actions(r.script, msg(), opts)] == ["tagged"]


def test_includerc_is_inlined(tmp_path):
    inc = tmp_path / "lists.rc"
    inc.write_text(":0\n* ^List-Id:.*debian\ndebian/\n")
    rc = f"INCLUDERC={inc}\n:0\n* ^Subject:.*x\nx/\n"
    assert boxes(rc, msg(extra="List-Id: <debian-user.lists>\n")) == ["debian"]


def test_logfile_and_lockfiles_are_not_warnings():
    r = conv("LOGFILE=$HOME/pm.log\nVERBOSE=yes\n:0:\n* ^From:.*a\nmbox\n")
    assert r.complete
    assert "# LOGFILE=$HOME/pm.log  -- ignored" in r.script


@pytest.mark.parametrize("rc, why", [
    (":0\n* foo\nfoo/\n", "must start with ^Name:"),
    (":0\n* ^Subject:.*a$^X-B:\nfoo/\n", "several header lines"),
    (":0\n* 10^1 ^Subject:.*x\nfoo/\n", "weighted"),
    (":0\n* ? test -f /tmp/x\nfoo/\n", "exit code"),
    (":0 h\n* ^Subject:.*x\nheaders\n", "h alone"),
    (":0\n| sed s/a/b/ | sendmail x\n", "needs a shell"),
    (":0 e\nfailed/\n", "e flag"),
    ("FROM=`formail -xFrom:`\n", "`command`"),
    (":0\n/var/spool/other\n", "outside MAILDIR"),
    (":0\n* B ?? ^backup done: \\/[0-9]+\nBackup.$MATCH/\n", "body test sets no match variables"),
])
def test_untranslatable_is_a_warning_with_line_and_a_comment(rc, why):
    r = conv(rc)
    assert not r.complete
    p = r.problems[0]
    assert why in p.text and p.file == "rc" and p.line >= 3
    assert f"# UNTRANSLATED (rc:{p.line})" in r.script
    # the script around it still compiles
    from fetchdeliver.sieve import compile_text

    compile_text(r.script, "x.sieve", options=OPTS)


def test_regex_dialect():
    # \< \> consume a character (in a header value the blank before it or the newline after it),
    # {} are literal, $ literal is not a Sieve variable
    assert text_pattern("\\<cat\\>", []).text == "[^a-zA-Z0-9_]cat[^a-zA-Z0-9_]"
    assert header_tests("^Subject:.*\\<cat\\>", "", [])[0].text == \
        'header :regex "Subject" "^.*(^|[^a-zA-Z0-9_])cat([^a-zA-Z0-9_]|$)"'
    assert text_pattern("a{2}", []).text == "a\\{2\\}"
    assert text_pattern("[^x]", []).text == "[^x${hex:0A}]"
    t = header_tests("^Subject:[ \t]*\\$5", "", [])[0].text
    assert t == 'header :regex "Subject" "^[$]5"'
    with pytest.raises(Untranslatable):
        header_tests("^X-.*: a", "", [])


def test_parse_errors_name_the_line():
    with pytest.raises(procmailrc.ParseError, match="rc:2"):
        procmailrc.convert("A=1\n}\n", "rc", env=ENV)
    with pytest.raises(procmailrc.ParseError, match="unknown recipe flag"):
        procmailrc.convert(":0 Q\nx\n", "rc", env=ENV)


def test_command_exit_codes(tmp_path):
    ok = tmp_path / "ok.rc"
    ok.write_text("MAILDIR=/m\nDEFAULT=/m/\n:0\n* ^Subject:.*x\nx/\n")
    bad = tmp_path / "bad.rc"
    bad.write_text("MAILDIR=/m\n:0\n* foo\nx/\n")
    fd = [sys.executable, "-m", "fetchdeliver", "convert", "procmailrc"]
    r = subprocess.run(fd + [str(ok)], capture_output=True, text=True)
    assert r.returncode == 0 and 'fileinto "x";' in r.stdout and not r.stderr
    r = subprocess.run(fd + [str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and f"{bad}:2:" in r.stderr and "UNTRANSLATED" in r.stdout
    r = subprocess.run(fd + [str(tmp_path / "missing")], capture_output=True, text=True)
    assert r.returncode == 66


# -- issue 17: always a working script, procmail's dialect exactly ----------------------------

def test_blank_star_after_the_colon_is_not_a_bare_star():
    # `^Subject: *\*\*\*` once became `^*\*\*\*` ("nothing to repeat") and exit 0.
    rc = ":0\n* ^Subject: *\\*\\*\\*\nstars/\n"
    r = conv(rc)
    assert r.complete
    assert boxes(rc, msg(subject="*** SPAM *** pills")) == ["stars"]
    assert boxes(rc, msg(subject="no stars")) == ["INBOX"]
    assert boxes(":0\n* ^Subject:[ \t]+re:\nre/\n", msg(subject="Re: x")) == ["re"]


def test_a_translation_that_does_not_compile_becomes_a_warning_and_the_script_compiles():
    from fetchdeliver.convert import checked
    from fetchdeliver.sieve import compile_text

    # The mechanism: spans around each recipe; the innermost one around the error is replaced.
    bad = 'if header :regex "Subject" "^(" { fileinto "x"; }'
    lines = [checked.open_marker(0), 'if header :contains "From" "x" {', "    " + checked.open_marker(1),
             "    " + bad, "    " + checked.close_marker(1), '    fileinto "outer";', "}",
             checked.close_marker(0)]
    failed = []
    out = checked.make_compile(lines, {"fileinto", "regex"},
                               lambda n, msg, indent: failed.append((n, msg)) or [f"# gone {n}"])
    assert [n for n, _ in failed] == [1] and "regular expression" in failed[0][1]
    assert out == ['if header :contains "From" "x" {', "    # gone 1", '    fileinto "outer";', "}"]
    compile_text("require [\"fileinto\", \"regex\"];\n" + "\n".join(out), "x.sieve")
    # procmail reads a quantifier with nothing to repeat literally: `a**` is `a*\*`
    rc = ":0\n* ^Subject:.*xa**y\nstars/\n:0\n* ^Subject: (*x)\nparen/\n"
    assert conv(rc).complete
    assert boxes(rc, msg(subject="xaa*y")) == ["stars"]
    assert boxes(rc, msg(subject="xy")) == ["INBOX"]
    assert boxes(rc, msg(subject="*x")) == ["paren"]


def test_match_left_side_is_as_short_as_possible_and_later_conditions_see_it():
    rc = (":0\n* ^X-Hdr:.*\\/[0-9]+\n.N.$MATCH/\n"
          ":0\n* ^List-Id:.*<\\/[a-z]+\n* MATCH ?? ^py\n.Py.$MATCH/\n")
    assert boxes(rc, msg(extra="X-Hdr: ab 123 456\n")) == ["N/123"]   # greedy would give 6
    assert boxes(rc, msg(extra="List-Id: <python.org>\n")) == ["Py/python"]
    assert boxes(rc, msg(extra="List-Id: <debian.org>\n")) == ["INBOX"]


def test_match_right_after_the_colon_is_approximate_and_says_so():
    r = conv(":0\n* ^Subject:\\/.*\n{ S=$MATCH }\n")
    assert [p.line for p in r.problems] == [4] and "approximate" in r.problems[0].text
    assert 'set "MATCH" " ${1}";' in r.script
    assert conv(":0\n* ^Subject: *\\/[^ ].*\n{ S=$MATCH }\n").complete


def test_variable_conditions_are_case_insensitive_and_word_edges_need_a_character():
    rc = "S=\"RE: FW: x\"\n:0\n* S ?? ^re:\nre/\n"
    assert boxes(rc, msg()) == ["re"]
    # \> at the very end of a variable matches nothing (procmail: it is a character)
    assert boxes("S=\"a plan\"\n:0\n* S ?? \\<plan\\>\nplan/\n", msg()) == ["INBOX"]
    assert boxes("S=\"a plan b\"\n:0\n* S ?? \\<plan\\>\nplan/\n", msg()) == ["plan"]


def test_formail_duplicate_suppression_is_sieve_duplicate():
    rc = (":0 Whc: msgid.lock\n| formail -D 8192 msgid.cache\n"
          ":0 a\n.Dups/\n")
    r = conv(rc)
    assert r.complete and 'duplicate :handle "msgid.cache"' in r.script
    seen: set = set()

    def dup(key, seconds):
        hit = key in seen
        seen.add(key)
        return hit

    raw = msg(extra="Message-ID: <one@x>\n")
    assert boxes(rc, raw, duplicate_seen=dup) == ["INBOX"]
    assert boxes(rc, raw, duplicate_seen=dup) == ["Dups"]
    r = conv(":0 Wh: msgid.lock\n| formail -D 8192 msgid.cache\n")
    assert "discard;" in r.script
    assert not conv(":0 h\n| formail -D 8192 msgid.cache\n").complete  # no w/W: procmail ignores the exit code


def test_mh_folder_becomes_a_mailbox_of_that_name():
    r = conv(":0\n* ^Subject:.*x\nlists/debian/.\n")
    assert r.complete and 'fileinto "lists/debian";' in r.script and "MH folder" in r.script


def test_switchrc_ends_the_rc(tmp_path):
    other = tmp_path / "other.rc"
    other.write_text(":0\n* ^Subject:.*a\na/\n")
    rc = f":0\n* ^Subject:.*b\nb/\nSWITCHRC={other}\n:0\nnever/\n"
    assert boxes(rc, msg(subject="a")) == ["a"]
    assert boxes(rc, msg(subject="zzz")) == ["INBOX"]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(rx=st.text(alphabet="ab ^$.*+?()|[]\\/<>:-", max_size=14),
       flags=st.sampled_from(["", "B", "HB", "D"]))
def test_any_condition_gives_a_script_that_compiles(rx, flags):
    """Whatever the regex, the printed script compiles (or the rc is refused as not procmailrc)."""
    from fetchdeliver.sieve import compile_text

    for cond in (f"^Subject:{rx}", rx, f"S ?? {rx}"):
        try:
            r = conv(f"S=x\n:0 {flags}\n* {cond}\n.Box/\n:0\n* ^From:.*\\/[a-z]+\n.F.$MATCH/\n")
        except procmailrc.ParseError:
            continue
        compile_text(r.script, "x.sieve", options=OPTS)


def test_a_group_around_the_whole_condition_groups_its_alternatives():
    rc = ":0\n* (^TO_alice@example\\.org|^From:.*bob@)\nab/\n"
    assert boxes(rc, msg(to="alice@example.org")) == ["ab"]
    assert boxes(rc, msg(frm="bob@x")) == ["ab"]
    assert boxes(rc, msg(frm="carol@x")) == ["INBOX"]
