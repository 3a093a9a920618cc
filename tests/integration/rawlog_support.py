"""Dovecot with a raw log of what each IMAP client sent (rawlog_dir), for tests that count commands."""

from __future__ import annotations

import glob
import os

from conftest import _start


def dovecot_with_rawlog(request, extra: str = ""):
    """A started Dovecot (user alice/secret) whose IMAP sessions are logged in `dc.rawlog`."""
    import shutil
    import tempfile

    # Dovecot's mail processes run as another user: a directory they can reach and write.
    rawlog = tempfile.mkdtemp(prefix="fd-rawlog-", dir="/tmp")
    os.chmod(rawlog, 0o777)
    request.addfinalizer(lambda: shutil.rmtree(rawlog, ignore_errors=True))
    dc = _start(request, users={"alice": "secret"},
                extra_config=f"protocol imap {{\n  rawlog_dir = {rawlog}\n}}\n" + extra)
    dc.rawlog = rawlog
    return dc


def sent_commands(dc) -> list[list[str]]:
    """The commands of each logged-in session so far (Dovecot's rawlog *.in files), oldest first."""
    sessions = []
    for path in sorted(glob.glob(os.path.join(dc.rawlog, "*.in")), key=os.path.getmtime):
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        # "<timestamp> <tag> COMMAND args"
        sessions.append([" ".join(line.split(" ")[2:]) for line in lines if line.strip()])
    for path in glob.glob(os.path.join(dc.rawlog, "*")):
        os.unlink(path)
    return sessions
