"""mbox delivery in mboxrd format, locked the way procmail, mutt and Dovecot lock.

Each message is appended as

    From <sender or MAILER-DAEMON> <asctime in UTC>\\n
    <message, every line matching ^>*From  given one more '>'>
    [\\n if the message did not end with one]
    \\n

Locks, in Dovecot's order (mbox_write_locks = dotlock fcntl): the FILE.lock
dot-lock (stale after 5 minutes), then an fcntl write lock on the file, both
waited for with back-off up to `lock_timeout`. The append is fsynced; on any
error the file is truncated back to its old length, so it never holds half a
message. A writer killed mid-append cannot do that itself: it leaves its dot-lock,
in which it noted where its append started, and the next writer that breaks
the lock (its process is gone) cuts the unfinished message off.

Flags, when given, become Status:/X-Status:/X-Keywords: headers put at the top
of the message: Dovecot reads them (and hides them from IMAP clients); without
flags the message bytes are stored unchanged.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from fetchdeliver.delivery.base import MailStore, Receipt
from fetchdeliver.delivery.fsio import fsync_dir, strerror, write_all
from fetchdeliver.delivery.names import mbox_relpath, name_from_mbox_relpath
from fetchdeliver.errors import InvalidMailboxName, MailboxNotFound, TemporaryDeliveryError

DOTLOCK_STALE = 300.0  # seconds; Dovecot's mbox_lock_timeout default, also liblockfile's
_JOURNAL = "mbox-append"  # the line a writer adds to its dot-lock: START LENGTH of its append
# Dovecot's mbox flag headers (src/lib-storage/index/mbox/mbox-sync-parse.c).
_STATUS = (("\\seen", "R"),)
_XSTATUS = (("\\answered", "A"), ("\\flagged", "F"), ("\\draft", "T"), ("\\deleted", "D"))


def _log():
    import logging

    return logging.getLogger(__name__)


# -- format -------------------------------------------------------------------------

def from_line(sender: str, when: float | None = None) -> bytes:
    """The "From " separator line (with its newline) for a message from `sender`."""
    s = sender.strip().strip("<>") if sender else ""
    # The line is split on spaces by every reader: the address must be one word.
    s = "".join(c if " " < c != "\x7f" else "_" for c in s) or "MAILER-DAEMON"
    stamp = time.asctime(time.gmtime(time.time() if when is None else when))
    return f"From {s} {stamp}\n".encode("utf-8", "surrogateescape")


def mboxrd_escape(raw: bytes) -> bytes:
    """Give every line matching ^>*From  one more '>' (lines end at LF, as all mbox readers see it)."""
    if b"From " not in raw:
        return raw
    lines = raw.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(b"From ") or (line.startswith(b">") and line.lstrip(b">").startswith(b"From ")):
            lines[i] = b">" + line
    return b"\n".join(lines)


def mboxrd_unescape(text: bytes) -> bytes:
    """Inverse of mboxrd_escape."""
    if b"From " not in text:
        return text
    lines = text.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
            lines[i] = line[1:]
    return b"\n".join(lines)


def split_mboxrd(data: bytes) -> list[tuple[bytes, bytes]]:
    """[(From_ line without newline, message bytes unescaped)] of an mbox written by this module.

    A message comes back as delivered, plus the final newline added when it had
    none. Raises ValueError when `data` does not start with a From_ line.
    """
    if not data:
        return []
    if not data.startswith(b"From "):
        raise ValueError("not an mbox: it does not begin with a 'From ' line")
    out = []
    pos = 0
    n = len(data)
    while pos < n:
        eol = data.find(b"\n", pos)
        if eol < 0:
            raise ValueError(f"truncated From_ line at offset {pos}")
        sep = data[pos:eol]
        start = eol + 1
        # Every message block ends with our blank line, so the next separator is "\nFrom ".
        nxt = data.find(b"\nFrom ", start)
        if nxt == -1:
            block, pos = data[start:], n
        else:
            block, pos = data[start:nxt + 1], nxt + 1
        if not block.endswith(b"\n"):
            raise ValueError(f"message at offset {start} does not end with the blank separator line")
        out.append((sep, mboxrd_unescape(block[:-1])))
    return out


def flag_headers(flags, eol: bytes = b"\n", known_keywords: dict[str, str] | None = None) -> bytes:
    """Status:/X-Status:/X-Keywords: lines for IMAP `flags`, as Dovecot writes and reads them.

    Dovecot ignores a whole X-Keywords header when one of its keywords is not
    listed in the X-IMAPbase header of the first message, so only keywords in
    `known_keywords` ({lower-cased: Dovecot's spelling}) are written.
    """
    lower = {f.lower() for f in flags}
    out = b""
    status = "".join(ch for f, ch in _STATUS if f in lower)
    if status:
        out += b"Status: " + status.encode() + eol
    xstatus = "".join(ch for f, ch in _XSTATUS if f in lower)
    if xstatus:
        out += b"X-Status: " + xstatus.encode() + eol
    keywords: list[str] = []
    for f in flags:
        if f.startswith("\\"):
            continue
        name = (known_keywords or {}).get(f.lower())
        if name is None:
            _log().info("keyword %r not stored in mbox: Dovecot only reads keywords it already "
                        "lists in X-IMAPbase", f)
        elif name not in keywords:
            keywords.append(name)
    if keywords:
        out += b"X-Keywords: " + " ".join(keywords).encode() + eol
    return out


def format_message(raw: bytes, sender: str = "", flags=(), when: float | None = None,
                   known_keywords: dict[str, str] | None = None) -> bytes:
    """One complete mboxrd entry: From_ line, flag headers, escaped message, newline, blank line."""
    head = from_line(sender, when)
    if flags:
        first = raw.find(b"\n")
        eol = b"\r\n" if first > 0 and raw[first - 1:first] == b"\r" else b"\n"
        raw = flag_headers(flags, eol, known_keywords) + raw
    body = mboxrd_escape(raw)
    tail = b"\n" if body.endswith(b"\n") else b"\n\n"
    return head + body + tail


def imapbase_keywords(fd: int) -> dict[str, str]:
    """Keywords Dovecot lists in the X-IMAPbase header of the file's first message."""
    data = os.pread(fd, 65536, 0)
    if not data.startswith(b"From "):
        return {}
    end = data.find(b"\n\n")
    end2 = data.find(b"\r\n\r\n")
    if end < 0 or (0 <= end2 < end):
        end = end2
    head = data[data.find(b"\n") + 1:end if end >= 0 else len(data)]
    value = None
    for line in head.split(b"\n"):
        if value is not None:
            if line[:1] in (b" ", b"\t"):
                value += b" " + line
                continue
            break
        if line[:11].lower() == b"x-imapbase:":
            value = line[11:]
    if value is None:
        return {}
    words = value.decode("utf-8", "replace").split()[2:]  # UIDVALIDITY, next UID, then keywords
    return {w.lower(): w for w in words}


# -- store --------------------------------------------------------------------------

class MboxStore(MailStore):
    """INBOX is one mbox file; other mailboxes are files under `folder_dir` ("Work/Reports")."""

    kind = "mbox"

    def __init__(self, inbox_path: str, folder_dir: str | None = None, *, fsync: bool = True,
                 lock_timeout: float = 30.0) -> None:
        self.inbox_path = inbox_path
        self.folder_dir = folder_dir or os.path.join(os.path.dirname(os.path.abspath(inbox_path)),
                                                     "mail")
        self.fsync = fsync
        self.lock_timeout = lock_timeout

    def path_for(self, mailbox: str) -> str:
        """File of `mailbox`; raises InvalidMailboxName."""
        rel = mbox_relpath(mailbox)
        return self.inbox_path if rel is None else os.path.join(self.folder_dir, rel)

    def mailbox_exists(self, mailbox: str) -> bool:
        """INBOX always exists (created on first delivery)."""
        try:
            path = self.path_for(mailbox)
        except InvalidMailboxName:
            return False
        return path == self.inbox_path or os.path.isfile(path)

    def describe(self, mailbox: str) -> str:
        try:
            return f"mbox {self.path_for(mailbox)}"
        except InvalidMailboxName as e:
            return f"mbox folders in {self.folder_dir} ({e})"

    def list_mailboxes(self) -> list[str]:
        """INBOX and every mbox file under folder_dir (dot-files and *.lock skipped)."""
        names = []
        for dirpath, dirnames, filenames in os.walk(self.folder_dir):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, self.folder_dir)
            for f in filenames:
                if f.startswith(".") or f.endswith(".lock"):
                    continue
                relpath = f if rel == "." else f"{rel}/{f}"
                try:
                    names.append(name_from_mbox_relpath(relpath))
                except ValueError:
                    continue
        return ["INBOX", *sorted(n for n in names if n.upper() != "INBOX")]

    # -- delivery -------------------------------------------------------------------

    def deliver(self, raw: bytes, mailbox: str = "INBOX", flags=(), *, sender: str = "",
                create: bool = True) -> Receipt:
        path = self.path_for(mailbox)
        inbox = path == self.inbox_path
        if not inbox and not create and not os.path.isfile(path):
            raise MailboxNotFound(f"mailbox does not exist: {mailbox!r} ({path}); "
                                  "not creating it without :create")
        try:
            start, end, entry = self._append(path, raw, sender, flags, mailbox, inbox)
        except OSError as e:
            where = f"{e.filename}: " if e.filename and e.filename != path else ""
            raise TemporaryDeliveryError(f"cannot deliver to mbox {path}: {where}{strerror(e)}") from e
        return Receipt("mbox", mailbox, path,
                       undo=lambda: self._undo(path, start, end, entry))

    def _make_parent(self, path: str, mailbox: str, inbox: bool) -> None:
        parent = os.path.dirname(os.path.abspath(path))
        missing = []
        d = parent
        while not os.path.isdir(d):
            missing.append(d)
            up = os.path.dirname(d)
            if up == d:
                break
            d = up
        if not missing:
            return
        try:
            os.makedirs(parent, 0o700, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            if not inbox:
                self._check_parents(path, mailbox)
            raise
        if self.fsync:
            for m in reversed(missing):  # each new directory's entry in its parent
                fsync_dir(os.path.dirname(m))

    def _check_parents(self, path: str, mailbox: str) -> None:
        """An mbox file where a folder directory is needed ("A" exists, "A/B" is asked for)."""
        rel = os.path.relpath(path, self.folder_dir).split(os.sep)
        d = self.folder_dir
        for part in rel[:-1]:
            d = os.path.join(d, part)
            if os.path.isfile(d):
                raise InvalidMailboxName(
                    f"invalid mailbox name {mailbox!r}: {d} is an mbox file, so it cannot hold "
                    "sub-folders")

    def _open(self, path: str, mailbox: str, inbox: bool) -> tuple[int, bool]:
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        try:
            return os.open(path, flags), False
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            if not inbox:
                raise InvalidMailboxName(f"invalid mailbox name {mailbox!r}: {path} is a directory "
                                         "of folders, not an mbox file") from None
            raise
        except NotADirectoryError:
            if not inbox:
                self._check_parents(path, mailbox)
            raise
        return os.open(path, flags | os.O_CREAT, 0o600), True

    def _append(self, path: str, raw: bytes, sender: str, flags, mailbox: str,
                inbox: bool) -> tuple[int, int, bytes]:
        from fetchdeliver.delivery.dotlock import DotLock

        self._make_parent(path, mailbox, inbox)
        dotlock = DotLock(path + ".lock", timeout=self.lock_timeout, stale=DOTLOCK_STALE)
        deadline = time.monotonic() + self.lock_timeout
        _take_dotlock(dotlock)
        try:
            fd, created = self._open(path, mailbox, inbox)
            try:
                _fcntl_lock(fd, path, deadline)
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise OSError(errno.EINVAL, "not a regular file", path)
                old = st.st_size
                for info in dotlock.broken:
                    old = _repair_partial(fd, path, old, info)
                known = None
                if old and any(not f.startswith("\\") for f in flags):
                    known = imapbase_keywords(fd)
                entry = format_message(raw, sender, flags, known_keywords=known)
                prefix = _separator_prefix(fd, old)
                if dotlock.held:
                    # Should we die mid-write (SIGKILL), the next writer that breaks our lock
                    # reads this and cuts the partial message off again.
                    dotlock.note(f"{_JOURNAL} {old} {len(prefix) + len(entry)}")
                try:
                    write_all(fd, prefix + entry)
                    if self.fsync:
                        os.fsync(fd)
                        if created:
                            fsync_dir(os.path.dirname(os.path.abspath(path)))
                except BaseException as e:
                    _truncate_back(fd, path, old, e)
                    raise
                return old, old + len(prefix) + len(entry), entry
            finally:
                os.close(fd)  # also drops the fcntl lock
        finally:
            dotlock.release()

    def _undo(self, path: str, start: int, end: int, entry: bytes) -> None:
        """Truncate our entry away if it is still the last thing in the file, byte for byte.

        If someone appended after us, cutting our message out of the middle would
        mean rewriting the file under the feet of readers that only hold a read
        lock; a duplicate is the lesser harm, so it is left and a warning logged.
        """
        from fetchdeliver.delivery.dotlock import DotLock

        dotlock = DotLock(path + ".lock", timeout=self.lock_timeout, stale=DOTLOCK_STALE)
        _take_dotlock(dotlock)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                _fcntl_lock(fd, path, time.monotonic() + self.lock_timeout)
                size = os.fstat(fd).st_size
                if size == end and os.pread(fd, len(entry), end - len(entry)) == entry:
                    os.ftruncate(fd, start)
                    if self.fsync:
                        os.fsync(fd)
                else:
                    _log().warning("%s: not rolling back the delivery at offset %d: the file changed "
                                   "since (the message stays, possibly as a duplicate)", path, start)
            finally:
                os.close(fd)
        finally:
            dotlock.release()


def _take_dotlock(dotlock) -> None:
    try:
        dotlock.acquire()
    except PermissionError as e:
        # A directory we may not create files in (/var/mail without the mail group): Dovecot and
        # mutt go on with the fcntl lock alone, which every modern reader honours.
        _log().warning("cannot create dot-lock %s (%s); relying on the fcntl lock alone",
                       dotlock.path, strerror(e))


def _fcntl_lock(fd: int, path: str, deadline: float) -> None:
    """fcntl write lock on the whole file, polled with back-off until `deadline`."""
    import fcntl

    delay = 0.001
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as e:
            if e.errno == errno.ENOLCK:
                _log().warning("%s: no fcntl locks on this file system (%s); relying on the "
                               "dot-lock alone", path, strerror(e))
                return
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TemporaryDeliveryError(f"lock timeout: {path} is fcntl-locked by another process; "
                                         "will retry later")
        time.sleep(min(delay * (0.5 + os.urandom(1)[0] / 255), remaining))
        delay = min(delay * 2, 0.05)


def _separator_prefix(fd: int, size: int) -> bytes:
    """What to write first so our From_ line follows a blank line, whatever the file ends with."""
    if size == 0:
        return b""
    tail = os.pread(fd, 2, max(0, size - 2))
    if tail == b"\n\n" or tail == b"\n":  # b"\n" alone: the whole file is one empty line
        return b""
    return b"\n" if tail.endswith(b"\n") else b"\n\n"


def _repair_partial(fd: int, path: str, size: int, info: bytes) -> int:
    """Cut off the partial message a writer killed mid-append left; returns the file size.

    `info` is the content of the dot-lock it held: "PID:HOST" and our journal
    line "mbox-append START LENGTH". Only a file that ends inside that append,
    with nothing but that one unfinished entry after START, is touched.
    """
    for line in info.split(b"\n")[1:]:
        parts = line.split()
        if len(parts) != 3 or parts[0] != _JOURNAL.encode() or not (parts[1] + parts[2]).isdigit():
            continue
        start, length = int(parts[1]), int(parts[2])
        if not start < size < start + length:
            return size  # untouched, or the append completed: nothing to repair
        tail = os.pread(fd, size - start, start)
        entry = tail.lstrip(b"\n")
        if len(tail) - len(entry) > 2 or not entry.startswith(b"From ") or b"\nFrom " in entry:
            _log().warning("%s: a writer died appending at offset %d, but the file does not end "
                           "in its unfinished message alone; leaving it", path, start)
            return size
        os.ftruncate(fd, start)
        os.fsync(fd)
        _log().warning("%s: removed %d bytes of a message left unfinished at offset %d by a "
                       "writer that died (%s)", path, size - start, start,
                       info.split(b"\n", 1)[0].decode("utf-8", "replace"))
        return start
    return size


def _truncate_back(fd: int, path: str, old: int, cause: BaseException) -> None:
    try:
        os.ftruncate(fd, old)
        os.fsync(fd)
    except OSError as e:
        _log().critical("%s: could not truncate back to %d bytes after a failed append (%s): %s; "
                        "the file may end in a partial message", path, old, cause, strerror(e))
