"""Small file-system helpers the deliverers share: write everything, fsync a directory, host name."""

from __future__ import annotations

import _thread  # builtin: no import cost on the MDA's path (threading is not)
import os

_HOST: str | None = None
# Group commit of directory fsyncs: {path: [lock, tickets issued, tickets covered]}.
_DIRS: dict[str, list] = {}
_DIRS_LOCK = _thread.allocate_lock()


def hostname() -> str:
    """This host's name with "/" and ":" escaped as Dovecot does for Maildir file names."""
    global _HOST
    if _HOST is None:
        _HOST = os.uname().nodename.replace("/", "\\057").replace(":", "\\072") or "localhost"
    return _HOST


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a write may be short on signals or near quota)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def fsync_dir(path: str) -> None:
    """Make the directory entries in `path` durable (new, renamed or removed files).

    Threads delivering into one folder at once (LMTP sessions) share fsyncs: a caller
    takes a ticket after its change; an fsync that began after that ticket was issued
    covers it, so a caller whose ticket is already covered returns at once.
    """
    with _DIRS_LOCK:
        st = _DIRS.get(path)
        if st is None:
            st = _DIRS[path] = [_thread.allocate_lock(), 0, 0]
        st[1] += 1
        ticket = st[1]
    with st[0]:
        if st[2] >= ticket:
            return
        covers = st[1]  # every ticket issued so far: their changes were made before this fsync
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        st[2] = covers


def strerror(e: OSError) -> str:
    return e.strerror or str(e)
