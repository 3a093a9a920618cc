"""Dot-lock files (FILE.lock) as procmail, mutt, liblockfile and Dovecot take them.

The lock exists while a file named PATH.lock exists. It is made atomically:
by default a unique temporary file is hard-linked to the lock name, and the
link count of the temporary tells whether it worked (the liblockfile/procmail
way, safe on NFS); `use_link=False` creates the lock with O_EXCL directly, as
Dovecot does for its dovecot-uidlist.lock. The content is "PID:HOST", which
Dovecot reads to clear the locks of dead processes on the same host.

A lock whose mtime is older than `stale` seconds is taken to be left over by a
crashed process and removed (Dovecot's default for mbox is 5 minutes); so is one
that names a process of this host that no longer runs, as Dovecot does. The
content of every lock removed that way is kept in `broken`, so the caller can
finish what the dead holder left half done (see `note()`).
"""

from __future__ import annotations

import errno
import os
import time

from fetchdeliver.delivery.fsio import hostname, strerror, write_all
from fetchdeliver.errors import TemporaryDeliveryError

# link() is not supported here: fall back to O_EXCL (atomic on every local file system).
_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EMLINK}


def _log():
    import logging

    return logging.getLogger(__name__)


class DotLock:
    """An exclusive PATH.lock; use as a context manager or acquire()/release()."""

    __slots__ = ("path", "timeout", "stale", "use_link", "held", "broken", "_content")

    def __init__(self, path: str, *, timeout: float = 30.0, stale: float = 300.0,
                 use_link: bool = True) -> None:
        self.path = path          # the lock file itself, e.g. /var/mail/joe.lock
        self.timeout = timeout
        self.stale = stale
        self.use_link = use_link
        self.held = False
        self.broken: list[bytes] = []  # contents of stale locks removed while acquiring
        self._content = f"{os.getpid()}:{os.uname().nodename}".encode()

    def acquire(self) -> None:
        """Take the lock, waiting with back-off; TemporaryDeliveryError after `timeout` seconds."""
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        use_link = self.use_link
        while True:
            got, use_link = self._try(use_link)
            if got:
                self.held = True
                return
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                continue  # released between our attempt and the stat: try again at once
            age = time.time() - st.st_mtime
            if age > 1:
                info = _read_lock(self.path, st.st_ino)
                dead = info is not None and _holder_is_dead(info)
                if age > self.stale or dead:
                    self._break(st.st_ino, info, age, dead)
                    continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TemporaryDeliveryError(
                    f"lock timeout: {self.path} is still held after {self.timeout:g} s "
                    f"({_describe_holder(self.path)}); will retry later")
            # Exponential back-off with jitter so waiting writers do not retry in lock-step.
            jitter = 0.5 + os.urandom(1)[0] / 255
            time.sleep(min(delay * jitter, remaining))
            delay = min(delay * 2, 0.05)

    def _break(self, ino: int, info: bytes | None, age: float, dead: bool) -> None:
        _log().warning("removing stale lock %s (%.0f s old%s)", self.path, age,
                       ", its process is gone" if dead else "")
        try:
            # Only the lock we judged: another process may have replaced it meanwhile.
            if os.stat(self.path).st_ino != ino:
                return
            os.unlink(self.path)
        except FileNotFoundError:
            return
        self.broken.append(info or b"")

    def _try(self, use_link: bool) -> tuple[bool, bool]:
        """(got the lock, keep using link()). The temporary lives only for this one attempt,
        so a process killed while waiting leaves no .lk file behind (at most one, briefly)."""
        if use_link:
            d = os.path.dirname(self.path) or "."
            tmp = os.path.join(d, f".lk{os.getpid()}.{time.time_ns():x}.{os.urandom(4).hex()}"
                                  f".{hostname()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                try:
                    write_all(fd, self._content)
                finally:
                    os.close(fd)
                try:
                    os.link(tmp, self.path)
                    return True, True
                except FileExistsError:
                    # NFS may report failure for a link that was made: the link count is the truth.
                    return os.stat(tmp).st_nlink == 2, True
                except OSError as e:
                    if e.errno not in _NO_LINK:
                        raise
            finally:
                os.unlink(tmp)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False, False
        try:
            write_all(fd, self._content)
        finally:
            os.close(fd)
        return True, False

    def note(self, line: str) -> None:
        """Add a line to the lock file after "PID:HOST": what we are doing, for whoever has to
        clean up should this process die holding the lock. Not fsynced: it is for process
        death, not power loss."""
        if not self.held:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.pwrite(fd, b"\n" + line.encode() + b"\n", len(self._content))
        finally:
            os.close(fd)

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                _log().warning("lock %s vanished while we held it (removed as stale by another "
                               "process?)", self.path)

    def __enter__(self) -> "DotLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_lock(path: str, ino: int) -> bytes | None:
    """Content of lock `path` if it is still the file with inode `ino`."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_ino != ino:
                return None
            return f.read(4096)
    except OSError:
        return None


def _holder_is_dead(info: bytes) -> bool:
    """True when the lock says "PID:HOST" for this host and that process does not exist."""
    pid, sep, host = info.split(b"\n", 1)[0].strip().partition(b":")
    if not sep or not pid.isdigit() or host.decode("utf-8", "replace") != os.uname().nodename:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _describe_holder(path: str) -> str:
    try:
        with open(path, "rb") as f:
            who = f.read(100).split(b"\n", 1)[0].strip().decode("ascii", "replace")
    except OSError as e:
        return strerror(e)
    return f"holder {who}" if who else "holder unknown"
