"""Differential test: real procmail with the original rc vs `fetchdeliver deliver` with the converted Sieve.

Every corpus message is delivered by both; the folders each message lands in
(read back from the Maildirs / mbox files, not from logs) must agree. Folders are
compared as sets: procmail delivers a second copy where a `c` block's clone falls
out of the block and runs the rest of the rc again, Sieve delivers once per folder.
"""

from __future__ import annotations

import email
import mailbox
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from email.utils import parseaddr
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parent.parent / "convert_corpus"
MESSAGES = sorted((CORPUS / "messages").glob("*.eml"))
FD = str(Path(sys.executable).with_name("fetchdeliver"))
PROCMAIL = shutil.which("procmail")
FORMAIL = shutil.which("formail")
RCS = ["maildir_headers", "mbox_size_body", "flags", "vars", "programs"]

pytestmark = pytest.mark.skipif(not (PROCMAIL and FORMAIL), reason="procmail/formail not installed")

SAVE_PIPED = """#!/bin/sh
# Test program: keep what was piped in, one file per message.
d={out}/piped${{1:+-$1}}
mkdir -p "$d"
cat > "$d/$$.$(date +%s%N)"
"""


def _sender(raw: bytes) -> str:
    return parseaddr(email.message_from_bytes(raw).get("From", ""))[1] or "nobody@example.org"


def _mid(raw: bytes) -> str:
    return email.message_from_bytes(raw)["Message-ID"]


def _maildir_name(rel: str) -> str:
    """A Maildir directory relative to the root -> mailbox name (procmail's plain or Maildir++ dirs)."""
    if rel in ("", "."):
        return "INBOX"
    parts = rel.split("/")
    if len(parts) == 1 and parts[0].startswith("."):
        parts = parts[0][1:].split(".")
    return "/".join(parts)


def landed(root: Path, inbox_mbox: Path | None = None) -> dict[str, list[str]]:
    """Message-ID -> sorted folders, from every Maildir and mbox file under root."""
    out: dict[str, list[str]] = {}

    def add(mid: str, folder: str) -> None:
        out.setdefault(mid, []).append(folder)

    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if d.name in ("new", "cur") and (d.parent / "tmp").is_dir():
            folder = _maildir_name(os.path.relpath(d.parent, root))
            for f in filenames:
                add(_mid((d / f).read_bytes()), folder)
            continue
        if (d / "new").is_dir() and (d / "tmp").is_dir():
            continue
        for f in filenames:
            p = d / f
            if p.name.endswith((".log", ".lock")) or d.name == "tmp":
                continue
            rel = os.path.relpath(p, root)
            folder = "INBOX" if inbox_mbox is not None and p == inbox_mbox else rel
            if rel.startswith("piped"):
                add(_mid(p.read_bytes()), rel.split("/")[0])
                continue
            for msg in mailbox.mbox(str(p)):
                add(msg["Message-ID"], folder)
    return {k: sorted(set(v)) for k, v in out.items()}


def _setup(tmp: Path, tool: str, rc: str) -> tuple[Path, Path, Path]:
    base = tmp / tool
    mail, binary = base / "mail", base / "bin"
    mail.mkdir(parents=True)
    binary.mkdir()
    prog = binary / "save-piped"
    prog.write_text(SAVE_PIPED.format(out=base / "out"))
    prog.chmod(0o755)
    os.symlink(FORMAIL, binary / "formail")
    for f in (CORPUS / "procmail").glob("*.rc"):
        text = f.read_text().replace("@MAILDIR@", str(mail)).replace("@BIN@", str(binary))
        (base / f.name).write_text(text)
    return base, mail, binary


def _run_all(cmds: list[tuple[list[str], bytes]], workers: int = 8) -> None:
    def run(item):
        argv, raw = item
        r = subprocess.run(argv, input=raw, capture_output=True, timeout=60)
        assert r.returncode == 0, f"{argv} exited {r.returncode}: {r.stderr.decode(errors='replace')}"

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, cmds))


def _results(base: Path, mail: Path, mbox_inbox: Path | None) -> dict[str, list[str]]:
    got = landed(mail, mbox_inbox)
    if (base / "out").exists():
        for mid, folders in landed(base / "out").items():
            got.setdefault(mid, []).extend(folders)
            got[mid] = sorted(set(got[mid]))
    return got


@pytest.mark.parametrize("rc", RCS)
def test_same_folders_as_procmail(tmp_path, rc):
    messages = [(m.name, m.read_bytes()) for m in MESSAGES]
    assert len(messages) >= 30

    pm_base, pm_mail, _ = _setup(tmp_path, "procmail", rc)
    # LOCKSLEEP=1 (a command-line assignment): procmail waits 8 s between tries on a busy mbox lock.
    _run_all([([PROCMAIL, "-f", _sender(raw), str(pm_base / f"{rc}.rc"), "LOCKSLEEP=1"], raw)
              for _, raw in messages])

    fd_base, fd_mail, fd_bin = _setup(tmp_path, "fetchdeliver", rc)
    # Convert the rc procmail used: its paths are procmail's, the folder names are what counts.
    script, config = fd_base / "rules.sieve", fd_base / "config.toml"
    r = subprocess.run([FD, "convert", "procmailrc", str(pm_base / f"{rc}.rc"), "-o", str(script),
                        "--config-out", str(config), "--pipe-bin-dir", str(fd_bin)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"not everything translated:\n{r.stderr}\n{script.read_text()}"
    cfg = config.read_text().replace(str(pm_mail), str(fd_mail))
    mbox_inbox = None
    if "mbox =" in cfg:
        mbox_inbox = fd_mail / "inbox.mbox"
    cfg = cfg.replace("[delivery]\n", f'[delivery]\nstate_dir = "{fd_base / "state"}"\n'
                      f'cache_dir = "{fd_base / "cache"}"\nfsync = false\n', 1)
    config.write_text(cfg)
    _run_all([([FD, "deliver", "-c", str(config), "-f", _sender(raw), "--rules", str(script)], raw)
              for _, raw in messages])

    want = _results(pm_base, pm_mail, pm_mail / "inbox.mbox" if mbox_inbox else None)
    got = _results(fd_base, fd_mail, mbox_inbox)
    names = {_mid(raw): name for name, raw in messages}
    diff = {names.get(k, k): (want.get(k), got.get(k)) for k in set(want) | set(got) if want.get(k) != got.get(k)}
    assert not diff, f"procmail vs fetchdeliver (file: (procmail, fetchdeliver)):\n{diff}\n{script.read_text()}"
    # Not vacuous: the rc files route the corpus into several folders, not all to INBOX.
    folders = {f for fs in want.values() for f in fs}
    assert len(folders - {"INBOX"}) >= 3, folders
    assert sum(len(v) for v in want.values()) >= len(messages) - 3
