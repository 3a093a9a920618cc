"""Maildir++ delivery, the qmail/Dovecot way: tmp/ -> fsync -> link into new/ (or cur/) -> fsync dir.

File names look like Dovecot's own (`doveadm`/`dovecot-lda` write
"SECS.MUSECSPPID.HOST,S=SIZE,W=VSIZE"), with a random part and a per-process
counter added for uniqueness without a clock guarantee:

    1700000000.M123456P4242R9f2c...Q1.host,S=1234,W=1260[:2,FLAGS]

S= is the file size and W= the size with every bare LF counted as CRLF (IMAP's
RFC822.SIZE); Dovecot trusts both, so they must be exact. Flags go in the
":2," info part (D F R S T for \\Draft \\Flagged \\Answered \\Seen \\Deleted,
then keyword letters a..z, sorted by ASCII as Dovecot keeps them); a flagged
message goes to cur/, an unflagged one to new/.

Keyword letters are defined by the folder's `dovecot-keywords` file ("<index>
<name>" lines). Dovecot rewrites that file (via dovecot-keywords.lock and
rename) only while it holds `dovecot-uidlist.lock`, and removes a leftover
dovecot-keywords.lock without looking; so we take dovecot-uidlist.lock too.
"""

from __future__ import annotations

import errno
import os
import time

from fetchdeliver.delivery.base import MailStore, Receipt
from fetchdeliver.delivery.fsio import fsync_dir, hostname, strerror, write_all
from fetchdeliver.delivery.names import maildir_folder, name_from_maildir_folder
from fetchdeliver.errors import InvalidMailboxName, MailboxNotFound, TemporaryDeliveryError

SYSTEM_FLAGS = {"\\draft": "D", "\\flagged": "F", "\\answered": "R", "\\seen": "S", "\\deleted": "T"}
MAX_KEYWORDS = 26  # a..z
UIDLIST_LOCK_STALE = 120.0  # Dovecot's MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT
# Characters IMAP does not allow in a keyword (atom-specials, list/resp-specials).
_ATOM_SPECIALS = frozenset('(){ %*"\\]')
# link() does not work here (FAT, some FUSE/network file systems): rename() instead.
_NO_LINK = {errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}

_counter = 0


def _log():
    import logging

    return logging.getLogger(__name__)


def unique_name() -> str:
    """A file name no other delivery on any host will pick (time, pid, random, counter, host)."""
    global _counter
    _counter += 1
    ns = time.time_ns()
    return (f"{ns // 1_000_000_000}.M{ns // 1000 % 1_000_000}P{os.getpid()}"
            f"R{os.urandom(8).hex()}Q{_counter}.{hostname()}")


def virtual_size(raw: bytes) -> int:
    """Size with line ends counted as CRLF, as Dovecot's W= (a bare CR stays one byte)."""
    return len(raw) + raw.count(b"\n") - raw.count(b"\r\n")


def is_keyword(flag: str) -> bool:
    """An IMAP flag-keyword: a non-empty atom of printable ASCII, not a \\system flag."""
    return bool(flag) and all("!" <= c <= "~" and c not in _ATOM_SPECIALS for c in flag)


def split_flags(flags) -> tuple[str, list[str]]:
    """(system-flag letters, keywords) from IMAP flags; unknown \\flags and invalid keywords are dropped."""
    letters = set()
    keywords: list[str] = []
    seen = set()
    for flag in flags:
        if flag.startswith("\\"):
            letter = SYSTEM_FLAGS.get(flag.lower())
            if letter:
                letters.add(letter)
            elif flag.lower() != "\\recent":
                _log().warning("ignoring unknown system flag %r", flag)
        elif is_keyword(flag):
            if flag.lower() not in seen:
                seen.add(flag.lower())
                keywords.append(flag)
        else:
            _log().warning("ignoring flag %r: not a valid IMAP keyword", flag)
    return "".join(sorted(letters)), keywords


