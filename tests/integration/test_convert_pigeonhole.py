"""Every converted corpus script also compiles with Pigeonhole's own compiler (sievec), not just ours:
a user may take the script to Dovecot."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from convert_diff import CORPUS, FD

SIEVEC = shutil.which("sievec")
EXT = ["-o", "plugin/sieve_plugins=sieve_extprograms",
       "-o", "plugin/sieve_extensions=+vnd.dovecot.pipe +vnd.dovecot.filter +vnd.dovecot.execute"]
FILES = sorted(p for p in (CORPUS / "procmail").glob("*.rc") if not p.name.startswith("inc-")) + \
    sorted(p for p in (CORPUS / "maildrop").glob("*.mailfilter") if not p.name.startswith("inc-"))

pytestmark = pytest.mark.skipif(not SIEVEC, reason="Pigeonhole's sievec (dovecot-sieve) not installed")


def test_every_converted_corpus_script_compiles_in_pigeonhole(request):
    # sievec refuses root: it runs as nobody, who must be able to read and write here.
    tmp = Path(tempfile.mkdtemp(prefix="fd-sievec-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
    tmp.chmod(0o777)
    mail = tmp / "mail"
    failures = []
    for f in FILES:
        kind = "procmailrc" if f.suffix == ".rc" else "maildrop"
        text = f.read_text().replace("@MAILDIR@", str(mail)).replace("@BIN@", str(tmp / "bin"))
        text = text.replace("@RCDIR@", str(f.parent))
        src = tmp / f.name
        src.write_text(text)
        script = tmp / (f.stem + "-" + kind + ".sieve")
        r = subprocess.run([FD, "convert", kind, str(src), "-o", str(script)], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        script.chmod(0o666)
        argv = [SIEVEC, "-c", "/dev/null", "-o", f"mail_location=maildir:{mail}", *EXT, str(script),
                str(script) + ".svbin"]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "nobody", "--"] + argv
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp)
        if r.returncode != 0:
            failures.append(f"{f.name}: {r.stdout}{r.stderr}")
    assert len(FILES) >= 15
    assert not failures, "\n".join(failures)
