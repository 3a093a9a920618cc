"""`fetchdeliver convert maildrop`: each mailfilter form, run through our Sieve interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sieve_helpers import actions

from fetchdeliver.convert import maildrop

ENV = {"HOME": "/home/me", "LOGNAME": "me"}
OPTS = {"extensions": ["+vnd.dovecot.pipe", "+vnd.dovecot.filter", "+vnd.dovecot.execute"]}


def conv(text: str, **kw) -> maildrop.Result:
    return maildrop.convert('DEFAULT="/home/me/Maildir"\n' + text, "mf", env=ENV, **kw)


def msg(subject="hello", frm="Alice <alice@example.org>", extra="", body="body\n"):
    return f"From: {frm}\nTo: me@example.net\nSubject: {subject}\n{extra}\n{body}".encode()


def boxes(text: str, raw: bytes) -> list:
    r = conv(text)
    assert r.complete, [str(p) for p in r.problems]
    return [a[1] if a[0] in ("fileinto", "keep") else a[0] for a in actions(r.script, raw, OPTS)]


def test_to_cc_and_default():
    mf = ('if (/^Subject:.*urgent/)\n{\n  cc "$DEFAULT/.Urgent/"\n}\n'
          'if (/^From:.*alice/)\n  to "$DEFAULT/.Alice/"\n')
    assert boxes(mf, msg(subject="urgent!")) == ["Urgent", "Alice"]
    assert boxes(mf, msg(frm="bob@x")) == ["INBOX"]
    assert boxes(mf, msg(subject="urgent", frm="bob@x")) == ["Urgent", "INBOX"]


def test_else_elsif_not_and_or_and_D():
    mf = ('if (/^Subject:.*alpha/ && !/^From:.*bob/)\n{\n  to "$DEFAULT/.A"\n}\n'
          'elsif (/^Subject:.*beta/ || /^X-B:/)\n{\n  to "$DEFAULT/.B"\n}\n'
          'else\n{\n  if (/^Subject:.*CAPS/:D)\n    to "$DEFAULT/.Caps"\n}\n')
    assert boxes(mf, msg(subject="alpha")) == ["A"]
    assert boxes(mf, msg(subject="alpha", frm="bob@x")) == ["INBOX"]
    assert boxes(mf, msg(subject="beta")) == ["B"]
    assert boxes(mf, msg(subject="zz", extra="X-B: 1\n")) == ["B"]
    assert boxes(mf, msg(subject="CAPS")) == ["Caps"]
    assert boxes(mf, msg(subject="caps")) == ["INBOX"]


def test_body_patterns_line_by_line_and_match_variables():
    mf = ('if (/^KEY: ([a-z]+)/:b)\n  to "$DEFAULT/.Key.$MATCH1/"\n'
          'if (/^List-Id:.*<([a-z]+)/)\n{\n  L=$MATCH1\n  if ($L =~ /^py/)\n    to "$DEFAULT/.Py.$L"\n}\n')
    assert boxes(mf, msg(body="x\nKEY: beta\n")) == ["Key/beta"]
    assert boxes(mf, msg(body="x KEY: beta\n")) == ["INBOX"]
    assert boxes(mf, msg(extra="List-Id: <python.org>\n")) == ["Py/python"]


def test_exit_discards_and_exception_include(tmp_path):
    inc = tmp_path / "inc"
    inc.write_text('if (/^X-Spam: yes/)\n  exit\n')
    mf = f'include "{inc}"\nexception {{\n  if (/^Subject:.*x/)\n    to "$DEFAULT/.X"\n}}\n'
    assert boxes(mf, msg(extra="X-Spam: yes\n")) == ["discard"]
    assert boxes(mf, msg(subject="x")) == ["X"]


def test_programs_and_forwards():
    r = conv('xfilter "reformail -A X-Tag:yes"\nif (/^Subject:.*fwd/)\n  to "!other@example.com"\n'
             'cc "|/usr/bin/notify --quiet"\n')
    assert r.complete
    assert 'filter "reformail" ["-A", "X-Tag:yes"]' in r.script
    assert 'redirect "other@example.com";' in r.script
    assert 'pipe :copy "notify" ["--quiet"];' in r.script


@pytest.mark.parametrize("mf, why, line", [
    ('foreach /^To: .*/\n{\n  log "$MATCH"\n}\n', "foreach", 2),
    ('if (/spam/)\n  to "$DEFAULT/.S"\n', "must start with ^Name:", 2),
    ('if (/^Subject:.*x/:h,1,2)\n  to "$DEFAULT/.S"\n', "weighted", 2),
    ('if ($SIZE > 1000)\n  to "$DEFAULT/.S"\n', "expression", 2),
    ('if (/^Subject:(?=x)/)\n  to "$DEFAULT/.S"\n', "lookaround", 2),
    ('to "/var/other"\n', "outside DEFAULT", 2),
    ('to "| sed s/a/b/ | sendmail x"\n', "shell", 2),
])
def test_untranslatable_is_a_warning_with_line_and_a_comment(mf, why, line):
    from fetchdeliver.sieve import compile_text

    r = conv(mf)
    assert not r.complete
    p = r.problems[0]
    assert why in p.text and p.file == "mf" and p.line == line
    assert f"# UNTRANSLATED (mf:{line})" in r.script
    compile_text(r.script, "x.sieve", options=OPTS)


def test_parse_errors_name_the_line_and_exit_codes(tmp_path):
    with pytest.raises(maildrop.ParseError, match="mf:4"):
        conv('if (/^Subject:.*x/)\n{\n  frobnicate "x"\n}\n')
    ok = tmp_path / "ok"
    ok.write_text('DEFAULT="/m"\nif (/^Subject:.*x/)\n  to "/m/.X/"\n')
    bad = tmp_path / "bad"
    bad.write_text('DEFAULT="/m"\nif (/x/)\n  to "/m/.X/"\n')
    syntax = tmp_path / "syntax"
    syntax.write_text('if (/x/\n')
    fd = [sys.executable, "-m", "fetchdeliver", "convert", "maildrop"]
    r = subprocess.run(fd + [str(ok)], capture_output=True, text=True)
    assert r.returncode == 0 and 'fileinto "X";' in r.stdout and not r.stderr
    r = subprocess.run(fd + [str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and f"{bad}:2:" in r.stderr and "UNTRANSLATED" in r.stdout
    r = subprocess.run(fd + [str(syntax)], capture_output=True, text=True)
    assert r.returncode == 65 and str(syntax) in r.stderr


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(rx=st.text(alphabet="ab ^$.*+?()|[]\\<>:-{}1", max_size=14), flags=st.sampled_from(["", ":b", ":hb", ":D"]))
def test_any_pattern_gives_a_script_that_compiles(rx, flags):
    """Whatever the pattern, the printed script compiles (or the file is refused as not mailfilter)."""
    from fetchdeliver.sieve import compile_text

    for cond in (f"/^Subject:{rx}/{flags}", f"/{rx}/{flags}", f"$S =~ /{rx}/"):
        try:
            r = conv(f'S="x"\nif ({cond})\n{{\n  to "$DEFAULT/.Box.$MATCH1"\n}}\n')
        except maildrop.ParseError:
            continue
        compile_text(r.script, "x.sieve", options=OPTS)
