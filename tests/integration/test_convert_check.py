"""`fetchdeliver convert procmailrc|maildrop FILE --check DIR`: the real old tool and the converted
script side by side on copies of a user's messages; the user's own folders stay untouched."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parent.parent / "convert_corpus" / "messages"
FD = str(Path(sys.executable).with_name("fetchdeliver"))


def _maildir(tmp: Path, names: list[str]) -> Path:
    md = tmp / "some-folder"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    for n in names:
        shutil.copy(CORPUS / f"{n}.eml", md / "cur" / f"{n}:2,S")
    return md


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.skipif(not shutil.which("procmail"), reason="procmail not installed")
def test_procmail_check_prints_the_disagreements_and_touches_nothing(tmp_path):
    home = tmp_path / "home"
    (home / "Mail").mkdir(parents=True)
    rc = home / ".procmailrc"
    # A forward inside an included file is neutralised too (else procmail's copy would not
    # show "(forwarded)" and m02 would disagree).
    (home / ".procmail").mkdir()
    (home / ".procmail" / "inc.rc").write_text(":0 c\n* ^Subject:.*plan\n! plan@example.com\n")
    rc.write_text("MAILDIR=$HOME/Mail\nDEFAULT=$MAILDIR/\nINCLUDERC=$HOME/.procmail/inc.rc\n"
                  ":0\n* ^Subject: *\\*\\*\\*\n.Spam/\n"
                  ":0 c\n* ^From:.*alice\n! alice-forward@example.com\n"
                  ":0\n* ^Subject:.*lunch\n| /bin/echo piped\n"
                  ":0\n* ^Subject:\\/.*report.*\n.Reports.$MATCH/\n"
                  ":0\n* ^Subject:.*plan\n.Plans/\n")
    md = _maildir(tmp_path, ["m01", "m02", "m03", "m17", "m21", "m38"])
    before = _tree(home), _tree(md)
    r = subprocess.run([FD, "convert", "procmailrc", str(rc), "--set", f"HOME={home}", "--check", str(md)],
                       capture_output=True, text=True, timeout=120)
    assert (_tree(home), _tree(md)) == before  # nothing delivered into the user's folders
    lines = r.stdout.splitlines()
    assert lines[0] == "message\tprocmail\tfetchdeliver\trecipe"
    assert lines[-1] == "6 message(s) checked, 2 disagreement(s)", r.stdout
    rows = {ln.split("\t")[0].split(":")[0]: ln.split("\t") for ln in lines[1:-1]}
    # procmail splits the unquoted $MATCH at its blanks; the converter warned about that line
    assert set(rows) == {"cur/m03", "cur/m17"}
    assert rows["cur/m03"][2] == "Reports/ Weekly report 12" and rows["cur/m03"][3] == f"{rc}:13"
    assert rows["cur/m03"][1] != rows["cur/m03"][2]
    assert f"{rc}:15: (approximate) $MATCH may hold a blank" in r.stderr
    assert r.returncode == 1


@pytest.mark.skipif(not shutil.which("maildrop"), reason="maildrop not installed")
def test_maildrop_check_agrees_on_a_clean_filter(tmp_path):
    home = tmp_path / "home"
    for sub in ("cur", "new", "tmp"):
        (home / "Maildir" / sub).mkdir(parents=True)
    mf = home / ".mailfilter"
    mf.write_text('DEFAULT="$HOME/Maildir"\n'
                  'if (/^Subject:.*report/)\n{\n    to "$HOME/Maildir/.Reports"\n}\n'
                  'if (/^From:.*alice/)\n{\n    cc "!alice-fwd@example.com"\n}\n'
                  'if (/^List-Id:.*<([a-z]+)/)\n    to "$DEFAULT/.Lists.$MATCH1"\n'
                  'if (/secret/:b)\n    to "$DEFAULT/.Secret"\n')
    md = _maildir(tmp_path, ["m01", "m03", "m05", "m09", "m31", "m40"])
    before = _tree(home)
    r = subprocess.run([FD, "convert", "maildrop", str(mf), "--set", f"HOME={home}", "--check", str(md)],
                       capture_output=True, text=True, timeout=120)
    assert _tree(home) == before
    assert r.stdout.splitlines()[-1] == "6 message(s) checked, 0 disagreement(s)", r.stdout
    assert r.returncode == 0, r.stderr
    # case-sensitive (:D) patterns agree too: "Weekly report" is not REPORT
    mf.write_text('DEFAULT="$HOME/Maildir"\nif (/^Subject:.*REPORT/:D)\n    to "$DEFAULT/.Caps"\n')
    r = subprocess.run([FD, "convert", "maildrop", str(mf), "--set", f"HOME={home}", "--check", str(md)],
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.splitlines()[-1] == "6 message(s) checked, 0 disagreement(s)", r.stdout
