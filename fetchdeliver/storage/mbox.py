"""The mbox backend: delivery in mboxrd format, locked the way procmail, mutt and Dovecot lock,
and the mailboxes the IMAP server reads (see "mailboxes" below).

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

from fetchdeliver.delivery.fsio import fsync_dir, strerror, write_all
from fetchdeliver.delivery.names import mbox_relpath, name_from_mbox_relpath
from fetchdeliver.errors import InvalidMailboxName, MailboxNotFound, TemporaryDeliveryError
from fetchdeliver.storage.base import (MailboxEntry, Mailbox, MessageInfo, Receipt, Store, StorageError,
                                       add_children_attributes, canonical_flag)

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

class MboxStore(Store):
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


    # -- the access face (IMAP server and the other readers) ------------------------------------

    def _path(self, name: str) -> str:
        try:
            return self.path_for(name)
        except InvalidMailboxName as e:
            raise StorageError(str(e), "CANNOT") from None

    def list(self) -> list[MailboxEntry]:
        return add_children_attributes([MailboxEntry(n) for n in self.list_mailboxes()])

    def open(self, name: str, readonly: bool = False) -> MboxMailbox:
        path = self._path(name)
        if path != self.inbox_path and not os.path.isfile(path):
            raise StorageError(f"no mailbox {name!r}", "NONEXISTENT")
        return MboxMailbox(self, "INBOX" if path == self.inbox_path else name, path, readonly)

    def create(self, name: str, special_use: tuple[str, ...] = ()) -> None:
        path = self._path(name)
        if path == self.inbox_path or os.path.exists(path):
            raise StorageError(f"mailbox {name!r} already exists", "ALREADYEXISTS")
        try:
            os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as e:
            raise StorageError(f"cannot create {name!r}: {e.strerror}", "CANNOT") from None

    def delete(self, name: str) -> None:
        path = self._path(name)
        if path == self.inbox_path:
            raise StorageError("INBOX cannot be deleted", "CANNOT")
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise StorageError(f"no mailbox {name!r}", "NONEXISTENT") from None
        except OSError as e:
            raise StorageError(f"cannot delete {name!r}: {e.strerror}", "CANNOT") from None
        d, base = os.path.split(path)
        try:
            os.unlink(os.path.join(d, f".{base}.fdimap"))
        except OSError:
            pass

    def rename(self, old: str, new: str) -> None:
        src, dst = self._path(old), self._path(new)
        if src == self.inbox_path or dst == self.inbox_path:
            raise StorageError("renaming INBOX is not supported for mbox", "CANNOT")
        if not os.path.isfile(src):
            raise StorageError(f"no mailbox {old!r}", "NONEXISTENT")
        if os.path.exists(dst):
            raise StorageError(f"mailbox {new!r} already exists", "ALREADYEXISTS")
        try:
            os.makedirs(os.path.dirname(dst), 0o700, exist_ok=True)
            os.rename(src, dst)
        except OSError as e:
            raise StorageError(f"cannot rename {old!r}: {e.strerror}", "CANNOT") from None
        for a, b in ((src, dst),):
            sa = os.path.join(os.path.dirname(a), f".{os.path.basename(a)}.fdimap")
            sb = os.path.join(os.path.dirname(b), f".{os.path.basename(b)}.fdimap")
            try:
                os.rename(sa, sb)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise StorageError(f"cannot rename {sa}: {e.strerror}", "CANNOT") from None

    def _subscriptions_path(self) -> str:
        return os.path.join(self.folder_dir, ".subscriptions")

    def subscriptions(self) -> list[str]:
        try:
            with open(self._subscriptions_path(), encoding="utf-8") as f:
                return [line.strip() for line in f if line.strip()]
        except OSError:
            return [e.name for e in self.list() if "\\Noselect" not in e.attributes]

    def _write_subscriptions(self, names: list[str]) -> None:
        os.makedirs(self.folder_dir, 0o700, exist_ok=True)
        tmp = self._subscriptions_path() + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(n + "\n" for n in names))
        os.replace(tmp, self._subscriptions_path())

    def subscribe(self, name: str) -> None:
        names = self.subscriptions()
        if name not in names:
            self._write_subscriptions(names + [name])

    def unsubscribe(self, name: str) -> None:
        self._write_subscriptions([n for n in self.subscriptions() if n != name])


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


# -- mailboxes -------------------------------------------------------------------------
#The mbox backend of the IMAP server: the files fetchdeliver's mbox deliverer writes.
#
#INBOX is one mbox file; other mailboxes are files under the folder directory
#(`[delivery] mbox_folders`, default `mail/` beside INBOX), as delivery/mbox.py
#lays them out. Every read and change takes the deliverer's locks in its order
#(the FILE.lock dot-lock, then fcntl), so the server, the MDA, procmail, mutt and
#Dovecot can share a file.
#
#UIDs, UIDVALIDITY and flag changes made over IMAP live in a small JSON file
#beside the mbox (`.NAME.fdimap`), replaced atomically; a message is known by a
#digest of its bytes. Flags written at delivery (Status:/X-Status:/X-Keywords:,
#as Dovecot reads them) are what a message starts with. Those headers, and
#Dovecot's X-UID/X-IMAP/X-IMAPbase, are hidden from clients, as Dovecot hides them.
#
#EXPUNGE writes the remaining messages to a temporary file, fsyncs it and
#renames it over the mbox while holding both locks: a crash leaves either the old
#or the new file, never half of one. Writers that take the dot-lock before
#opening the file (fetchdeliver, Dovecot, procmail, mutt) see the new file.
#

_HIDDEN = (b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imap", b"x-imapbase")
_READ_STATUS = {"R": "\\Seen"}
_READ_XSTATUS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}


class _Block:
    """One message in the file: where it is and what identifies it."""

    __slots__ = ("start", "end", "key", "from_line", "raw")  # raw: unescaped, as delivered

    def __init__(self, start: int, end: int, key: str, from_line: bytes, raw: bytes) -> None:
        self.start, self.end, self.key, self.from_line, self.raw = start, end, key, from_line, raw


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(data).hexdigest()


def parse_blocks(data: bytes) -> list[_Block]:
    """Split an mbox into its messages (mboxrd unescaped, the separating blank line removed)."""
    blocks: list[_Block] = []
    if not data.startswith(b"From "):
        return blocks
    seen: dict[str, int] = {}
    pos, n = 0, len(data)
    while pos < n:
        eol = data.find(b"\n", pos)
        if eol < 0:
            break
        from_line = data[pos:eol]
        start = eol + 1
        nxt = data.find(b"\nFrom ", start)
        end = n if nxt < 0 else nxt + 1
        body = data[start:end]
        if body.endswith(b"\n\n"):
            body = body[:-1]              # the blank line that ends every mbox entry
        elif body.endswith(b"\r\n\r\n"):
            body = body[:-2]
        raw = mboxrd_unescape(body)
        d = _digest(data[pos:end])
        seen[d] = seen.get(d, 0) + 1      # identical messages stay distinct
        blocks.append(_Block(pos, end, f"{d}.{seen[d]}", from_line, raw))
        pos = end
    return blocks


def split_flag_headers(raw: bytes) -> tuple[bytes, frozenset]:
    """(message without the mbox bookkeeping headers, the flags they gave)."""
    from fetchdeliver.message import header_block

    head_end = len(header_block(raw))
    if not any(h in raw[:head_end].lower() for h in _HIDDEN):
        return raw, frozenset()
    flags: set[str] = set()
    kept: list[bytes] = []
    skipping = False
    for line in raw[:head_end].splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):  # a folded line belongs to the field before it
            if not skipping:
                kept.append(line)
            continue
        name, _, value = line.partition(b":")
        skipping = name.strip().lower() in _HIDDEN
        if not skipping:
            kept.append(line)
            continue
        lname = name.strip().lower()
        text = value.decode("latin-1").strip()
        if lname == b"status":
            flags.update(_READ_STATUS[c] for c in text if c in _READ_STATUS)
        elif lname == b"x-status":
            flags.update(_READ_XSTATUS[c] for c in text if c in _READ_XSTATUS)
        elif lname == b"x-keywords":
            flags.update(k for k in text.replace(",", " ").split() if k)
    return b"".join(kept) + raw[head_end:], frozenset(flags)


class _Locked:
    """The deliverer's locks on one mbox file: dot-lock, then an fcntl lock on an open fd."""

    def __init__(self, path: str, timeout: float, write: bool) -> None:
        self.path, self.timeout, self.write = path, timeout, write
        self.fd = -1

    def __enter__(self) -> "_Locked":
        from fetchdeliver.delivery.dotlock import DotLock

        self.dotlock = DotLock(self.path + ".lock", timeout=self.timeout, stale=DOTLOCK_STALE)
        try:
            _take_dotlock(self.dotlock)
        except Exception as e:
            raise StorageError(f"{self.path}: {e}", "INUSE") from None
        try:
            self.fd = os.open(self.path, (os.O_RDWR if self.write else os.O_RDONLY) | os.O_CLOEXEC)
            if self.write:  # readers are kept out by the dot-lock; fcntl also stops fcntl-only writers
                _fcntl_lock(self.fd, self.path, time.monotonic() + self.timeout)
        except FileNotFoundError:
            self.fd = -1
        except BaseException as e:
            self.__exit__(None, None, None)
            if isinstance(e, OSError):
                raise StorageError(f"{self.path}: {e.strerror or e}", "SERVERBUG") from None
            raise StorageError(f"{self.path}: {e}", "INUSE") from None
        return self

    def read(self) -> bytes:
        if self.fd < 0:
            return b""
        size = os.fstat(self.fd).st_size
        chunks, off = [], 0
        while off < size:
            chunk = os.pread(self.fd, min(1 << 20, size - off), off)
            if not chunk:
                break
            chunks.append(chunk)
            off += len(chunk)
        return b"".join(chunks)

    def __exit__(self, *exc) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.dotlock.release()


