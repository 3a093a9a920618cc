"""Differential test: real procmail with the original rc vs `fetchdeliver deliver` with the converted Sieve.

Every corpus message (tests/convert_corpus/messages and the odd-mail corpus) is
delivered by both, each into its own mail root; the folders it lands in (read back
from the Maildirs, MH folders and mbox files, not from logs) must agree (as sets). Every rc file here converts without a warning: what the converter warns
about is tested in tests/unit/test_convert_procmailrc.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fetchdeliver.convert.check import SpoolGuard
from convert_diff import CORPUS, FD, fetchdeliver_side, fill, landed, make_bin, messages, run_parallel, sender

PROCMAIL = shutil.which("procmail")
FORMAIL = shutil.which("formail")
RCDIR = CORPUS / "procmail"
# The rc files procmail starts with (the others are INCLUDERC/SWITCHRC targets).
RCS = sorted(p.stem for p in RCDIR.glob("*.rc") if not p.stem.startswith("inc-"))

pytestmark = pytest.mark.skipif(not (PROCMAIL and FORMAIL), reason="procmail/formail not installed")


def count_recipes() -> int:
    return sum(len(re.findall(r"(?m)^\s*:0", p.read_text())) for p in RCDIR.glob("*.rc"))


def test_corpus_size():
    assert count_recipes() >= 200
    assert len(messages()) >= 50


def _compare(want: dict, got: dict, script: str) -> None:
    # Folders as sets: the clone of a `c` block that delivers nothing runs the rest of the rc
    # again and procmail puts a second copy where the original goes; Sieve files a message
    # into a folder once (RFC 5228 4.2). Every other difference counts.
    want = {k: sorted(set(v)) for k, v in want.items()}
    got = {k: sorted(set(v)) for k, v in got.items()}
    diff = {k: (want.get(k), got.get(k)) for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)}
    assert not diff, ("message: (procmail, fetchdeliver)\n" +
                      "\n".join(f"  {k}: {v}" for k, v in diff.items()) + "\n" + script)


def _procmail_side(tmp: Path, msgs) -> list:
    """Commands for every (rc, message), run together: procmail spends most of its time asleep."""
    pm_bin = make_bin(tmp / "bin-pm")
    cmds = []
    for rc in RCS:
        text = (RCDIR / f"{rc}.rc").read_text()
        for name, raw in msgs:
            d = tmp / "pm" / rc / name
            mail = d / "mail"
            mail.mkdir(parents=True)
            (d / "rc").write_text(fill(text, mail, pm_bin, RCDIR))
            # LOCKSLEEP=1: procmail waits 8 s between tries on a busy lock; CORPUS_ID names piped copies.
            cmds.append(([PROCMAIL, "-f", sender(raw), str(d / "rc"), "LOCKSLEEP=1",
                          f"CORPUS_ID={rc}/{name}"], raw, {}))
    return cmds


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """rc -> (procmail's folders, fetchdeliver's folders, converted script) for the whole corpus."""
    tmp = tmp_path_factory.mktemp("procmail-diff")
    msgs = messages()
    # procmail runs in the background (mostly asleep) while fetchdeliver uses the CPU.
    pool = ThreadPoolExecutor(1)
    guard = SpoolGuard()  # procmail as root creates an empty /var/mail/$USER: not ours to leave behind
    pm_done = pool.submit(run_parallel, _procmail_side(tmp, msgs), 96)
    out = {}
    for rc in RCS:
        text = (RCDIR / f"{rc}.rc").read_text()
        mbox_inbox = "inbox.mbox" if "DEFAULT=@MAILDIR@/inbox.mbox" in text else None
        # Convert once, from a template root; each message's config points at its own root.
        base = tmp / "fd-" / rc
        fd_bin = make_bin(base / "bin-fd")
        tpl_mail = base / "tpl" / "mail"
        tpl_mail.mkdir(parents=True)
        (base / "tpl" / "rc").write_text(fill(text, tpl_mail, fd_bin, RCDIR))
        script, config = base / "rules.sieve", base / "config.toml"
        r = subprocess.run([FD, "convert", "procmailrc", str(base / "tpl" / "rc"), "-o", str(script),
                            "--config-out", str(config), "--pipe-bin-dir", str(fd_bin)],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            out[rc] = (None, f"not everything translated:\n{r.stderr}\n{script.read_text()}")
            continue
        got = fetchdeliver_side(base, script, config.read_text(), str(tpl_mail), msgs,
                                mbox_inbox_name=mbox_inbox)
        out[rc] = (got, script.read_text())
    try:
        pm_done.result()
    finally:
        pool.shutdown()
        guard.__exit__(None, None, None)
    final = {}
    for rc in RCS:
        mbox_inbox = "inbox.mbox" if "DEFAULT=@MAILDIR@/inbox.mbox" in (RCDIR / f"{rc}.rc").read_text() else None
        want = {name: landed(tmp / "pm" / rc / name / "mail",
                             tmp / "pm" / rc / name / "mail" / mbox_inbox if mbox_inbox else None) +
                landed(tmp / "bin-pm" / "out" / rc / name) for name, _ in msgs}
        final[rc] = (want,) + out[rc]
    return final


@pytest.mark.timeout(600)
@pytest.mark.parametrize("rc", RCS)
def test_same_folders_as_procmail(results, rc):
    want, got, script = results[rc]
    assert got is not None, script
    _compare(want, got, script)
    # Not vacuous: the rc routes the corpus into several folders, not all to INBOX.
    folders = {f for fs in want.values() for f in fs}
    assert len(folders - {"INBOX"}) >= 3, folders
    assert sum(1 for fs in want.values() if set(fs) - {"INBOX"}) >= 8
