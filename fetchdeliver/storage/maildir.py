"""The Maildir++ backend: delivery, and the mailboxes the IMAP server reads, shared with Dovecot.

`MaildirStore` is both faces of one tree: `deliver()` for the MDA, LMTP, fetch and filter (file
only: no lock, no index, so one process per message stays cheap; the next sync numbers the file),
and `open()` -> `MaildirMailbox` for the readers, which keep `fetchdeliver-index.sqlite` (see
storage/index.py) in each folder they open.

Delivery, the qmail/Dovecot way: tmp/ -> fsync -> link into new/ (or cur/) -> fsync dir.

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

from fetchdeliver.delivery.fsio import fsync_dir, hostname, strerror, write_all
from fetchdeliver.delivery.names import maildir_folder, name_from_maildir_folder, split_name
from fetchdeliver.errors import FetchdeliverError, InvalidMailboxName, MailboxNotFound, TemporaryDeliveryError
from fetchdeliver.storage.base import (SPECIAL_USE_NAMES, Mailbox, MailboxEntry, MessageInfo, Receipt, Store,
                                       StorageError, add_children_attributes)

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


class MaildirStore(Store):
    """A Maildir++ tree: INBOX is `root`, "Work/Reports" is root/.Work.Reports."""

    kind = "maildir"

    def __init__(self, root: str, *, fsync: bool = True, lock_timeout: float = 30.0,
                 index: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self.lock_timeout = lock_timeout
        self.index = index    # keep fetchdeliver-index.sqlite in the folders opened (storage/index.py)
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
                create: bool = True, into_cur: bool = False) -> Receipt:
        """`into_cur`: put the file in cur/ even without flags (an IMAP APPEND: a reader saw it
        arrive, so it needs no new/ -> cur/ move later)."""
        path = self.folder_path(mailbox)
        if not create and path != self.root and not os.path.isdir(path):
            raise MailboxNotFound(f"mailbox does not exist: {mailbox!r} ({path}); "
                                  "not creating it without :create")
        quota = self.quota
        if quota is not None:
            quota.check(len(raw))      # QuotaExceeded: nothing written
        letters, keywords = split_flags(flags)
        if keywords:
            letters = "".join(sorted(letters + self._keyword_letters(path, keywords)))
        base = f"{unique_name()},S={len(raw)},W={virtual_size(raw)}"
        if letters or into_cur:
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
        if quota is not None:
            quota.charge(len(raw), 1)

            def undo() -> None:
                _remove_delivered(dest, self.fsync)
                quota.charge(-len(raw), -1)
            return Receipt("maildir", mailbox, dest, undo=undo)
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
                table = self.add_keywords(folder, keywords)
            except FileNotFoundError:
                self._make(folder, folder != self.root)
                table = self.add_keywords(folder, keywords)
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

    def add_keywords(self, folder: str, keywords: list[str]) -> dict[str, int]:
        """Add `keywords` to the folder's dovecot-keywords; the resulting {lower name: index}."""
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


    # -- the access face (IMAP server and the other readers) ------------------------------------

    def path(self, name: str) -> str:
        try:
            d = maildir_folder(name)
        except InvalidMailboxName as e:
            raise StorageError(str(e), "CANNOT") from None
        return os.path.join(self.root, d) if d else self.root

    def _names(self) -> list[str]:
        names = ["INBOX"]
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return names
        for e in entries:
            if e.name.startswith(".") and e.name not in (".", "..") and e.is_dir():
                try:
                    names.append(name_from_maildir_folder(e.name))
                except ValueError:
                    continue
        return names

    def _special_uses(self) -> dict[str, str]:
        out = {}
        try:
            with open(os.path.join(self.root, SPECIAL_USE_FILE), encoding="utf-8") as f:
                for line in f:
                    name, _, use = line.rstrip("\n").partition("\t")
                    if use:
                        out[name] = use
        except FileNotFoundError:
            pass
        return out

    def list(self) -> list[MailboxEntry]:
        if not os.path.isdir(os.path.join(self.root, "cur")):
            self.create_mailbox("INBOX")
        special = self._special_uses()
        entries = []
        for name in self._names():
            attrs = set()
            use = special.get(name) or SPECIAL_USE_NAMES.get(name.lower())
            if use:
                attrs.add(use)
            entries.append(MailboxEntry(name, attrs))
        return add_children_attributes(entries)

    def open(self, name: str, readonly: bool = False) -> MaildirMailbox:
        path = self.path(name)
        if path == self.root and not os.path.isdir(os.path.join(path, "cur")):
            self.create_mailbox("INBOX")
        if not os.path.isdir(os.path.join(path, "cur")):
            raise StorageError(f"mailbox does not exist: {name}", "NONEXISTENT")
        return MaildirMailbox(self, "INBOX" if path == self.root else name, path, readonly)

    def create(self, name: str, special_use: tuple[str, ...] = ()) -> None:
        path = self.path(name)
        if path == self.root or os.path.isdir(os.path.join(path, "cur")):
            raise StorageError(f"mailbox already exists: {name}", "ALREADYEXISTS")
        try:
            self.create_mailbox(name)
        except FetchdeliverError as e:
            raise StorageError(str(e), "CANNOT") from e
        if special_use:
            self._set_special_use(name, special_use[0])

    def _set_special_use(self, name: str, use: str | None) -> None:
        table = self._special_uses()
        if use is None:
            if table.pop(name, None) is None:
                return
        else:
            table[name] = use
        p = os.path.join(self.root, SPECIAL_USE_FILE)
        tmp = p + f".{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(f"{n}\t{u}\n" for n, u in sorted(table.items()))
        os.replace(tmp, p)

    def delete(self, name: str) -> None:
        path = self.path(name)
        if path == self.root:
            raise StorageError("INBOX cannot be deleted", "CANNOT")
        if not os.path.isdir(path):
            raise StorageError(f"mailbox does not exist: {name}", "NONEXISTENT")
        # Rename first so that no reader sees a half-deleted folder (Dovecot does the same).
        trash = os.path.join(self.root, f"..DOVECOT-TRASH.{os.getpid()}.{os.urandom(4).hex()}")
        os.rename(path, trash)
        import shutil

        shutil.rmtree(trash, ignore_errors=True)
        fsync_dir(self.root)
        self._set_special_use(name, None)
        # The subscription stays (RFC 3501 6.3.6: a server must not unsubscribe on DELETE; Dovecot
        # keeps it): LSUB lists it, LIST (SUBSCRIBED) as \NonExistent, until UNSUBSCRIBE.

    def rename(self, old: str, new: str) -> None:
        src, dst = self.path(old), self.path(new)
        if src == self.root:
            raise StorageError("renaming INBOX is not supported", "CANNOT")
        if not os.path.isdir(src):
            raise StorageError(f"mailbox does not exist: {old}", "NONEXISTENT")
        if dst == self.root or os.path.exists(dst):
            raise StorageError(f"mailbox already exists: {new}", "ALREADYEXISTS")
        old_parts, new_parts = split_name(old), split_name(new)
        if new_parts[:len(old_parts)] == old_parts:
            raise StorageError("cannot rename a mailbox into itself", "CANNOT")
        moves = [(old, new)]
        prefix = old + "/"
        for n in self._names():
            if n.startswith(prefix):
                moves.append((n, new + "/" + n[len(prefix):]))
        for a, b in moves:
            os.rename(self.path(a), self.path(b))
        fsync_dir(self.root)
        special = self._special_uses()
        subs = self.subscriptions()
        for a, b in moves:
            if a in special:
                self._set_special_use(b, special[a])
                self._set_special_use(a, None)
            if a in subs:
                self.unsubscribe(a)
                self.subscribe(b)

    # -- subscriptions (Dovecot's file: "V\t2", a blank line, then names with \t between levels) --

    def subscriptions(self) -> list[str]:
        try:
            with open(os.path.join(self.root, "subscriptions"), encoding="utf-8",
                      errors="replace") as f:
                lines = f.read().split("\n")
        except FileNotFoundError:
            return []
        if lines and lines[0] == "V\t2":
            return [ln.replace("\t", "/") for ln in lines[1:] if ln]
        return [ln.replace(".", "/") for ln in lines if ln]

    def _write_subscriptions(self, names: list[str]) -> None:
        p = os.path.join(self.root, "subscriptions")
        tmp = p + f".{os.getpid()}.tmp"
        os.makedirs(self.root, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("V\t2\n\n" + "".join(n.replace("/", "\t") + "\n" for n in names))
        _copy_owner(self.root, tmp)
        os.replace(tmp, p)

    def subscribe(self, name: str) -> None:
        subs = self.subscriptions()
        if name not in subs:
            self._write_subscriptions(subs + [name])

    def unsubscribe(self, name: str) -> None:
        subs = self.subscriptions()
        if name in subs:
            self._write_subscriptions([n for n in subs if n != name])


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


# -- mailboxes -------------------------------------------------------------------------
#Maildir++ storage shared with Dovecot: UIDs in `dovecot-uidlist`, keywords in `dovecot-keywords`.
#
#`dovecot-uidlist` (version 3): a header `3 V<uidvalidity> N<nextuid> G<guid>`
#then one `<uid> [ext fields] :<basename>` line per message, where the basename
#is the file name without the ":2,INFO" part. Dovecot appends new records
#without rewriting the header, so the next UID is max(N, last UID + 1). Every
#scan and every change is done under the `dovecot-uidlist.lock` dotlock (created
#with O_EXCL, content "PID:HOST"), as Dovecot does: a readdir while another
#process renames files can miss them.
#
#Flags are the Maildir info letters (D F R S T, keyword letters a..z indexed by
#`dovecot-keywords`); a flag change is a rename within cur/.
#

LETTER_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
FLAG_LETTERS = {v: k for k, v in LETTER_FLAGS.items()}
SPECIAL_USE_FILE = "fetchdeliver-special-use"
# A directory changed within this many seconds may change again within the same
# timestamp tick: do not trust a cached scan of it (Dovecot does the same).
_FRESH = 2.0
# With sub-second timestamps (ext4, xfs, btrfs, tmpfs) the granularity is the kernel's clock tick.
_FRESH_FINE = 0.1
_last_uidvalidity = 0


def _new_uidvalidity() -> int:
    global _last_uidvalidity
    _last_uidvalidity = max(int(time.time()), _last_uidvalidity + 1)
    return _last_uidvalidity


def split_filename(name: str) -> tuple[str, str]:
    """("base", "info letters") of a Maildir file name; info is "" without ":2,"."""
    base, sep, info = name.partition(":2,")
    if not sep:
        base = name.split(":", 1)[0]
    return base, info


def _dovecot_name_cmp(a: str, b: str) -> int:
    """Dovecot's maildir_filename_sort_cmp: new files get UIDs in this order (seconds, then
    microseconds, numerically; then the name), so that both servers number a Maildir alike."""
    ma, mb = _NAME_TIME.match(a), _NAME_TIME.match(b)
    sa, sb = int(ma.group(1) or 0), int(mb.group(1) or 0)
    if sa != sb:
        return -1 if sa < sb else 1
    if ma.group(2) is not None and mb.group(2) is not None:
        ua, ub = int(ma.group(2)), int(mb.group(2))
        if ua != ub:
            return -1 if ua < ub else 1
    return (a > b) - (a < b)


_NAME_TIME = None


def _dovecot_order(name: str):
    """Sort key for new files (re and functools are imported only when a mailbox is scanned)."""
    global _NAME_TIME, _dovecot_order_key
    if _NAME_TIME is None:
        import functools
        import re

        _NAME_TIME = re.compile(r"(\d*)(?:\.[^.:M]*M(\d+))?")
        _dovecot_order_key = functools.cmp_to_key(_dovecot_name_cmp)
    return _dovecot_order_key(name)


_dovecot_order_key = None


def _size_from_name(base: str, field: str) -> int | None:
    for part in base.split(",")[1:]:
        if part.startswith(field + "=") and part[2:].isdigit():
            return int(part[2:])
    return None


class Uidlist:
    """The parsed dovecot-uidlist of one folder."""

    __slots__ = ("uidvalidity", "nextuid", "guid", "records", "by_base", "version", "header")

    def __init__(self) -> None:
        self.uidvalidity = 0
        self.nextuid = 1
        self.guid = ""
        self.version = 3
        self.header = ""
        self.records: list[tuple[int, str, str]] = []   # (uid, ext fields, base)
        self.by_base: dict[str, int] = {}

    @classmethod
    def parse(cls, data: str, path: str) -> "Uidlist":
        u = cls()
        lines = data.split("\n")
        header = lines[0].split()
        if not header or not header[0].isdigit():
            raise StorageError(f"{path}: line 1: not a dovecot-uidlist header: {lines[0][:80]!r}", "SERVERBUG")
        u.header = lines[0]
        u.version = int(header[0])
        if u.version == 1:
            if len(header) >= 3 and header[1].isdigit() and header[2].isdigit():
                u.uidvalidity, u.nextuid = int(header[1]), int(header[2])
        else:
            for field in header[1:]:
                key, val = field[:1], field[1:]
                if key == "V" and val.isdigit():
                    u.uidvalidity = int(val)
                elif key == "N" and val.isdigit():
                    u.nextuid = int(val)
                elif key == "G":
                    u.guid = val
        u.add_lines("\n".join(lines[1:]))
        return u

    def add_lines(self, text: str) -> None:
        """Parse record lines (the part after the header, or what was appended since)."""
        for line in text.split("\n"):
            if not line:
                continue
            uid_s, _, rest = line.partition(" ")
            if not uid_s.isdigit():
                continue  # Dovecot would call the file corrupted and rebuild; we skip the line
            if self.version >= 3:
                # `<uid> [fields] :<file name>`: the name starts after " :" (a field such as a saved
                # POP3 UIDL may itself hold ':'), as Dovecot reads it.
                if rest.startswith(":"):
                    ext, base = "", rest[1:]
                else:
                    ext, sep, base = rest.partition(" :")
                    if not sep:
                        ext, base = "", rest
            else:
                ext, base = "", rest.split(" ")[-1]
            base = split_filename(base)[0]
            uid = int(uid_s)
            self.records.append((uid, ext.strip(), base))
            self.by_base[base] = uid

    def next_uid(self) -> int:
        last = self.records[-1][0] if self.records else 0
        return max(self.nextuid, last + 1)

    def render(self) -> str:
        out = [f"3 V{self.uidvalidity} N{self.next_uid()} G{self.guid or os.urandom(16).hex()}"]
        for uid, ext, base in self.records:
            out.append(f"{uid} {ext + ' ' if ext else ''}:{base}")
        return "\n".join(out) + "\n"


class _Handle:
    __slots__ = ("subdir", "name")

    def __init__(self, subdir: str, name: str) -> None:
        self.subdir = subdir
        self.name = name


class MaildirMailbox(Mailbox):
    """One Maildir folder (cur/ new/ tmp/) with Dovecot's uidlist and keywords files, and our index.

    The index (storage/index.py, `fetchdeliver-index.sqlite` in the folder) mirrors what the
    last reconciliation saw: UID, file name, internal date, size, MODSEQ and cached parts. When
    the folder's directories and Dovecot's files are unchanged since then (their stamp is kept in
    the index), the mailbox is answered from the index alone; otherwise the directories are
    listed again under `dovecot-uidlist.lock` and the differences written back, each with a new
    MODSEQ: files added or removed behind our back, flags changed by renames.
    """

    def __init__(self, store: "MaildirStore", name: str, path: str, readonly: bool = False) -> None:
        self.store = store
        self.name = name
        self.path = path
        self.readonly = readonly
        self.lock_timeout = store.lock_timeout
        self._stamp: str | None = None       # the directory stamp the cached list reflects
        self._cache: list[MessageInfo] = []
        self._kw_stamp = None
        self._kw_names: dict[int, str] = {}
        self._uidlist: Uidlist | None = None
        self._ul_key = None                  # (inode, mtime, size) of the parsed dovecot-uidlist
        self._memos = None                   # storage.index.MemoTable, made on first use
        self._known: dict | None = None      # {"new": names, "cur": names} of the cached list
        self._unverified = False             # _stamp is dirty: taken after our own change, or a listing
                                             # within the directories' timestamp tick
        self._listed_in_tick = False         # the last scan listed new/ or cur/ within its tick
        # cur/ on its own (where nearly every message lives): its (inode, mtime, size) when our list
        # of it was last right, and whether a listing made after its timestamp tick says so. A scan
        # that finds cur/ unchanged lists new/ only (see _scan_locked).
        self._cur_stamp: tuple | None = None
        self._cur_verified = False
        self._cur_listed_in_tick = False     # the last listing of cur/ was made within its tick
        self._ix_mark: tuple = ()            # index.mark() when our list last matched the index
        self._ix_hms: int | None = None      # HIGHESTMODSEQ then: rows above it changed since
        self._peeked_next = 1
        self._ix = self._open_index() if store.index else None
        self.uidvalidity = self._peek_uidlist() or self._ensure_uidlist().uidvalidity
        if self._ix is not None:
            self._load_index()

    # -- the index ----------------------------------------------------------------------

    def _open_index(self):
        from fetchdeliver.storage.index import IndexUnavailable, acquire

        if not os.path.isdir(os.path.join(self.path, "cur")):
            return None   # reported as NONEXISTENT by _ensure_uidlist
        try:
            return acquire(self.path)
        except IndexUnavailable as e:
            _log().warning("%s: working without an index: %s", self.path, e)
            return None

    def _index_failed(self, e: Exception) -> None:
        """The index broke under us: move it aside; the next sync rebuilds it from the mail."""
        from fetchdeliver.storage.index import IndexUnavailable

        ix = self._ix
        ix.rollback()
        try:
            ix.move_aside(str(e))
            ix._connect()
        except (IndexUnavailable, OSError, Exception) as e2:   # noqa: BLE001 - any failure: go on without
            from fetchdeliver.storage.index import release

            _log().warning("%s: working without an index: %s", self.path, e2)
            ix.close()
            release(ix)
            self._ix = None
        self._forget_stamp()
        self._memos = None

    def _load_index(self) -> None:
        import sqlite3

        ix = self._ix
        try:
            if ix.get("uidvalidity") != self.uidvalidity:
                return   # void or new: the first sync fills it
            hms = ix.highestmodseq()     # before the rows: a row changed meanwhile is reloaded later
            rows = ix.raw_rows()
            self._ix_mark = ix.mark()
            stamp = ix.get("stamp")
        except sqlite3.DatabaseError as e:
            self._index_failed(e)
            return
        flag_memo: dict[str, frozenset] = {}
        cache = []
        append = cache.append
        for uid, name, subdir, idate, size, modseq in rows:    # the hot loop of SELECT: kept flat
            if subdir == "cur":
                at = name.find(":2,")
                info = name[at + 3:] if at >= 0 else ""
            else:
                info = ""
            flags = flag_memo.get(info)
            if flags is None:
                flags = flag_memo[info] = self._flags(info)
            if size is None:
                size = _size_from_name(split_filename(name)[0], "W")
            m = MessageInfo(uid, flags, idate, _Handle(subdir, name), size, modseq)
            m.recent = subdir == "new"
            append(m)
        self._cache = cache
        self._known = None
        self._stamp = stamp
        self._ix_hms = hms
        if stamp:   # kept only when the listing behind it was made after the directories' tick
            cur = _cur_part(stamp)
            if cur is not None:
                self._cur_stamp, self._cur_verified = cur, True

    def _from_row(self, r, flag_memo: dict) -> MessageInfo:
        name = r.name
        if r.subdir == "cur":
            info = name[name.find(":2,") + 3:] if ":2," in name else ""
        else:
            info = ""
        flags = flag_memo.get(info)
        if flags is None:
            flags = flag_memo[info] = self._flags(info)
        size = r.size if r.size is not None else _size_from_name(split_filename(name)[0], "W")
        m = MessageInfo(r.uid, flags, r.internaldate, _Handle(r.subdir, name), size, r.modseq)
        m.recent = r.subdir == "new"
        return m

    def _ix_begin(self) -> bool:
        """BEGIN IMMEDIATE; whether our list reflected the index until now (no one else wrote)."""
        current = self._ix.mark() == self._ix_mark
        self._ix.begin()
        return current

    def _ix_commit(self, current: bool) -> None:
        """COMMIT; if nothing else had been written, our list still reflects the index."""
        hms = self._ix.highestmodseq() if current else None
        self._ix.commit()
        if current:
            self._ix_mark = self._ix.mark()
            self._ix_hms = hms

    def highestmodseq(self) -> int:
        if self._ix is None:
            return 0
        import sqlite3

        try:
            return self._ix.highestmodseq()
        except sqlite3.DatabaseError as e:
            self._index_failed(e)
            return 0

    def vanished_since(self, modseq: int) -> list[int]:
        if self._ix is None:
            return []
        return self._ix.vanished_since(modseq)

    def cached(self, msg: MessageInfo) -> dict | None:
        if self._ix is None:
            return None
        if self._memos is None:
            self._memos = self._ix.memo_table()
        return self._memos.memo(msg.uid)

    def cached_fields(self, name: str):
        if self._ix is None:
            return None
        if self._memos is None:
            self._memos = self._ix.memo_table()
        return self._memos.all_fields(name)

    def cached_fields_like(self, name: str, needle: str):
        if self._ix is None:
            return None
        if self._memos is None:
            self._memos = self._ix.memo_table()
        return self._memos.fields_like(name, needle)

    def stored_keys(self, name: str):
        if self._ix is None:
            return None
        import sqlite3

        try:
            return self._ix.sort_keys(name)
        except sqlite3.DatabaseError as e:
            self._index_failed(e)
            return None

    def store_keys(self, name: str, values) -> None:
        if self._ix is None or not values:
            return
        import sqlite3

        try:
            current = self._ix_begin()
            try:
                self._ix.put_sort_keys(name, values)
            except (sqlite3.InterfaceError, UnicodeEncodeError, OverflowError):
                self._ix.rollback()     # a value sqlite cannot hold: not kept, computed again
                return
            self._ix_commit(current)
        except sqlite3.DatabaseError as e:
            self._index_failed(e)

    def flush_cached(self) -> None:
        if self._ix is None or self._memos is None or not self._memos.dirty:
            return
        import sqlite3

        try:
            current = self._ix_begin()
            self._memos.flush()
            self._ix_commit(current)
        except sqlite3.DatabaseError as e:
            self._index_failed(e)

    # -- files ----------------------------------------------------------------------

    def _lock(self):
        from fetchdeliver.delivery.dotlock import DotLock

        return DotLock(os.path.join(self.path, "dovecot-uidlist.lock"), timeout=self.lock_timeout,
                       stale=UIDLIST_LOCK_STALE, use_link=False)

    def _read_uidlist(self) -> Uidlist | None:
        """dovecot-uidlist, parsed; a file that only grew (appended records) is read from where we
        stopped, as Dovecot does."""
        p = os.path.join(self.path, "dovecot-uidlist")
        try:
            with open(p, "rb") as f:
                st = os.fstat(f.fileno())
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
                old, okey = self._uidlist, self._ul_key
                if old is not None and okey == key:
                    return old
                if old is not None and okey is not None and okey[0] == key[0] and key[2] > okey[2]:
                    f.seek(okey[2])
                    tail = f.read()
                    if tail and okey[2] > 0:
                        cut = tail.rfind(b"\n") + 1    # a record being written is read next time
                        old.add_lines(tail[:cut].decode("utf-8", "surrogateescape"))
                        self._ul_key = (key[0], key[1], okey[2] + cut)
                        return old
                    f.seek(0)
                data = f.read()
        except FileNotFoundError:
            self._uidlist = self._ul_key = None
            return None
        u = Uidlist.parse(data.decode("utf-8", "surrogateescape"), p)
        self._uidlist, self._ul_key = u, (key[0], key[1], len(data))
        return u

    def _write_uidlist(self, u: Uidlist) -> None:
        """Replace dovecot-uidlist atomically (caller holds the lock)."""
        p = os.path.join(self.path, "dovecot-uidlist")
        tmp = f"{p}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                write_all(fd, u.render().encode("utf-8", "surrogateescape"))
                os.fsync(fd)
            finally:
                os.close(fd)
            _copy_owner(self.path, tmp)
            os.rename(tmp, p)
        except BaseException:
            _unlink(tmp)
            raise
        fsync_dir(self.path)
        self._uidlist = self._ul_key = None

    def _append_uidlist(self, u: Uidlist, lines: list[str]) -> None:
        """Add records at the end of dovecot-uidlist, as Dovecot does (caller holds the lock)."""
        p = os.path.join(self.path, "dovecot-uidlist")
        data = "".join(lines).encode("utf-8", "surrogateescape")
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            write_all(fd, data)
            os.fdatasync(fd)   # the data and the new size: what Dovecot syncs too
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if self._uidlist is u and self._ul_key is not None and self._ul_key[2] + len(data) == st.st_size:
            self._ul_key = (st.st_ino, st.st_mtime_ns, st.st_size)
        else:
            self._uidlist = self._ul_key = None

    def _peek_uidlist(self) -> int:
        """UIDVALIDITY (and the next UID) from dovecot-uidlist's header and last line, without
        parsing every record: opening a mailbox whose index is current needs no more. 0 if unusable."""
        try:
            with open(os.path.join(self.path, "dovecot-uidlist"), "rb") as f:
                head = f.readline(4096).decode("utf-8", "surrogateescape")
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - 4096))
                tail = f.read().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            return 0
        fields = head.split()
        if len(fields) < 2 or fields[0] != "3":
            return 0
        validity = nxt = 0
        for field in fields[1:]:
            if field[:1] == "V" and field[1:].isdigit():
                validity = int(field[1:])
            elif field[:1] == "N" and field[1:].isdigit():
                nxt = int(field[1:])
        last = tail.rstrip("\n").rsplit("\n", 1)[-1]
        if last != head.rstrip("\n") and last.partition(" ")[0].isdigit():
            nxt = max(nxt, int(last.partition(" ")[0]) + 1)
        self._peeked_next = max(nxt, 1)
        return validity

    def _ensure_uidlist(self) -> Uidlist:
        u = self._read_uidlist()
        if u is not None and u.uidvalidity:
            return u
        if not os.path.isdir(os.path.join(self.path, "cur")):
            raise StorageError(f"mailbox does not exist: {self.name}", "NONEXISTENT")
        with self._lock():
            u = self._read_uidlist()
            if u is None or not u.uidvalidity:
                old = u
                u = Uidlist()
                u.uidvalidity = _new_uidvalidity()
                if old is not None:
                    u.records, u.by_base = old.records, old.by_base
                self._write_uidlist(u)
        return u

    def _keyword_names(self) -> dict[int, str]:
        p = os.path.join(self.path, "dovecot-keywords")
        try:
            st = os.stat(p)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._kw_stamp or stamp is None:
            names: dict[int, str] = {}
            for i, n in read_keyword_lines(self.path):
                names.setdefault(i, n)
            self._kw_names = names
            self._kw_stamp = stamp
        return self._kw_names

    def keywords(self) -> list[str]:
        return sorted(self._keyword_names().values())

    def _flags(self, info: str) -> frozenset:
        out = set()
        kw = None
        for c in info:
            f = LETTER_FLAGS.get(c)
            if f:
                out.add(f)
            elif "a" <= c <= "z":
                if kw is None:
                    kw = self._keyword_names()
                name = kw.get(ord(c) - 97)
                if name:
                    out.add(name)
        return frozenset(out)

    def _dir_stamp(self, subs=("new", "cur", "dovecot-uidlist", "dovecot-keywords")):
        """(stamp, time after which it can be trusted): a directory changed within the file
        system's timestamp granularity may change again under the same stamp."""
        stamp = []
        newest = 0.0
        fine = True
        for sub in subs:
            try:
                st = os.stat(os.path.join(self.path, sub))
            except FileNotFoundError:
                if sub in ("new", "cur"):
                    raise StorageError(f"mailbox {self.name} was deleted ({self.path})", "NONEXISTENT") from None
                stamp.append(None)
                continue
            stamp.append((st.st_ino, st.st_mtime_ns, st.st_size))
            if st.st_mtime > newest:
                newest = st.st_mtime
                fine = st.st_mtime_ns % 1_000_000_000 != 0
        return repr(tuple(stamp)), newest + (_FRESH_FINE if fine else _FRESH)

    # -- the change feed ----------------------------------------------------------------

    def sync(self) -> list[MessageInfo]:
        stamp, trusted_after = self._dir_stamp()
        # What another session or process wrote to the index shows at once, whatever the stamps
        # say. A stamp from a listing made after the directories' timestamp tick is trusted. A
        # listing made within the tick is not: another change later in that tick would leave the
        # same stamp, so each sync lists again until a listing after the tick (Dovecot rescans
        # such "dirty" directories too). A stamp we took after our own change (nothing listed in
        # its tick) is used until the tick is over and then checked by one listing: a change
        # made behind our back in the very tick of ours is seen a tick later, never lost (what
        # Dovecot does between explicit syncs); new/, where deliveries land, must not be fresh.
        if stamp == self._stamp and self._index_unchanged():
            now = time.time()
            if not self._unverified:
                if now > trusted_after:
                    return self._cache
            elif not self._listed_in_tick and now <= trusted_after and now > self._new_trusted_after():
                return self._cache
        with self._lock():
            return self._scan_locked()

    def _new_trusted_after(self) -> float:
        try:
            st = os.stat(os.path.join(self.path, "new"))
        except FileNotFoundError:
            return float("inf")
        return st.st_mtime + (_FRESH_FINE if st.st_mtime_ns % 1_000_000_000 else _FRESH)

    def _index_unchanged(self) -> bool:
        """Whether no other session or process wrote the index since our list matched it
        (their own appends, flag changes and expunges show at once, whatever the stamps say)."""
        if self._ix is None:
            return True
        import sqlite3

        try:
            return self._ix.mark() == self._ix_mark
        except sqlite3.DatabaseError:
            return False     # the scan finds the index broken and rebuilds it

    def _catch_up(self) -> None:
        """Take into our list the rows other sessions or processes changed in the index since our
        list last matched it. With the lock held only the writers of cached parts (which change
        no row) can commit meanwhile; without it (APPEND's first half) the mark and HIGHESTMODSEQ
        are read before the rows, so a commit in between is read again next time."""
        import sqlite3

        ix = self._ix
        if ix is None or self._ix_hms is None or not self._cache:
            return          # no list to bring up to date: the scan reads the rows it needs
        try:
            mark = ix.mark()
            if mark == self._ix_mark:
                return
            if ix.get("uidvalidity") != self.uidvalidity:
                return      # voided or renumbered: the scan starts again from the files
            hms = ix.highestmodseq()
            rows = ix.rows_since(self._ix_hms) if hms != self._ix_hms else []
            gone = set(ix.expunged_since(self._ix_hms)) if hms != self._ix_hms else set()
        except sqlite3.DatabaseError as e:
            self._index_failed(e)
            return
        if rows or gone:
            memo: dict = {}
            by_uid = {m.uid: m for m in self._cache if m.uid not in gone}
            for r in rows:
                if r.uid not in gone:
                    by_uid[r.uid] = self._from_row(r, memo)
            self._cache = sorted(by_uid.values(), key=lambda m: m.uid)
            self._known = None
            if gone and self._memos is not None:
                self._memos.forget(gone)
        self._ix_mark, self._ix_hms = mark, hms

    def own_change(self) -> bool:
        """Whether our list is current (for an APPEND split into write_message() and adopt())."""
        return self._own_change()

    def _own_change(self) -> bool:
        """Before a change we make (under the lock, but for APPEND's first half): whether our list
        is current. What other sessions wrote to the index is taken in first; then the stamp must
        be unchanged. A change behind our back within the stamp's tick may still hide: the stamp
        we take after our change is dirty, so the next sync lists (see sync())."""
        self._catch_up()
        return (self._stamp is not None and self._dir_stamp()[0] == self._stamp
                and self._index_unchanged())

    def _changed_by_us(self, was_current: bool) -> None:
        """After our change: the new stamp describes our list (to be verified, see sync()); a
        directory listed within its tick before stays to be listed again."""
        if was_current:
            self._stamp = self._dir_stamp()[0]
            self._unverified = True
            cur = self._stat_dir("cur")[0]
            if cur != self._cur_stamp:      # we changed cur/: our list of it is right, unverified
                self._cur_stamp, self._cur_verified = cur, False
        else:
            self._cur_stamp = None

    def _forget_stamp(self) -> None:
        """Trust nothing cached about the directories: the next sync lists both."""
        self._stamp = None
        self._cur_stamp = None

    def _stat_dir(self, sub: str) -> tuple[tuple, float]:
        """((inode, mtime, size) of new/ or cur/, time after which that stamp can be trusted)."""
        try:
            st = os.stat(os.path.join(self.path, sub))
        except FileNotFoundError:
            raise StorageError(f"mailbox {self.name} was deleted ({self.path})", "NONEXISTENT") from None
        fresh = _FRESH_FINE if st.st_mtime_ns % 1_000_000_000 else _FRESH
        return (st.st_ino, st.st_mtime_ns, st.st_size), st.st_mtime + fresh

    def _names(self, sub: str) -> list[str]:
        try:
            return [n for n in os.listdir(os.path.join(self.path, sub)) if n[:1] != "."]
        except FileNotFoundError:
            raise StorageError(f"mailbox {self.name} was deleted ({self.path})", "NONEXISTENT") from None

    def _listdir(self, new_names: list[str] | None = None, cur_names: list[str] | None = None
                 ) -> dict[str, _Handle]:
        files: dict[str, _Handle] = {}
        for sub, names in (("new", new_names), ("cur", cur_names)):
            for n in (self._names(sub) if names is None else names):
                base = n.partition(":2,")[0] if ":2," in n else n.split(":", 1)[0]
                if sub == "cur" or base not in files:
                    files[base] = _Handle(sub, n)
        return files

    def _known_names(self) -> dict[str, set[str]]:
        """{"new": names, "cur": names} of the files the cached list knows."""
        k = self._known
        if k is None:
            k = {"new": set(), "cur": set()}
            for m in self._cache:
                k[m.handle.subdir].add(m.handle.name)
            self._known = k
        return k

    def _unchanged(self, new_names: list[str], cur_names: list[str]) -> bool:
        """Whether the directories hold exactly the files the cached list knows (our own
        appends, flag renames and expunges keep it current): then nothing needs reconciling."""
        k = self._known_names()
        known_new, known_cur = k["new"], k["cur"]
        if (len(new_names) != len(known_new) or len(cur_names) != len(known_cur)
                or len(known_new) + len(known_cur) != len(self._cache)):
            return False
        return known_cur.issuperset(cur_names) and known_new.issuperset(new_names)

    def _moved(self, old, new) -> None:
        """Keep the cached name sets right when one of our own changes moves a file."""
        k = self._known
        if k is None:
            return
        if old is not None:
            k[old.subdir].discard(old.name)
        if new is not None:
            k[new.subdir].add(new.name)

    def _scan_locked(self, _retry: bool = True) -> list[MessageInfo]:
        """List the folder, number new files in dovecot-uidlist, reconcile the index (lock held)."""
        import sqlite3

        # The directories' stamp is taken before listing them: a change during the scan shows next
        # time. Dovecot's files change only under the lock we hold: their stamp is taken at the end.
        now = time.time()
        new_st, new_trusted_after = self._stat_dir("new")
        cur_st, cur_trusted_after = self._stat_dir("cur")
        dirs = repr((new_st, cur_st))
        new_names = self._names("new")     # new/ first: a file moving to cur/ meanwhile is seen there
        # What other sessions and processes wrote to the index is taken in first (under the lock
        # no one else changes a row). Then cur/ is listed again only when it may hold what our
        # list does not: its stamp moved, or it is dirty (our own change, or a listing, within
        # its timestamp tick: a change later in that tick leaves the same stamp), or Dovecot's
        # files changed, or a file we knew in new/ left it (moved to cur/ by someone). A stamp
        # we took after our own change is used within its tick and checked by a listing after
        # it (see sync()). Otherwise a delivery into new/ does not cost a listing of cur/.
        self._catch_up()
        cur_known = (self._cur_stamp == cur_st and bool(self._cache) and self._stamp is not None
                     and ((self._cur_verified and now > cur_trusted_after)
                          or (not self._cur_verified and not self._cur_listed_in_tick
                              and now <= cur_trusted_after))
                     and self._stamp.endswith(", " + self._dir_stamp(("dovecot-uidlist", "dovecot-keywords"))[0][1:])
                     and self._known_names()["new"].issubset(new_names))
        if cur_known:
            cur_names = list(self._known_names()["cur"])
            cur_verified, cur_in_tick = self._cur_verified, self._cur_listed_in_tick
        else:
            cur_names = self._names("cur")
            cur_verified = now > cur_trusted_after
            cur_in_tick = not cur_verified
        # Listed within the timestamp tick of the directories' last change: a change later in that
        # tick would not move the stamp, so this listing is verified by another one after the tick
        # (sync() does it), and the index keeps no stamp a later process would trust.
        settled = now > new_trusted_after and cur_verified
        in_tick = now <= new_trusted_after or cur_in_tick
        # The quick answer also needs our list to be the index's (after _catch_up(); not so when
        # the index was just rebuilt or voided: then the full pass below fills it again).
        if self._cache and self._unchanged(new_names, cur_names) and self._index_unchanged():
            # Every file is one we know: nothing to number, so dovecot-uidlist is not parsed (after
            # a restart that is every record); its header says whether UIDVALIDITY still holds.
            if self._uidlist is not None:
                parsed = self._read_uidlist()    # what was appended since, if anything
                validity = parsed.uidvalidity if parsed is not None else 0
            else:
                validity = self._peek_uidlist()
            quick = validity != 0 and validity == self.uidvalidity
        else:
            quick = False
        if quick:
            stamp0 = dirs[:-1] + ", " + self._dir_stamp(("dovecot-uidlist", "dovecot-keywords"))[0][1:]
            if settled and stamp0 != self._stamp and self._ix is not None:
                import sqlite3

                try:
                    current = self._ix_begin()
                    self._ix.set("stamp", stamp0)
                    self._ix_commit(current)
                except sqlite3.DatabaseError as e:
                    self._index_failed(e)
            self._stamp = stamp0
            self._unverified = not settled
            self._listed_in_tick, self._cur_listed_in_tick = in_tick, cur_in_tick
            self._cur_stamp, self._cur_verified = cur_st, cur_verified
            return self._cache
        u = self._read_uidlist()
        files = self._listdir(new_names, cur_names)
        if u is None or not u.uidvalidity:
            u2 = Uidlist()
            u2.uidvalidity = self.uidvalidity or _new_uidvalidity()
            if u is not None:
                u2.records, u2.by_base = u.records, u.by_base
            u = u2
            self._write_uidlist(u)
        if u.uidvalidity != self.uidvalidity:
            self.uidvalidity = u.uidvalidity   # the session notices and disconnects the client
        new = sorted((b for b in files if b not in u.by_base), key=_dovecot_order)
        if new:
            uid = u.next_uid()
            lines = []
            for base in new:
                u.records.append((uid, "", base))
                u.by_base[base] = uid
                lines.append(f"{uid} :{base}\n")
                uid += 1
            self._append_uidlist(u, lines)
        stamp0 = dirs[:-1] + ", " + self._dir_stamp(("dovecot-uidlist", "dovecot-keywords"))[0][1:]
        ix = self._ix
        old = {m.uid: m for m in self._cache}
        try:
            if ix is not None:
                ix.begin()
                if ix.get("uidvalidity") != u.uidvalidity:
                    ix.clear()
                    ix.set("uidvalidity", u.uidvalidity)
                    old = {}
                    self._memos = None
                elif ix.mark() != self._ix_mark:
                    # Another session or process wrote the index: take its rows (their MODSEQs and
                    # names) over ours. Rows it changed have a MODSEQ above the one our list knew
                    # (a move with no flag change keeps its MODSEQ: the listing below finds it).
                    memo: dict = {}
                    if self._ix_hms is not None and old:
                        for r in ix.rows_since(self._ix_hms):
                            old[r.uid] = self._from_row(r, memo)
                        for uid in ix.expunged_since(self._ix_hms):
                            old.pop(uid, None)
                    else:
                        old = {r.uid: self._from_row(r, memo) for r in ix.rows()}
            modseq = 0
            msgs = []
            seen = set()
            puts, moves = [], []
            for uid, _ext, base in u.records:
                h = files.get(base)
                if h is None or uid in seen:
                    continue
                seen.add(uid)
                prev = old.get(uid)
                if prev is not None and prev.handle.name == h.name and prev.handle.subdir == h.subdir:
                    msgs.append(prev)
                    continue
                flags = self._flags(split_filename(h.name)[1] if h.subdir == "cur" else "")
                if prev is None:
                    try:
                        mtime = os.stat(os.path.join(self.path, h.subdir, h.name)).st_mtime
                    except FileNotFoundError:
                        continue
                    modseq = modseq or (ix.next_modseq() if ix is not None else 0)
                    m = MessageInfo(uid, flags, mtime, h, _size_from_name(base, "W"), modseq)
                    puts.append(m)
                else:
                    if flags != prev.flags:
                        modseq = modseq or (ix.next_modseq() if ix is not None else 0)
                        ms = modseq
                    else:
                        ms = prev.modseq
                    m = MessageInfo(uid, flags, prev.internaldate, h, prev._size, ms)
                    moves.append(m)
                m.recent = h.subdir == "new"
                msgs.append(m)
            gone = [uid for uid in old if uid not in seen]
            if ix is not None:
                from fetchdeliver.storage.index import Row

                for m in puts:
                    ix.put(Row(m.uid, m.handle.name, m.handle.subdir, m.internaldate, m._size, m.modseq))
                for m in moves:
                    ix.move(m.uid, m.handle.name, m.handle.subdir, m.modseq)
                if gone:
                    ix.remove(gone, modseq or ix.next_modseq())
                ix.set("stamp", stamp0 if settled else "")
                hms = ix.highestmodseq()
                ix.commit()
                self._ix_mark = ix.mark()
                self._ix_hms = hms
        except sqlite3.DatabaseError as e:
            self._index_failed(e)
            if _retry and self._ix is not None:
                return self._scan_locked(_retry=False)
            raise StorageError(f"{self.path}: the index failed twice: {e}", "SERVERBUG") from None
        if gone and self._memos is not None:
            self._memos.forget(gone)
        msgs.sort(key=lambda m: m.uid)
        self._cache = msgs
        self._known = None
        self._stamp = stamp0
        self._unverified = not settled
        self._listed_in_tick, self._cur_listed_in_tick = in_tick, cur_in_tick
        self._cur_stamp, self._cur_verified = cur_st, cur_verified
        return msgs

    def uidnext(self) -> int:
        u = self._uidlist
        return u.next_uid() if u is not None else self._peeked_next

    # -- messages -------------------------------------------------------------------

    def _open(self, msg: MessageInfo) -> int:
        """A file descriptor on the message's file (os.open: a third cheaper than io.open)."""
        h = msg.handle
        try:
            return os.open(os.path.join(self.path, h.subdir, h.name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            pass
        # Renamed by another process (a flag change, new/ -> cur/): find it again by its base name.
        self._forget_stamp()
        self.sync()
        for m in self._cache:
            if m.uid == msg.uid:
                msg.handle = m.handle
                return os.open(os.path.join(self.path, m.handle.subdir, m.handle.name),
                               os.O_RDONLY | os.O_CLOEXEC)
        raise StorageError(f"message UID {msg.uid} was expunged by another client", "EXPUNGEISSUED")

    def read(self, msg: MessageInfo) -> bytes:
        try:
            fd = self._open(msg)
        except FileNotFoundError:
            raise StorageError(f"message UID {msg.uid} was expunged by another client",
                               "EXPUNGEISSUED") from None
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, size + 1)
            if len(data) != size:      # a short read, or the file grew: read on to the end
                chunks = [data]
                while True:
                    more = os.read(fd, 1 << 20)
                    if not more:
                        break
                    chunks.append(more)
                data = b"".join(chunks)
            return data
        finally:
            os.close(fd)

    def _check_writable(self) -> None:
        if self.readonly:
            raise StorageError(f"mailbox {self.name} is read-only", "READ-ONLY")

    def _record(self, msgs: list[MessageInfo], bump: bool) -> None:
        """Write renamed messages' rows (lock held); `bump`: their flags changed, give a new MODSEQ."""
        import sqlite3

        ix = self._ix
        if ix is None or not msgs:
            return
        try:
            current = self._ix_begin()
            if bump:
                ms = ix.next_modseq()
                for m in msgs:
                    m.modseq = ms
            ix.move_many((m.handle.name, m.handle.subdir, m.modseq, m.uid) for m in msgs)
            self._ix_commit(current)
        except sqlite3.DatabaseError as e:
            self._index_failed(e)

    def set_flags(self, changes: list[tuple[MessageInfo, frozenset]]) -> None:
        self._check_writable()
        kws = sorted({f for _, flags in changes for f in flags if not f.startswith("\\")}, key=str.lower)
        table = {n.lower(): i for i, n in self._keyword_names().items()}
        if any(k.lower() not in table for k in kws):
            try:
                table = self.store.add_keywords(self.path, kws)
            except OSError as e:
                raise StorageError(f"cannot write {self.path}/dovecot-keywords: {e.strerror}") from e
            self._kw_stamp = None
        by_set: dict[frozenset, list[str]] = {}     # a STORE gives many messages the same flags
        flag_memo: dict[str, frozenset] = {}
        with self._lock():
            current = self._own_change()
            done = []
            for msg, flags in changes:
                letters = by_set.get(flags)
                if letters is None:
                    letters = []
                    for f in flags:
                        if f.startswith("\\"):
                            c = FLAG_LETTERS.get(f)
                        else:
                            i = table.get(f.lower())
                            c = chr(97 + i) if i is not None else None
                        if c:
                            letters.append(c)
                    by_set[flags] = letters
                if self._rename(msg, letters):
                    info = split_filename(msg.handle.name)[1]
                    got = flag_memo.get(info)
                    if got is None:
                        got = flag_memo[info] = self._flags(info)
                    msg.flags = got
                    msg.recent = False
                    done.append(msg)
            self._record(done, bump=True)
            self._changed_by_us(current)

    def _rename(self, msg: MessageInfo, letters: list[str]) -> bool:
        """Give the file its new info letters; False when nothing changed or it is gone."""
        for _attempt in range(3):
            h = msg.handle
            base, info = split_filename(h.name)
            # Keep letters we do not know (e.g. "P" passed) as they are.
            keep = [c for c in info if c not in LETTER_FLAGS and not "a" <= c <= "z"]
            new_name = f"{base}:2,{''.join(sorted(set(letters + keep)))}"
            if new_name == h.name and h.subdir == "cur":
                return False
            src = f"{self.path}/{h.subdir}/{h.name}"
            dst = f"{self.path}/cur/{new_name}"
            try:
                os.rename(src, dst)
            except FileNotFoundError:
                files = self._listdir()
                found = files.get(base)
                if found is None:
                    return False  # expunged meanwhile
                self._moved(msg.handle, found)
                msg.handle = found
                continue
            new = _Handle("cur", new_name)
            self._moved(h, new)
            msg.handle = new
            return True
        return False

    def take_recent(self, msgs: list[MessageInfo]) -> None:
        """Move new/ messages to cur/ (Dovecot does this when a mailbox is selected read-write)."""
        if self.readonly:
            return
        todo = [m for m in msgs if m.handle.subdir == "new"]
        if not todo:
            return
        with self._lock():
            current = self._own_change()
            done = []
            for m in todo:
                if self._rename(m, [c for c in split_filename(m.handle.name)[1]]):
                    m.recent = False
                    done.append(m)
            self._record(done, bump=False)
            self._changed_by_us(current)

    def append(self, raw: bytes, flags=(), internaldate: float | None = None) -> int:
        current = self._own_change()
        return self.adopt(self.write_message(raw, flags, internaldate), current)

    def write_message(self, raw: bytes, flags=(), internaldate: float | None = None) -> str:
        """The durable half of append(): the file written, fsynced and linked into cur/; its path.
        Touches nothing shared, so a server may run it in a worker thread while other sessions go
        on (the fsyncs are most of an APPEND's time); then `adopt(path)` numbers it."""
        self._check_writable()
        try:
            quota = self.store.quota
            if quota is not None:
                quota.check(len(raw), grace=False)   # APPEND/COPY get no grace (Dovecot's rule)
            # Without flags the file goes to new/: the next session that selects the mailbox sees it
            # \Recent (RFC 3501 6.3.11), as Dovecot does; with flags it needs cur/'s info suffix.
            receipt = self.store.deliver(raw, self.name, list(flags), create=False)
        except FetchdeliverError as e:
            code = getattr(e, "imap_code", None) or ("TRYCREATE" if "does not exist" in str(e) else None)
            raise StorageError(str(e), code) from e
        if internaldate is not None:
            try:
                os.utime(receipt.path, (internaldate, internaldate))
            except OSError:
                pass
        return receipt.path

    def adopt(self, path: str, list_current: bool = False) -> int:
        """Give the durable file at `path` (just delivered into this folder) its UID in
        dovecot-uidlist and its index row; returns the UID. A crash before this only delays
        the numbering to the next sync: the file is already safe. `list_current`: what
        `_own_change()` said before the file was written."""
        name = os.path.basename(path)
        base = split_filename(name)[0]
        subdir = os.path.basename(os.path.dirname(path))
        try:
            mtime = os.stat(path).st_mtime
        except FileNotFoundError:
            mtime = time.time()   # already moved to cur/ by another reader; the row is fixed at sync
        with self._lock():
            u = self._read_uidlist()
            if u is None or not u.uidvalidity:
                self._scan_locked()
                return self._uidlist.by_base[base]
            uid = u.by_base.get(base)
            if uid is not None:
                return uid
            uid = u.next_uid()
            u.records.append((uid, "", base))
            u.by_base[base] = uid
            self._append_uidlist(u, [f"{uid} :{base}\n"])
            info = split_filename(name)[1] if subdir == "cur" else ""
            m = MessageInfo(uid, self._flags(info), mtime, _Handle(subdir, name), _size_from_name(base, "W"))
            m.recent = True     # new to this session (others see it \Recent while it is in new/)
            self._moved(None, m.handle)
            ix = self._ix
            if ix is not None:
                import sqlite3

                from fetchdeliver.storage.index import Row

                try:
                    current = self._ix_begin()
                    m.modseq = ix.next_modseq()
                    ix.put(Row(uid, name, subdir, mtime, m._size, m.modseq))
                    self._ix_commit(current)
                except sqlite3.DatabaseError as e:
                    self._index_failed(e)
                    return uid
            # Known now: the next sync neither numbers it again nor gives it another MODSEQ.
            self._cache = self._cache + [m]
            if len(self._cache) > 1 and self._cache[-2].uid > uid:
                self._cache.sort(key=lambda x: x.uid)
            self._changed_by_us(list_current)
        return uid

    def make_expunges_durable(self) -> None:
        for sub in ("cur", "new"):
            fsync_dir(os.path.join(self.path, sub))

    def expunge(self, msgs: list[MessageInfo]) -> None:
        self._check_writable()
        if not msgs:
            return
        gone = set()
        moved = False
        quota = self.store.quota
        freed = removed = 0      # bytes (the names' S=) and number of the files removed, for the quota
        with self._lock():
            list_current = self._own_change()
            for m in msgs:
                for _attempt in range(3):
                    try:
                        victim = os.path.join(self.path, m.handle.subdir, m.handle.name)
                        nbytes = 0
                        if quota is not None:
                            nbytes = _size_from_name(split_filename(m.handle.name)[0], "S") or \
                                os.stat(victim).st_size
                        os.unlink(victim)
                        freed += nbytes
                        removed += 1
                        break
                    except FileNotFoundError:
                        moved = True
                        found = self._listdir().get(split_filename(m.handle.name)[0])
                        if found is None:
                            break
                        m.handle = found
                gone.add(m.uid)
            # No fsync of the directories: an unlink that a power cut undoes brings a message back,
            # it never loses one (Dovecot does not sync them either); make_expunges_durable() does.
            ix = self._ix
            if ix is not None:
                import sqlite3

                try:
                    current = self._ix_begin()
                    ix.remove(sorted(gone), ix.next_modseq())
                    self._ix_commit(current)
                except sqlite3.DatabaseError as e:
                    self._index_failed(e)
            live = len(self._cache) - len(gone)
            self._cache = [m for m in self._cache if m.uid not in gone]
            self._known = None
            u = self._read_uidlist()
            # Records of expunged messages are harmless (Dovecot drops them when it rewrites the
            # file): rewrite when they are many, or always when there is no index to count them.
            # Records beyond the messages we list are at most the stale ones: only when those are
            # many are the expunged UIDs read and counted.
            if u is not None and (self._ix is None or len(u.records) - live > max(64, len(u.records) // 4)):
                dead = set(gone)
                if self._ix is not None:
                    import sqlite3

                    try:
                        dead |= self._ix.expunged_uids()
                    except sqlite3.DatabaseError as e:
                        self._index_failed(e)
                stale = sum(1 for r in u.records if r[0] in dead)
                if stale and (self._ix is None or stale > max(64, len(u.records) // 4)):
                    nxt = u.next_uid()
                    u.records = [r for r in u.records if r[0] not in dead]
                    u.by_base = {b: uid for uid, _e, b in u.records}
                    u.nextuid = nxt
                    self._write_uidlist(u)
            if list_current and not moved and self._ix is not None:
                self._changed_by_us(True)    # our list is the folder's: no listing needed next
            else:
                self._forget_stamp()
        if quota is not None and removed:
            quota.charge(-freed, -removed)
        if self._memos is not None:
            self._memos.forget(gone)

    def watch_paths(self) -> list[str]:
        return [os.path.join(self.path, "new"), os.path.join(self.path, "cur")]

    def close(self) -> None:
        if self._ix is not None:
            from fetchdeliver.storage.index import release

            self.flush_cached()
            ix, self._ix = self._ix, None
            release(ix)


def _cur_part(stamp: str) -> tuple | None:
    """cur/'s (inode, mtime, size) from a stamp string kept in the index (see _dir_stamp)."""
    import ast

    try:
        parts = ast.literal_eval(stamp)
        return tuple(parts[1]) if parts[1] is not None else None
    except (ValueError, SyntaxError, TypeError, IndexError):
        return None


def _unlink(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def _copy_owner(ref: str, path: str) -> None:
    """Files we write in a folder belong to the folder's owner (the server may run as root)."""
    if os.geteuid() != 0:
        return
    try:
        st = os.stat(ref)
        os.chown(path, st.st_uid, st.st_gid)
    except OSError:
        pass


MaildirStorage = MaildirStore  # the IMAP server's name for it before the two became one
