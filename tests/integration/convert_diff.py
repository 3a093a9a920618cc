"""The differential harness for the converters: the old tool (procmail, maildrop) and
`fetchdeliver deliver` with the converted script, on the same messages, one mail root
per (rule file, message) so that whatever lands in a root belongs to that message
(the odd-mail corpus has messages with no header to tell them apart by).

Folders are read back from the Maildirs, MH folders and mbox files, not from logs.
"""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from email.utils import parseaddr
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
CORPUS = TESTS / "convert_corpus"
FD = str(Path(sys.executable).with_name("fetchdeliver"))
BATCH = str(Path(__file__).resolve().parent / "deliver_batch.py")

SAVE_PIPED = """#!/bin/sh
# Test program: keep what was piped in, under the message's corpus name.
d={out}/$CORPUS_ID/piped${{1:+-$1}}
mkdir -p "$d"
cat > "$d/$$.$(date +%s%N)"
"""


def messages() -> list[tuple[str, bytes]]:
    """The corpus: the converter's own messages and the odd-mail corpus, (name, raw)."""
    out = [(p.stem, p.read_bytes()) for p in sorted((CORPUS / "messages").glob("*.eml"))]
    out += [("odd-" + p.stem, p.read_bytes()) for p in sorted((TESTS / "corpus" / "odd").glob("*.eml"))]
    return out


def sender(raw: bytes) -> str:
    try:
        addr = parseaddr(email.message_from_bytes(raw).get("From", "") or "")[1]
    except Exception:
        addr = ""
    return addr if "@" in addr and " " not in addr else "nobody@example.org"


def _maildir_name(rel: str) -> str:
    if rel in ("", "."):
        return "INBOX"
    parts = rel.split("/")
    if len(parts) == 1 and parts[0].startswith(".") and len(parts[0]) > 1:
        parts = parts[0][1:].split(".")
    return "/".join(parts)


def _mbox_count(p: Path) -> int:
    data = p.read_bytes()
    if not data:
        return 0
    return max(1, data.count(b"\nFrom ") + data.startswith(b"From "))


def landed(root: Path, inbox_mbox: Path | None = None) -> list[str]:
    """The folders under root that hold a message (one entry per copy), sorted."""
    out: list[str] = []
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        rel = os.path.relpath(d, root)
        if d.name in ("new", "cur") and (d.parent / "tmp").is_dir():
            out += [_maildir_name(os.path.relpath(d.parent, root))] * len(filenames)
            continue
        if d.name == "tmp":
            continue
        if (d / "new").is_dir() and (d / "tmp").is_dir():
            # A Maildir's own files are its index and state; mbox files beside its folders
            # (maildrop's `to "$DEFAULT/.Lists.x"`) are mailboxes.
            filenames = [f for f in filenames if f.startswith(".") and not f.endswith(".lock")]
        if rel.split("/")[0].startswith("piped"):
            out += [rel.split("/")[0]] * len(filenames)
            continue
        mh = [f for f in filenames if f.isdigit()]
        if mh:
            out += [rel] * len(mh)
        for f in filenames:
            p = d / f
            if f.isdigit() or f.endswith((".log", ".lock", ".cache")) or f.startswith("msgid"):
                continue
            folder = "INBOX" if inbox_mbox is not None and p == inbox_mbox else _maildir_name(os.path.relpath(p, root))
            out += [folder] * _mbox_count(p)
    return sorted(out)


# Many workers: procmail sleeps a second when it delivers to several Maildirs within one second
# (its unique-name scheme), without using the CPU.
def run_parallel(cmds: list[tuple[list[str], bytes, dict]], workers: int = 24) -> None:
    def run(item):
        argv, raw, env = item
        r = subprocess.run(argv, input=raw, capture_output=True, timeout=60, env={**os.environ, **env})
        assert r.returncode == 0, f"{argv} exited {r.returncode}: {r.stderr.decode(errors='replace')}"

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, cmds))


def make_bin(base: Path) -> Path:
    """A bin directory with the test program save-piped and formail."""
    binary = base / "bin"
    binary.mkdir(parents=True, exist_ok=True)
    prog = binary / "save-piped"
    prog.write_text(SAVE_PIPED.format(out=base / "out"))
    prog.chmod(0o755)
    formail = shutil.which("formail")
    if formail:
        os.symlink(formail, binary / "formail")
    return binary


def fill(text: str, mail: Path, binary: Path, rcdir: Path) -> str:
    return text.replace("@MAILDIR@", str(mail)).replace("@BIN@", str(binary)).replace("@RCDIR@", str(rcdir))


def deliver_batch(jobs: list[dict], tmp: Path) -> None:
    """Every job through fetchdeliver.mda.main in one interpreter; all must exit 0."""
    jf = tmp / f"jobs-{len(list(tmp.glob('jobs-*')))}.json"
    jf.write_text(json.dumps(jobs))
    r = subprocess.run([sys.executable, BATCH, str(jf)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    codes = json.loads(r.stdout)
    bad = [(j["id"], c) for j, c in zip(jobs, codes) if c != 0]
    assert not bad, f"deliver failed: {bad}\n{r.stderr[-3000:]}"


def fetchdeliver_side(tmp: Path, script: Path, config_text: str, template_root: str, msgs, *,
                      mbox_inbox_name: str | None = None) -> dict[str, list[str]]:
    """Deliver each message into its own root with the converted script; name -> folders."""
    base = tmp / "fd"
    jobs = []
    roots = {}
    for name, raw in msgs:
        root = base / name / "mail"
        root.mkdir(parents=True)
        msgfile = base / name / "message"
        msgfile.write_bytes(raw)
        cfg = config_text.replace(template_root, str(root))
        cfg = cfg.replace("[delivery]\n", f'[delivery]\nstate_dir = "{base / name / "state"}"\n'
                          f'cache_dir = "{tmp / "sieve-cache"}"\nfsync = false\n', 1)
        cfgfile = base / name / "config.toml"
        cfgfile.write_text(cfg)
        jobs.append({"argv": ["-c", str(cfgfile), "-f", sender(raw), "--rules", str(script)],
                     "message": str(msgfile), "id": name})
        roots[name] = root
    deliver_batch(jobs, tmp)
    out = {}
    for name, root in roots.items():
        inbox = root / mbox_inbox_name if mbox_inbox_name else None
        out[name] = landed(root, inbox) + landed(tmp / "bin-fd" / "out" / name)
    return out
