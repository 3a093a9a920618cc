"""mbsync (isync) against our IMAP server: full two-way sync of a 500-message account, flags on both sides."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from fetchdeliver.delivery.maildir import MaildirStore
from fetchdeliver.imapserver.maildir import MaildirStorage
from imap_helpers import make_server, plain

N = 500


def _conf(path, port, local):
    with open(path, "w") as f:
        f.write(f"""IMAPAccount fd
Host 127.0.0.1
Port {port}
User alice
Pass secret
SSLType None
AuthMechs LOGIN PLAIN

IMAPStore fd-remote
Account fd

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel all
Far :fd-remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
""")


def _mbsync(conf):
    r = subprocess.run(["mbsync", "-c", conf, "-a"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"mbsync failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


def _local(folder):
    """{Subject: flags} of a local Maildir folder (mbsync's side)."""
    out = {}
    for sub in ("new", "cur"):
        for name in os.listdir(os.path.join(folder, sub)):
            with open(os.path.join(folder, sub, name), "rb") as f:
                raw = f.read()
            subj = next(ln for ln in raw.split(b"\n") if ln.startswith(b"Subject:"))[9:].strip()
            info = name.split(":2,", 1)[1] if ":2," in name else ""
            out[subj.decode()] = "".join(c for c in info if c.isupper())
    return out


def _remote(maildir, name="INBOX"):
    box = MaildirStorage(maildir).open(name)
    out = {}
    for m in box.sync():
        raw = box.read(m)
        subj = next(ln for ln in raw.split(b"\n") if ln.startswith(b"Subject:"))[9:].strip()
        out[subj.decode()] = m.flags
    return out


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync not installed (apt-get install isync)")
def test_mbsync_two_way(tmp_path):
    server, maildir, _pw = make_server(tmp_path, n_plain=0)
    try:
        store = MaildirStore(maildir, fsync=False)
        for i in range(N):
            store.deliver(plain(i, "sync"))
        store.create_mailbox("Work")
        store.deliver(plain(1, "work"), "Work")
        local = str(tmp_path / "local")
        os.makedirs(local)
        conf = str(tmp_path / "mbsyncrc")
        _conf(conf, server.port(), local)

        _mbsync(conf)
        got = _local(os.path.join(local, "INBOX"))
        assert len(got) == N and all(f == "" for f in got.values())
        assert set(_local(os.path.join(local, "Work"))) == {"work number 1"}
        # Byte-exact apart from line ends (mbsync stores LF) and the X-TUID header mbsync adds to
        # what it stores locally (it finds new Maildir messages again by it).
        some = os.listdir(os.path.join(local, "INBOX", "new"))[0]
        with open(os.path.join(local, "INBOX", "new", some), "rb") as f:
            raw = f.read()
        subj = next(ln for ln in raw.split(b"\n") if ln.startswith(b"Subject:"))
        i = int(subj.split()[-1])
        raw = b"".join(ln for ln in raw.splitlines(keepends=True) if not ln.startswith(b"X-TUID: "))
        assert raw.replace(b"\r\n", b"\n") == plain(i, "sync")

        # Change flags on both sides, delete on both sides, add mail on both sides.
        box = MaildirStorage(maildir).open("INBOX")
        msgs = {m.uid: m for m in box.sync()}
        remote_flag = [msgs[u] for u in (1, 2, 3)]
        box.set_flags([(m, frozenset({"\\Flagged"})) for m in remote_flag])
        box.expunge([msgs[10]])   # UID 10 holds message 9
        MaildirStore(maildir).deliver(plain(1000, "server-new"))
        inbox = os.path.join(local, "INBOX")
        changed = 0
        listing = [(sub, name) for sub in ("new", "cur") for name in sorted(os.listdir(os.path.join(inbox, sub)))]
        for sub, name in listing:
            if True:
                with open(os.path.join(inbox, sub, name), "rb") as f:
                    head = f.read()
                if b"Subject: sync number 5\n" in head or b"Subject: sync number 6\n" in head:
                    base = name.split(":2,")[0]
                    os.rename(os.path.join(inbox, sub, name), os.path.join(inbox, "cur", base + ":2,RS"))
                    changed += 1
                elif b"Subject: sync number 7\n" in head:
                    os.unlink(os.path.join(inbox, sub, name))
                    changed += 1
        assert changed == 3
        with open(os.path.join(inbox, "new", "123.local.host"), "wb") as f:
            f.write(plain(2000, "client-new"))

        _mbsync(conf)
        remote = _remote(maildir)
        local_now = _local(inbox)
        assert set(remote) == set(local_now)
        assert len(remote) == N - 2 + 2
        assert "sync number 9" not in local_now and "sync number 7" not in remote
        assert "server-new number 1000" in local_now and "client-new number 2000" in remote
        for i in (0, 1, 2):   # UIDs 1..3 hold messages 0..2
            assert local_now[f"sync number {i}"] == "F"
        for i in (5, 6):
            assert remote[f"sync number {i}"] == {"\\Seen", "\\Answered"}
        # A third run has nothing left to do and changes nothing.
        _mbsync(conf)
        assert _remote(maildir) == remote and _local(inbox) == local_now
    finally:
        server.stop()
