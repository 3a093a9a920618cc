"""Small file-system helpers the deliverers share: write everything, fsync a directory, host name."""

from __future__ import annotations

import os

_HOST: str | None = None


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
    """Make the directory entries in `path` durable (new, renamed or removed files)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def strerror(e: OSError) -> str:
    return e.strerror or str(e)
