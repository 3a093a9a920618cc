"""Differential test: real maildrop with the original mailfilter vs `fetchdeliver deliver` with the
converted Sieve, on the converter's messages and the odd-mail corpus, one mail root per message.

maildrop does not create Maildir folders, so the corpus files deliver to mbox files named like
Maildir++ folders (.Lists.debian); both sides' folders are read back as mailbox names.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from convert_diff import CORPUS, FD, fetchdeliver_side, fill, landed, make_bin, messages, run_parallel, sender

MAILDROP = shutil.which("maildrop")
RCDIR = CORPUS / "maildrop"
RCS = sorted(p.stem for p in RCDIR.glob("*.mailfilter") if not p.stem.startswith("inc-"))

pytestmark = pytest.mark.skipif(not MAILDROP, reason="maildrop not installed")
KNOWN = {"copies": [("odd-10-broken-mime", "Mime/TextPlain")]}


def test_corpus_size():
    rules = sum(len(re.findall(r"(?m)^\s*(if|elsif)\b", p.read_text())) for p in RCDIR.glob("*.mailfilter"))
    assert rules >= 100
    assert len(messages()) >= 50


@pytest.mark.timeout(300)
@pytest.mark.parametrize("rc", RCS)
def test_same_folders_as_maildrop(tmp_path, rc):
    msgs = messages()
    text = (RCDIR / f"{rc}.mailfilter").read_text()
    md_bin = make_bin(tmp_path / "bin-md")
    cmds, roots = [], {}
    for name, raw in msgs:
        d = tmp_path / "md" / name
        mail = d / "mail"
        for sub in ("cur", "new", "tmp"):
            (mail / sub).mkdir(parents=True)
        f = d / "mailfilter"
        f.write_text(fill(text, mail, md_bin, RCDIR))
        f.chmod(0o600)
        cmds.append(([MAILDROP, "-f", sender(raw), str(f)], raw, {"CORPUS_ID": name}))
        roots[name] = mail
    run_parallel(cmds)
    want = {name: landed(root) for name, root in roots.items()}
    # maildrop 2.9 exits 0 on an empty (0-byte) message without delivering it anywhere;
    # fetchdeliver never drops a message: where maildrop lost it, ours must be in INBOX.
    for name, raw in msgs:
        if raw == b"" and want[name] == []:
            want[name] = ["INBOX"]

    fd_bin = make_bin(tmp_path / "bin-fd")
    tpl_mail = tmp_path / "tpl" / "mail"
    tpl_mail.mkdir(parents=True)
    (tmp_path / "tpl" / "mailfilter").write_text(fill(text, tpl_mail, fd_bin, RCDIR))
    script, config = tmp_path / "rules.sieve", tmp_path / "config.toml"
    r = subprocess.run([FD, "convert", "maildrop", str(tmp_path / "tpl" / "mailfilter"), "-o", str(script),
                        "--config-out", str(config), "--pipe-bin-dir", str(fd_bin)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"not everything translated:\n{r.stderr}\n{script.read_text()}"
    got = fetchdeliver_side(tmp_path, script, config.read_text(), str(tpl_mail), msgs)
    # Known, narrow: the odd-mail corpus's broken MIME message has an unterminated quote in its
    # boundary parameter; maildrop still finds its parts, fetchdeliver's MIME parser (Sieve's
    # `header :mime :anychild`) sees none. Asserted exactly, so a change either way shows.
    for name, folder in KNOWN.get(rc, ()):
        assert folder in want[name] and folder not in got[name], (name, folder, want[name], got[name])
        got[name] = sorted(got[name] + [folder])
    diff = {k: (want.get(k), got.get(k)) for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)}
    assert not diff, ("message: (maildrop, fetchdeliver)\n" +
                      "\n".join(f"  {k}: {v}" for k, v in diff.items()) + "\n" + script.read_text())
    folders = {f for fs in want.values() for f in fs}
    assert len(folders - {"INBOX"}) >= 3, folders