def read_keyword_lines(folder: str) -> list[tuple[int, str]]:
    """Dovecot's dovecot-keywords of `folder` as [(index, name)]; [] when absent."""
    try:
        with open(os.path.join(folder, "dovecot-keywords"), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    out = []
    for line in data.decode("utf-8", "replace").split("\n"):
        idx, _, name = line.partition(" ")
        if idx.isdigit() and name and int(idx) < MAX_KEYWORDS:
            out.append((int(idx), name))
    return out


def read_keywords(folder: str) -> dict[str, int]:
    """{lower-cased keyword: index} from the folder's dovecot-keywords (first entry wins)."""
    table: dict[str, int] = {}
    for idx, name in read_keyword_lines(folder):
        table.setdefault(name.lower(), idx)
    return table


class MaildirStore(MailStore):
    """A Maildir++ tree: INBOX is `root`, "Work/Reports" is root/.Work.Reports."""

    kind = "maildir"

    def __init__(self, root: str, *, fsync: bool = True, lock_timeout: float = 30.0) -> None:
        self.root = root
        self.fsync = fsync
        self.lock_timeout = lock_timeout
        self._modes: tuple[int, int] | None = None

    # -- names ----------------------------------------------------------------------

    def folder_path(self, mailbox: str) -> str:
        """Directory of `mailbox`; raises InvalidMailboxName."""
        d = maildir_folder(mailbox)
        return os.path.join(self.root, d) if d else self.root

    def mailbox_exists(self, mailbox: str) -> bool:
        """INBOX always exists (it is created on first delivery, as Dovecot does)."""
        try:
            path = self.folder_path(mailbox)
        except InvalidMailboxName:
            return False
        return path == self.root or os.path.isdir(path)

    def describe(self, mailbox: str) -> str:
        try:
            return f"Maildir folder {self.folder_path(mailbox)}"
        except InvalidMailboxName as e:
            return f"Maildir {self.root} ({e})"

    def list_mailboxes(self) -> list[str]:
        """INBOX and every Maildir++ folder under the root, decoded ("Work/Reports", "Ärger")."""
        names = []
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            entries = []
        for e in entries:
            if e.name.startswith(".") and e.name not in (".", "..") and e.is_dir():
                try:
                    names.append(name_from_maildir_folder(e.name))
                except ValueError:
                    continue  # not ours to list (e.g. a foreign dot-directory)
        return ["INBOX", *sorted(names)]

    # -- creation -------------------------------------------------------------------

    def _get_modes(self) -> tuple[int, int]:
        """(directory mode, file mode) from the root's permissions, as Dovecot derives them."""
        if self._modes is None:
            try:
                m = os.stat(self.root).st_mode & 0o7777
                self._modes = (m | 0o700, m & 0o666 | 0o600)
            except OSError:
                self._modes = (0o700, 0o600)
        return self._modes

    def create_mailbox(self, mailbox: str) -> str:
        """Make `mailbox` (and the root) with tmp/ new/ cur/; durable on return. Returns its path."""
        path = self.folder_path(mailbox)
        try:
            self._make(path, path != self.root)
        except OSError as e:
            raise TemporaryDeliveryError(f"cannot create Maildir folder {path}: "
                                         f"{e.filename or path}: {strerror(e)}") from e
        return path

    def _make(self, path: str, sub: bool) -> None:
        dmode, fmode = self._get_modes()
        if sub:
            self._make(self.root, False)
        missing = []  # directories we create, deepest first
        d = os.path.abspath(path)
        while not os.path.isdir(d):
            missing.append(d)
            up = os.path.dirname(d)
            if up == d:
                break
            d = up
        for d in reversed(missing):
            try:
                os.mkdir(d, dmode if d == missing[0] else 0o700)
            except FileExistsError:
                pass
        made = bool(missing)
        for d in ("tmp", "new", "cur"):
            try:
                os.mkdir(os.path.join(path, d), dmode)
                made = True
            except FileExistsError:
                pass
        if sub:
            marker = os.path.join(path, "maildirfolder")
            if not os.path.exists(marker):
                os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, fmode))
                made = True
        if self.fsync and made:
            fsync_dir(path)
            for d in missing:  # each new directory's entry in its parent
                fsync_dir(os.path.dirname(d))

    # -- delivery -------------------------------------------------------------------

    def deliver(self, raw: bytes, mailbox: str = "INBOX", flags=(), *, sender: str = "",
                create: bool = True) -> Receipt:
        path = self.folder_path(mailbox)
        if not create and path != self.root and not os.path.isdir(path):
            raise MailboxNotFound(f"mailbox does not exist: {mailbox!r} ({path}); "
                                  "not creating it without :create")
        letters, keywords = split_flags(flags)
        if keywords:
            letters = "".join(sorted(letters + self._keyword_letters(path, keywords)))
        base = f"{unique_name()},S={len(raw)},W={virtual_size(raw)}"
        if letters:
            subdir, final = "cur", f"{base}:2,{letters}"
        else:
            subdir, final = "new", base
        try:
            dest = self._write(path, raw, base, subdir, final)
        except FileNotFoundError:
            # The folder (or part of it) is missing: make it, then try once more.
            self.create_mailbox(mailbox)
            dest = self._write_reporting(path, raw, base, subdir, final)
        except OSError as e:
            raise self._error(path, e) from e
        return Receipt("maildir", mailbox, dest, undo=lambda: _remove_delivered(dest, self.fsync))

    def _write_reporting(self, path, raw, base, subdir, final) -> str:
        try:
            return self._write(path, raw, base, subdir, final)
        except OSError as e:
            raise self._error(path, e) from e

    @staticmethod
    def _error(path: str, e: OSError) -> TemporaryDeliveryError:
        where = e.filename or path
        return TemporaryDeliveryError(f"cannot deliver to Maildir folder {path}: {where}: {strerror(e)}")

    def _write(self, folder: str, raw: bytes, base: str, subdir: str, final: str) -> str:
        """The write-fsync-link protocol; leaves nothing behind when it raises."""
        fmode = self._get_modes()[1]
        for _attempt in range(5):
            tmp = os.path.join(folder, "tmp", base)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, fmode)
            except FileExistsError:
                base, final = _rename_base(base, final)
                continue
            break
        else:
            raise OSError(errno.EEXIST, "could not find a unique file name", tmp)
        dest = None
        try:
            try:
                write_all(fd, raw)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            for _attempt in range(5):
                candidate = os.path.join(folder, subdir, final)
                try:
                    os.link(tmp, candidate)
                except FileExistsError:
                    base, final = _rename_base(base, final)
                    continue
                except OSError as e:
                    if e.errno not in _NO_LINK:
                        raise
                    # No hard links here. rename() would replace an existing file, so check first
                    # (the name is unique anyway; this only guards against a clock gone wild).
                    if os.path.lexists(candidate):
                        base, final = _rename_base(base, final)
                        continue
                    os.rename(tmp, candidate)
                    dest = candidate
                    tmp = None
                    break
                dest = candidate
                break
            else:
                raise OSError(errno.EEXIST, "could not find a unique file name", candidate)
            if tmp is not None:
                os.unlink(tmp)
                tmp = None
            if self.fsync:
                fsync_dir(os.path.join(folder, subdir))
            return dest
        except BaseException:
            for p in (tmp, dest):
                if p is not None:
                    try:
                        os.unlink(p)
                    except OSError:
                        pass
            raise

    # -- keywords ---------------------------------------------------------------------

    def _keyword_letters(self, folder: str, keywords: list[str]) -> str:
        """Letters for `keywords`, adding missing ones to dovecot-keywords (at most 26 in all)."""
        table = read_keywords(folder)
        if any(k.lower() not in table for k in keywords):
            try:
                table = self._add_keywords(folder, keywords)
            except FileNotFoundError:
                self._make(folder, folder != self.root)
                table = self._add_keywords(folder, keywords)
            except OSError as e:
                raise self._error(folder, e) from e
        letters = []
        for k in keywords:
            idx = table.get(k.lower())
            if idx is None:
                _log().warning("%s: no free keyword letter for %r (Maildir allows %d); flag not stored",
                               folder, k, MAX_KEYWORDS)
            else:
                letters.append(chr(ord("a") + idx))
        return "".join(letters)

    def _add_keywords(self, folder: str, keywords: list[str]) -> dict[str, int]:
        from fetchdeliver.delivery.dotlock import DotLock

        with DotLock(os.path.join(folder, "dovecot-uidlist.lock"), timeout=self.lock_timeout,
                     stale=UIDLIST_LOCK_STALE, use_link=False):
            lines = read_keyword_lines(folder)
            used = {i for i, _ in lines}
            known = {n.lower() for _, n in lines}
            added = False
            for k in keywords:
                if k.lower() in known:
                    continue
                free = next((i for i in range(MAX_KEYWORDS) if i not in used), None)
                if free is None:
                    break
                lines.append((free, k))
                used.add(free)
                known.add(k.lower())
                added = True
            if added:
                self._write_keywords(folder, sorted(lines))
        table: dict[str, int] = {}
        for i, n in sorted(lines):
            table.setdefault(n.lower(), i)
        return table

    def _write_keywords(self, folder: str, lines: list[tuple[int, str]]) -> None:
        """Replace dovecot-keywords the way Dovecot does: write dovecot-keywords.lock, rename it."""
        lock = os.path.join(folder, "dovecot-keywords.lock")
        try:
            os.unlink(lock)  # Dovecot does the same: only the holder of dovecot-uidlist.lock writes
        except FileNotFoundError:
            pass
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self._get_modes()[1])
        try:
            try:
                write_all(fd, "".join(f"{i} {n}\n" for i, n in lines).encode())
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(lock, os.path.join(folder, "dovecot-keywords"))
        except BaseException:
            try:
                os.unlink(lock)
            except OSError:
                pass
            raise
        if self.fsync:
            fsync_dir(folder)


def _rename_base(base: str, final: str) -> tuple[str, str]:
    """A fresh unique base name keeping the ,S=/,W= and :2, parts."""
    new = unique_name() + base[base.index(","):]
    return new, new + final[len(base):]


def _remove_delivered(path: str, fsync: bool) -> None:
    """Undo a delivery: the file may have moved from new/ to cur/ (a client saw it) meanwhile."""
    try:
        os.unlink(path)
        removed = path
    except FileNotFoundError:
        folder = os.path.dirname(os.path.dirname(path))
        base = os.path.basename(path).split(":", 1)[0]
        removed = None
        cur = os.path.join(folder, "cur")
        for name in os.listdir(cur):
            if name == base or name.startswith(base + ":"):
                removed = os.path.join(cur, name)
                os.unlink(removed)
                break
        if removed is None:
            _log().warning("cannot roll back %s: the file is gone (expunged?)", path)
            return
    if fsync:
        fsync_dir(os.path.dirname(removed))