class MboxMailbox(Mailbox):
    def __init__(self, storage: "MboxStore", name: str, path: str, readonly: bool = False) -> None:
        self.storage = storage
        self.name = name
        self.path = path
        self.readonly = readonly
        self.lock_timeout = storage.lock_timeout
        d, base = os.path.split(path)
        self.state_path = os.path.join(d, f".{base}.fdimap")
        self._new_state = False
        self._state = self._load_state()
        self.uidvalidity = self._state["uidvalidity"]
        self._stamp = None
        self._infos: list[MessageInfo] = []

    # -- the sidecar ----------------------------------------------------------------
    def _load_state(self) -> dict:
        try:
            import json

            with open(self.state_path, encoding="utf-8") as f:
                st = json.load(f)
            if isinstance(st, dict) and isinstance(st.get("uidvalidity"), int):
                st.setdefault("next", 1)
                st.setdefault("uids", {})
                st.setdefault("flags", {})
                st.setdefault("modseq", {})        # uid -> MODSEQ (RFC 7162) of its last change
                st.setdefault("highestmodseq", 0)
                st.setdefault("vanished", [])      # [uid, MODSEQ of its expunge], the latest kept
                return st
        except (OSError, ValueError):
            pass
        self._new_state = True
        return {"uidvalidity": int(time.time()), "next": 1, "uids": {}, "flags": {}, "modseq": {},
                "highestmodseq": 0, "vanished": []}

    def _save_state(self) -> None:
        """Write the sidecar; a read-only mailbox where it cannot be written just keeps it in memory."""
        import json

        tmp = f"{self.state_path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self._state, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_path)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if self.readonly:
                return  # UIDs then last as long as this server runs, as for any read-only store
            raise StorageError(f"cannot write {self.state_path}: {e.strerror}", "SERVERBUG") from None

    # -- reading ----------------------------------------------------------------------
    def _file_stamp(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def sync(self) -> list[MessageInfo]:
        stamp = self._file_stamp()
        if stamp is not None and stamp == self._stamp:
            return list(self._infos)
        with _Locked(self.path, self.lock_timeout, write=False) as lk:
            data = lk.read()
            stamp = (os.fstat(lk.fd).st_ino, len(data), os.fstat(lk.fd).st_mtime_ns) if lk.fd >= 0 else None
        self._apply(parse_blocks(data))
        self._stamp = stamp
        return list(self._infos)

    def _apply(self, blocks: list[_Block]) -> None:
        st = self._state
        uids: dict = st["uids"]
        changed = False
        live = set()
        infos = []
        modseq = 0
        for b in blocks:
            uid = uids.get(b.key)
            if uid is None:
                uid = max(st["next"], 1)
                st["next"] = uid + 1
                uids[b.key] = uid
                changed = True
                modseq = modseq or self._next_modseq()
                st["modseq"][str(uid)] = modseq
            live.add(b.key)
            raw, header_flags = split_flag_headers(b.raw)
            stored = st["flags"].get(str(uid))
            flags = frozenset(stored) if stored is not None else header_flags
            info = MessageInfo(uid, frozenset(canonical_flag(f) for f in flags), _from_date(b.from_line),
                               handle=(b.key, raw), size=len(raw) + raw.count(b"\n") - raw.count(b"\r\n"),
                               modseq=st["modseq"].get(str(uid), 0))
            infos.append(info)
        for key in [k for k in uids if k not in live]:
            uid = uids.pop(key)
            st["flags"].pop(str(uid), None)
            st["modseq"].pop(str(uid), None)
            modseq = modseq or self._next_modseq()
            st["vanished"].append([uid, modseq])
            changed = True
        if len(st["vanished"]) > 10000:
            del st["vanished"][:-10000]
        infos.sort(key=lambda m: m.uid)
        self._infos = infos
        # UIDs are assigned even by EXAMINE/STATUS, and must be the same for the next session.
        if (changed or self._new_state) and os.path.exists(self.path):
            self._save_state()
            self._new_state = False

    def uidnext(self) -> int:
        return max(self._state["next"], 1)

    def _next_modseq(self) -> int:
        self._state["highestmodseq"] = self._state.get("highestmodseq", 0) + 1
        return self._state["highestmodseq"]

    def highestmodseq(self) -> int:
        return self._state.get("highestmodseq", 0)

    def vanished_since(self, modseq: int) -> list[int]:
        return sorted(u for u, m in self._state.get("vanished", []) if m > modseq)

    def keywords(self) -> list[str]:
        return sorted({f for m in self._infos for f in m.flags if not f.startswith("\\")})

    def read(self, msg: MessageInfo) -> bytes:
        return msg.handle[1]

    # -- changes ----------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self.readonly:
            raise StorageError("the mailbox is read-only", "READ-ONLY")

    def set_flags(self, changes: list[tuple[MessageInfo, frozenset]]) -> None:
        self._check_writable()
        modseq = self._next_modseq()
        for msg, flags in changes:
            self._state["flags"][str(msg.uid)] = sorted(flags)
            self._state["modseq"][str(msg.uid)] = modseq
            msg.flags = frozenset(flags)
            msg.modseq = modseq
        self._save_state()

    def append(self, raw: bytes, flags=(), internaldate: float | None = None) -> int:
        self._check_writable()
        from fetchdeliver.errors import FetchdeliverError

        before = {m.uid for m in self.sync()}
        try:
            self.storage.deliver(raw, self.name, list(flags), create=False)
        except FetchdeliverError as e:
            raise StorageError(str(e), "TRYCREATE" if "does not exist" in str(e) else None) from e
        self._stamp = None
        new = [m for m in self.sync() if m.uid not in before]
        if not new:
            raise StorageError("the appended message cannot be found in the mbox", "SERVERBUG")
        ours = next((m for m in reversed(new) if m.handle[1].rstrip(b"\r\n") == raw.rstrip(b"\r\n")), new[-1])
        self.set_flags([(ours, frozenset(canonical_flag(f) for f in flags))])
        return ours.uid

    def expunge(self, msgs: list[MessageInfo]) -> None:
        self._check_writable()
        if not msgs:
            return
        gone = {m.handle[0] for m in msgs}
        with _Locked(self.path, self.lock_timeout, write=True) as lk:
            if lk.fd < 0:
                return
            data = lk.read()
            blocks = parse_blocks(data)
            kept = [data[b.start:b.end] for b in blocks if b.key not in gone]
            if len(kept) == len(blocks):
                return
            tail = data[blocks[-1].end:] if blocks else data
            _replace_file(self.path, lk.fd, b"".join(kept) + tail)
        self._stamp = None
        self.sync()

    def watch_paths(self) -> list[str]:
        return [os.path.dirname(os.path.abspath(self.path))]


def _replace_file(path: str, fd: int, content: bytes) -> None:
    """Atomically put `content` in place of the file (same mode and owner), durably."""
    st = os.fstat(fd)
    tmp = f"{path}.fdimap-{os.getpid()}.tmp"
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, stat.S_IMODE(st.st_mode))
    try:
        write_all(out, content)
        if os.geteuid() == 0:
            os.fchown(out, st.st_uid, st.st_gid)
        os.fsync(out)
    except BaseException:
        os.close(out)
        os.unlink(tmp)
        raise
    os.close(out)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def _from_date(from_line: bytes) -> float:
    """The date of a `From sender Thu Jan  1 00:00:00 1970` line (UTC), or now."""
    import calendar

    parts = from_line.decode("latin-1").split()
    if len(parts) >= 7:
        try:
            t = time.strptime(" ".join(parts[-5:]), "%a %b %d %H:%M:%S %Y")
            return float(calendar.timegm(t))
        except ValueError:
            pass
    return time.time()


MboxStorage = MboxStore  # the IMAP server's name for it before the two became one
