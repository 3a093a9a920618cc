"""Quotas: the `[quota]` limits, Dovecot's quota rules, and the Maildir++ quota (`maildirsize`).

    [quota]
    storage = "1G"          # bytes, or with a unit: b k M G T (1024-based, as Dovecot reads them)
    messages = 100000       # messages in all mailboxes of the user
    tempfail = false        # over quota: LMTP 552 5.2.2 / MDA exit 77 (true: 452 4.2.2 / exit 75)
    grace = "10%"           # the last message may pass the storage limit by this (default 0; Dovecot: 10%)
    passwd_file = "..."     # per-user rules (default: [imap] passwd_file)

A user's own limits come from the passwd-file's extra fields, as Dovecot reads them
(`userdb_quota_rule=*:storage=100M`, `userdb_quota_rule2=*:messages=1000`; `quota_rule` without the
prefix too); they replace the table's. Without any limit configured, a `maildirsize` file's own
first line gives them (Courier's `maildirmake -q`), as Dovecot does.

The Maildir++ file, `maildirsize` at the Maildir's root, in the format Dovecot and Courier share:

    1073741824S,100000C     <- the limits (bytes S, messages C; "0S" when there are none)
    52345 12                <- a total, written by a recalculation
    2048 1                  <- one line appended per delivery (O_APPEND) ...
    -2048 -1                <- ... and per expunge

The sum of the lines is the usage. The file is rebuilt from the Maildir (the sizes in the file
names' `,S=`, else stat) when it is missing, unreadable, longer than 5120 bytes, has other limits
than the configured ones, or says "over quota" while it holds more than the one total line or is
older than 15 minutes: Dovecot's rules, so that both programs trust and rebuild the same file.
"""

from __future__ import annotations

import os
import time

from fetchdeliver.errors import ConfigError
from fetchdeliver.storage.base import Quota, QuotaStatus, StorageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from fetchdeliver.storage.base import Store

