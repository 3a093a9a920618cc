"""The mbox backend of the IMAP server: the files fetchdeliver's mbox deliverer writes.

INBOX is one mbox file; other mailboxes are files under the folder directory
(`[delivery] mbox_folders`, default `mail/` beside INBOX), as delivery/mbox.py
lays them out. Every read and change takes the deliverer's locks in its order
(the FILE.lock dot-lock, then fcntl), so the server, the MDA, procmail, mutt and
Dovecot can share a file.

UIDs, UIDVALIDITY and flag changes made over IMAP live in a small JSON file
beside the mbox (`.NAME.fdimap`), replaced atomically; a message is known by a
digest of its bytes. Flags written at delivery (Status:/X-Status:/X-Keywords:,
as Dovecot reads them) are what a message starts with. Those headers, and
Dovecot's X-UID/X-IMAP/X-IMAPbase, are hidden from clients, as Dovecot hides them.

EXPUNGE writes the remaining messages to a temporary file, fsyncs it and
renames it over the mbox while holding both locks: a crash leaves either the old
or the new file, never half of one. Writers that take the dot-lock before
opening the file (fetchdeliver, Dovecot, procmail, mutt) see the new file.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time

from fetchdeliver.imapserver.storage import (MailboxEntry, Mailbox, MessageInfo, Storage, StorageError,
                                             add_children_attributes, canonical_flag)

_HIDDEN = (b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imap", b"x-imapbase")
_STATUS = {"R": "\\Seen"}
_XSTATUS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}


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
    from fetchdeliver.delivery.mbox import mboxrd_unescape

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
            flags.update(_STATUS[c] for c in text if c in _STATUS)
        elif lname == b"x-status":
            flags.update(_XSTATUS[c] for c in text if c in _XSTATUS)
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
        from fetchdeliver.delivery.mbox import DOTLOCK_STALE, _fcntl_lock, _take_dotlock

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
    def __init__(self, storage: "MboxStorage", name: str, path: str, readonly: bool = False) -> None:
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
            with open(self.state_path, encoding="utf-8") as f:
                st = json.load(f)
            if isinstance(st, dict) and isinstance(st.get("uidvalidity"), int):
                st.setdefault("next", 1)
                st.setdefault("uids", {})
                st.setdefault("flags", {})
                return st
        except (OSError, ValueError):
            pass
        self._new_state = True
        return {"uidvalidity": int(time.time()), "next": 1, "uids": {}, "flags": {}}

    def _save_state(self) -> None:
        """Write the sidecar; a read-only mailbox where it cannot be written just keeps it in memory."""
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
        for b in blocks:
            uid = uids.get(b.key)
            if uid is None:
                uid = max(st["next"], 1)
                st["next"] = uid + 1
                uids[b.key] = uid
                changed = True
            live.add(b.key)
            raw, header_flags = split_flag_headers(b.raw)
            stored = st["flags"].get(str(uid))
            flags = frozenset(stored) if stored is not None else header_flags
            info = MessageInfo(uid, frozenset(canonical_flag(f) for f in flags), _from_date(b.from_line),
                               handle=(b.key, raw), size=len(raw) + raw.count(b"\n") - raw.count(b"\r\n"))
            infos.append(info)
        for key in [k for k in uids if k not in live]:
            st["flags"].pop(str(uids.pop(key)), None)
            changed = True
        infos.sort(key=lambda m: m.uid)
        self._infos = infos
        # UIDs are assigned even by EXAMINE/STATUS, and must be the same for the next session.
        if (changed or self._new_state) and os.path.exists(self.path):
            self._save_state()
            self._new_state = False

    def uidnext(self) -> int:
        return max(self._state["next"], 1)

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
        for msg, flags in changes:
            self._state["flags"][str(msg.uid)] = sorted(flags)
            msg.flags = frozenset(flags)
        self._save_state()

    def append(self, raw: bytes, flags=(), internaldate: float | None = None) -> int:
        self._check_writable()
        from fetchdeliver.errors import FetchdeliverError

        before = {m.uid for m in self.sync()}
        try:
            self.storage.store.deliver(raw, self.name, list(flags), create=False)
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
    from fetchdeliver.delivery.fsio import fsync_dir, write_all

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


class MboxStorage(Storage):
    """INBOX and the folder mbox files of one user, as the deliverer writes them."""

    def __init__(self, inbox_path: str, folder_dir: str | None = None, *, lock_timeout: float = 30.0) -> None:
        from fetchdeliver.delivery.mbox import MboxStore

        self.store = MboxStore(inbox_path, folder_dir, lock_timeout=lock_timeout)
        self.lock_timeout = lock_timeout

    def _path(self, name: str) -> str:
        from fetchdeliver.errors import InvalidMailboxName

        try:
            return self.store.path_for(name)
        except InvalidMailboxName as e:
            raise StorageError(str(e), "CANNOT") from None

    def list(self) -> list[MailboxEntry]:
        return add_children_attributes([MailboxEntry(n) for n in self.store.list_mailboxes()])

    def open(self, name: str, readonly: bool = False) -> MboxMailbox:
        path = self._path(name)
        if path != self.store.inbox_path and not os.path.isfile(path):
            raise StorageError(f"no mailbox {name!r}", "NONEXISTENT")
        return MboxMailbox(self, "INBOX" if path == self.store.inbox_path else name, path, readonly)

    def create(self, name: str, special_use: tuple[str, ...] = ()) -> None:
        path = self._path(name)
        if path == self.store.inbox_path or os.path.exists(path):
            raise StorageError(f"mailbox {name!r} already exists", "ALREADYEXISTS")
        try:
            os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as e:
            raise StorageError(f"cannot create {name!r}: {e.strerror}", "CANNOT") from None

    def delete(self, name: str) -> None:
        path = self._path(name)
        if path == self.store.inbox_path:
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
        if src == self.store.inbox_path or dst == self.store.inbox_path:
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
        return os.path.join(self.store.folder_dir, ".subscriptions")

    def subscriptions(self) -> list[str]:
        try:
            with open(self._subscriptions_path(), encoding="utf-8") as f:
                return [line.strip() for line in f if line.strip()]
        except OSError:
            return [e.name for e in self.list() if "\\Noselect" not in e.attributes]

    def _write_subscriptions(self, names: list[str]) -> None:
        os.makedirs(self.store.folder_dir, 0o700, exist_ok=True)
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