FILENAME = "maildirsize"
MAX_FILE_SIZE = 5120          # a longer file is rebuilt (Dovecot reads at most this much)
STALE_SECONDS = 15 * 60       # an "over quota" file older than this is rebuilt before it is believed
_UNITS = {"b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}

# (bytes limit, messages limit); None: no limit on that resource
Limits = tuple["int | None", "int | None"]


def _log():
    import logging

    return logging.getLogger(__name__)


def parse_size(text: str | int, default_unit: int = 1) -> int:
    """"100M" -> 104857600; a bare number is in `default_unit`s (Dovecot's storage= is in KiB)."""
    if isinstance(text, bool):
        raise ValueError(f"expected a size such as \"100M\", got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text}")
        return text * default_unit
    s = str(text).strip()
    unit = default_unit
    if s and s[-1].lower() in _UNITS:
        unit = _UNITS[s[-1].lower()]
        s = s[:-1].strip()
    if not s.isdigit():
        raise ValueError(f"expected a size such as 1048576, \"100M\" or \"2G\", got {text!r}")
    return int(s) * unit


def parse_rule(rule: str) -> tuple[int | None, int | None]:
    """Dovecot's quota rule for the whole user: "*:storage=100M", "*:messages=1000", "*:bytes=N",
    several limits joined with ":". Returns (bytes, messages), each None where the rule sets none
    and 0 for "no limit". Rules for one mailbox ("Trash:storage=+10%") are not supported (ValueError)."""
    box, sep, args = rule.strip().partition(":")
    if not sep or box not in ("*", "?"):
        raise ValueError(f"only rules for the whole user (\"*:storage=100M\") are supported, got {rule!r}")
    size: int | None = None
    count: int | None = None
    for arg in args.replace(" ", ":").split(":"):
        if not arg:
            continue
        key, eq, value = arg.partition("=")
        key = key.strip().lower()
        if key == "ignore" and not eq:
            raise ValueError(f"\"ignore\" applies to one mailbox, not to the user: {rule!r}")
        if not eq:
            raise ValueError(f"expected KEY=VALUE in quota rule {rule!r}, got {arg!r}")
        if value.endswith("%") or value.startswith(("+", "-")):
            raise ValueError(f"relative limits are not supported: {rule!r}")
        if key == "storage":
            size = parse_size(value, 1024)
        elif key == "bytes":
            size = parse_size(value, 1)
        elif key == "messages":
            if not value.isdigit():
                raise ValueError(f"messages= takes a number, got {value!r} in {rule!r}")
            count = int(value)
        elif key != "backend":
            raise ValueError(f"unknown quota rule key {key!r} in {rule!r} (storage, bytes or messages)")
    return size, count


def user_rules(extra: dict[str, str]) -> tuple[int | None, int | None] | None:
    """The limits a passwd-file entry's extra fields set (quota_rule, quota_rule2, ... with or
    without the userdb_ prefix), or None when it sets none."""
    size: int | None = None
    count: int | None = None
    found = False
    for key in sorted(extra):
        name = key.removeprefix("userdb_")
        if name == "quota_rule" or (name.startswith("quota_rule") and name[10:].isdigit()):
            s, c = parse_rule(extra[key])
            found = True
            size = s if s is not None else size
            count = c if c is not None else count
    return (size, count) if found else None


def _none_if_zero(v: int | None) -> int | None:
    return v if v else None


class QuotaSettings:
    """[quota] resolved for one user: `limits()` is re-read from the passwd-file when it changes."""

    def __init__(self, table: dict, user: str | None, passwd_file: str | None) -> None:
        self.tempfail = bool(table.get("tempfail", False))
        grace = table.get("grace", 0)
        self.grace: int | str = grace if isinstance(grace, str) and grace.endswith("%") else parse_size(grace)
        self.user = user
        self.passwd_file = passwd_file
        size = table.get("storage")
        self.default: Limits | None = None
        if size is not None or table.get("messages") is not None:
            self.default = (_none_if_zero(parse_size(size)) if size is not None else None,
                            _none_if_zero(table.get("messages")))
        self._auth = None

    def limits(self) -> Limits | None:
        """The limits in force for the user (None: none configured, the maildirsize file's apply)."""
        if self.user and self.passwd_file:
            entry = self._entry()
            if entry is not None:
                try:
                    rules = user_rules(entry.extra)
                except ValueError as e:
                    raise ConfigError(f"user {entry.user}: {e}", file=self.passwd_file) from None
                if rules is not None:
                    dflt = self.default or (None, None)
                    return (_none_if_zero(rules[0]) if rules[0] is not None else dflt[0],
                            _none_if_zero(rules[1]) if rules[1] is not None else dflt[1])
        return self.default

    def _entry(self):
        from fetchdeliver.imapserver.auth import PasswdFileAuthenticator

        if self._auth is None:
            self._auth = PasswdFileAuthenticator(self.passwd_file)
        users = self._auth.users()
        user = (self.user or "").strip("<>")
        entry = users.get(user)
        if entry is None and "@" in user:
            entry = users.get(user.rsplit("@", 1)[0])
        return entry


def settings_for(settings, user: str | None = None) -> QuotaSettings | None:
    """[quota] for `user` (a login name or an address), or None when there is no [quota] table."""
    table = settings.data.get("quota")
    if table is None:
        return None
    passwd = table.get("passwd_file") or (settings.data.get("imap") or {}).get("passwd_file")
    return QuotaSettings(table, user, os.path.expanduser(passwd) if passwd else None)


def attach_quota(store: Store, settings, user: str | None = None) -> Store:
    """Give `store` the quota [quota] sets for `user`; the store unchanged without a [quota] table."""
    qs = settings_for(settings, user)
    if qs is None:
        return store
    from fetchdeliver.storage.maildir import MaildirStore

    kind = getattr(store, "kind", "")
    if isinstance(store, MaildirStore):
        store.quota = MaildirQuota(store.root, qs.limits, tempfail=qs.tempfail)
        store.quota.grace = qs.grace
    elif kind == "postgres":
        from fetchdeliver.storage.postgres import PostgresQuota, PostgresStore

        assert isinstance(store, PostgresStore)
        store.quota = PostgresQuota(store, qs.limits, tempfail=qs.tempfail)
        store.quota.grace = qs.grace
    elif kind not in _WARNED:   # once per process: an IMAP server would say it at every login
        _WARNED.add(kind)
        _log().warning("[quota] is not enforced for the %s store (only for Maildir and PostgreSQL)", kind)
    return store


_WARNED: set[str] = set()


# -- Maildir++ ---------------------------------------------------------------------------------------

def format_limits(size: int | None, count: int | None) -> str:
    """The first line of maildirsize, written as Dovecot writes it ("0S" when there are no limits)."""
    parts = []
    if size or not count:
        parts.append(f"{size or 0}S")
    if count:
        parts.append(f"{count}C")
    return ",".join(parts)


def parse_limits(line: str) -> tuple[int | None, int | None] | None:
    """"1000S,10C" -> (1000, 10); 0 means no limit (None); None when the line is not limits."""
    size = count = 0
    for part in line.strip().split(","):
        num, unit = part[:-1], part[-1:]
        if not num.isdigit() or unit not in ("S", "C"):
            return None
        if unit == "S":
            size = int(num)
        else:
            count = int(num)
    return _none_if_zero(size), _none_if_zero(count)


class _File:
    """What a maildirsize file says."""

    __slots__ = ("limits", "bytes", "messages", "lines", "mtime")

    def __init__(self, limits: Limits, total_bytes: int, messages: int, lines: int, mtime: float) -> None:
        self.limits = limits
        self.bytes = total_bytes
        self.messages = messages
        self.lines = lines          # lines after the limits
        self.mtime = mtime


def read_maildirsize(path: str) -> _File | None:
    """The file's limits and summed usage, or None when it is missing or must be rebuilt."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_SIZE + 1)
            mtime = os.fstat(f.fileno()).st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        _log().warning("cannot read %s: %s; counting the Maildir instead", path, e)
        return None
    if len(data) > MAX_FILE_SIZE or b"\0" in data:
        return None
    end = data.rfind(b"\n")
    if end < 0:
        return None
    lines = data[:end].decode("ascii", "replace").split("\n")   # an unterminated last line is ignored
    limits = parse_limits(lines[0])
    if limits is None:
        return None
    total_bytes = total_count = 0
    for line in lines[1:]:
        fields = line.split()
        try:
            b, c = int(fields[0]), int(fields[1])
        except (IndexError, ValueError):
            return None
        total_bytes += b
        total_count += c
    if total_bytes < 0 or total_count < 0:
        return None
    return _File(limits, total_bytes, total_count, len(lines) - 1, mtime)


def _sum_dir(path: str) -> tuple[int, int]:
    size = count = 0
    try:
        entries = list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return 0, 0
    for e in entries:
        name = e.name
        if name.startswith("."):
            continue
        pos = name.find(",S=")
        n = None
        if pos >= 0:
            digits = ""
            rest = name[pos + 3:]
            for ch in rest:
                if not ch.isdigit():
                    break
                digits += ch
            nxt = rest[len(digits):len(digits) + 1]
            if digits and nxt in ("", ":", ","):
                n = int(digits)
        if n is None:
            try:
                n = e.stat().st_size
            except FileNotFoundError:
                continue
        size += n
        count += 1
    return size, count


def _folders(root: str) -> list[str]:
    out = [root]
    try:
        for e in os.scandir(root):
            if e.name.startswith(".") and e.name not in (".", "..") and e.is_dir():
                out.append(e.path)
    except FileNotFoundError:
        pass
    return out


def _mtimes(dirs: list[str]) -> list[int]:
    out = []
    for d in dirs:
        try:
            out.append(os.stat(d).st_mtime_ns)
        except OSError:
            out.append(-1)
    return out


def count_maildir(root: str) -> tuple[int, int, bool]:
    """(bytes, messages, steady) of every folder's new/ and cur/; steady: nothing changed meanwhile."""
    dirs = [os.path.join(f, sub) for f in _folders(root) for sub in ("new", "cur")]
    before = _mtimes(dirs)
    size = count = 0
    for d in dirs:
        s, c = _sum_dir(d)
        size += s
        count += c
    return size, count, _mtimes(dirs) == before


def changed_since(root: str, mtime: float) -> bool:
    """Whether a new/ or cur/ directory of the Maildir changed after `mtime`."""
    for folder in _folders(root):
        for sub in ("new", "cur"):
            try:
                if os.stat(os.path.join(folder, sub)).st_mtime > mtime:
                    return True
            except OSError:
                continue
    return False


class MaildirQuota(Quota):
    """The Maildir++ quota of the Maildir at `root` (its `maildirsize`)."""

    def __init__(self, root: str, limits: Callable[[], Limits | None] | None = None, *,
                 tempfail: bool = False) -> None:
        self.root_dir = root
        self.path = os.path.join(root, FILENAME)
        self._limits = limits or (lambda: None)
        self.tempfail = tempfail

    def status(self) -> QuotaStatus:
        return self._status(strict=False)

    def check(self, size: int, count: int = 1, *, grace: bool = True) -> None:
        if self.moving:
            return
        st = self._status(strict=False)
        resource = st.over_by(size, count, self.grace_bytes(st) if grace else 0)
        if resource is not None:
            st = self._status(strict=True)   # believe "full" only from a freshly counted file
            resource = st.over_by(size, count, self.grace_bytes(st) if grace else 0)
        if resource is not None:
            raise self.exceeded(st, resource, size)

    def set_limits(self, bytes_limit: int | None, messages_limit: int | None) -> None:
        """Write new limits into maildirsize (Courier's way); refused where [quota] sets them."""
        if self._limits() is not None:
            raise StorageError("the limits come from the configuration ([quota] or the passwd-file)", "CANNOT")
        self.recalculate((bytes_limit or None, messages_limit or None))

    def _status(self, strict: bool) -> QuotaStatus:
        forced = self._limits()
        f = read_maildirsize(self.path)
        limits = forced if forced is not None else (f.limits if f is not None else (None, None))
        if f is not None and forced is not None and f.limits != forced:
            f = None                        # other limits: rebuild with ours, as Dovecot does
        if f is not None:
            st = QuotaStatus(self.root, f.bytes, f.messages, *limits)
            over = (limits[0] is not None and f.bytes > limits[0]) or \
                (limits[1] is not None and f.messages > limits[1])
            distrust = f.lines > 1 or f.mtime < time.time() - STALE_SECONDS
            if (over or strict) and not distrust:
                # Also a folder changed after the file: mail removed by a program that keeps no
                # maildirsize (Dovecot waits for the 15 minutes; a few stat() calls settle it now).
                distrust = changed_since(self.root_dir, f.mtime)
            if not ((over or strict) and distrust):
                return st
        if forced is None and f is None and not os.path.exists(self.path):
            # No limits anywhere: nothing to keep up to date (Dovecot writes no file either).
            size, count, _ = count_maildir(self.root_dir)
            return QuotaStatus(self.root, size, count)
        return self.recalculate(limits)

    def recalculate(self, limits: Limits | None = None) -> QuotaStatus:
        """Count the Maildir and write a fresh maildirsize (unless it changed while counting)."""
        if limits is None:
            forced = self._limits()
            f = read_maildirsize(self.path)
            limits = forced if forced is not None else (f.limits if f is not None else (None, None))
        for _attempt in range(3):
            size, count, steady = count_maildir(self.root_dir)
            if steady:
                self._write(f"{format_limits(*limits)}\n{size} {count}\n")
                break
        return QuotaStatus(self.root, size, count, *limits)

    def _write(self, text: str) -> None:
        tmp = f"{self.path}.{os.uname().nodename}.{os.getpid()}.{os.urandom(4).hex()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            return   # no Maildir yet: the first delivery makes it, and the next check counts it
        except OSError as e:
            _log().warning("cannot write %s: %s", tmp, e)
            return
        try:
            try:
                os.write(fd, text.encode("ascii"))
                if os.geteuid() == 0:   # the mail user's file, as if it had written it itself
                    st = os.stat(self.root_dir)
                    os.fchown(fd, st.st_uid, st.st_gid)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as e:
            _log().warning("cannot write %s: %s", self.path, e)
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def charge(self, size: int, count: int = 1) -> None:
        """Append "SIZE COUNT" (the message is stored already); rebuild where the file cannot be trusted."""
        if size == 0 and count == 0:
            return
        forced = self._limits()
        f = read_maildirsize(self.path)
        if f is None or (forced is not None and f.limits != forced):
            if forced is not None or f is not None or os.path.exists(self.path):
                self.recalculate(forced)   # counts the message just stored
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as e:
            _log().warning("cannot update %s: %s", self.path, e)
            return
        try:
            os.write(fd, f"{size} {count}\n".encode("ascii"))
        except OSError as e:
            _log().warning("cannot update %s: %s", self.path, e)
        finally:
            os.close(fd)
