"""One user's Sieve scripts in Pigeonhole's layout, changed atomically and durably.

    BASE/sieve/NAME.sieve        every script
    BASE/sieve/tmp/              where new versions are written before the rename
    BASE/.dovecot.sieve          a symlink to "sieve/NAME.sieve": the active script

BASE is the user's home unless `[managesieve] sieve_dir` says otherwise, so a
Pigeonhole user's scripts are served as they are. Every change is written to a
temporary file, fsynced, renamed into place, and the directory fsynced; the
active link is replaced with a rename too, so a delivery reading it sees the old
script or the new one, never a missing or half-written file.
"""

from __future__ import annotations

import os

from fetchdeliver.errors import FetchdeliverError

ACTIVE_LINK = ".dovecot.sieve"
SCRIPTS_DIR = "sieve"
SUFFIX = ".sieve"
MAX_NAME_BYTES = 512


class ScriptError(FetchdeliverError):
    """A request the store refuses; `code` is the ManageSieve response code ("NONEXISTENT", ...)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def check_name(name: str) -> None:
    """Refuse names that are empty, too long, or hold '/', '..' or control characters (RFC 5804 1.6)."""
    if not name:
        raise ScriptError("Script name is empty.")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ScriptError(f"Script name is longer than {MAX_NAME_BYTES} bytes.")
    if "/" in name or ".." in name:
        raise ScriptError("Script name may not contain '/' or '..'.")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in name):
        raise ScriptError("Script name may not contain control characters.")
    if name.startswith("."):
        raise ScriptError("Script name may not start with '.'.")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ScriptError("Script name is not valid UTF-8.") from None


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ScriptLimits:
    """The ManageSieve quota both script stores enforce: `max_scripts` and `max_script_size` (0: none)."""

    max_scripts = 0
    max_script_size = 0

    def names(self) -> list[str]:
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def check_space(self, name: str, size: int) -> None:
        """ScriptError with QUOTA/MAXSIZE or QUOTA/MAXSCRIPTS when `name` of `size` bytes would not fit."""
        check_name(name)
        if self.max_script_size and size > self.max_script_size:
            raise ScriptError(f"Script is too large (max {self.max_script_size} bytes).", "QUOTA/MAXSIZE")
        if self.max_scripts and not self.exists(name) and len(self.names()) >= self.max_scripts:
            raise ScriptError(f"Too many scripts (max {self.max_scripts}).", "QUOTA/MAXSCRIPTS")


class ScriptStore(ScriptLimits):
    """The scripts of one user under `base` (see the module docstring)."""

    def __init__(self, base: str, *, max_scripts: int = 0, max_script_size: int = 0,
                 owner: tuple[int, int] | None = None) -> None:
        self.base = base
        self.dir = os.path.join(base, SCRIPTS_DIR)
        self.active_link = os.path.join(base, ACTIVE_LINK)
        self.max_scripts = max_scripts          # 0: no limit
        self.max_script_size = max_script_size  # 0: no limit
        self.owner = owner                      # (uid, gid) for new files when we run as root

    # -- paths ---------------------------------------------------------------------------
    def path(self, name: str) -> str:
        check_name(name)
        return os.path.join(self.dir, name + SUFFIX)

    def _chown(self, path: str) -> None:
        if self.owner is not None and os.geteuid() == 0:
            try:
                os.lchown(path, *self.owner)
            except OSError:
                pass

    def _ensure_dirs(self) -> None:
        for d in (self.base, self.dir, os.path.join(self.dir, "tmp")):
            if not os.path.isdir(d):
                os.makedirs(d, mode=0o700, exist_ok=True)
                self._chown(d)

    # -- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        try:
            entries = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        out = []
        for n in entries:
            if n.endswith(SUFFIX) and not n.startswith(".") and os.path.isfile(os.path.join(self.dir, n)):
                out.append(n[:-len(SUFFIX)])
        return sorted(out)

    def active(self) -> str | None:
        """The active script's name, or None (no link, a dangling one, or one pointing elsewhere)."""
        try:
            target = os.readlink(self.active_link)
        except OSError:
            return None
        full = os.path.normpath(os.path.join(self.base, target))
        if os.path.dirname(full) != os.path.normpath(self.dir) or not full.endswith(SUFFIX):
            return None
        if not os.path.isfile(full):
            return None
        return os.path.basename(full)[:-len(SUFFIX)]

    def exists(self, name: str) -> bool:
        return os.path.isfile(self.path(name))

    def get(self, name: str) -> bytes:
        try:
            with open(self.path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ScriptError(f"Script {name!r} does not exist.", "NONEXISTENT") from None

    # -- changing ------------------------------------------------------------------------------
    def put(self, name: str, data: bytes) -> None:
        """Store `name` (new or replaced): temp file, fsync, rename, fsync the directory."""
        path = self.path(name)
        self.check_space(name, len(data))
        self._ensure_dirs()
        tmp = os.path.join(self.dir, "tmp", f"{name}.{os.getpid()}.{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self._chown(tmp)
            os.rename(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        fsync_dir(self.dir)

    def delete(self, name: str) -> None:
        path = self.path(name)
        if not os.path.isfile(path):
            raise ScriptError(f"Script {name!r} does not exist.", "NONEXISTENT")
        if self.active() == name:
            raise ScriptError("You may not delete an active script.", "ACTIVE")
        os.unlink(path)
        fsync_dir(self.dir)

    def rename(self, old: str, new: str) -> None:
        src, dst = self.path(old), self.path(new)
        if not os.path.isfile(src):
            raise ScriptError(f"Script {old!r} does not exist.", "NONEXISTENT")
        if os.path.lexists(dst):
            raise ScriptError(f"A script named {new!r} already exists.", "ALREADYEXISTS")
        if self.active() == old:
            # The link must never dangle: the new name exists before the link moves, the old goes last.
            os.link(src, dst)
            fsync_dir(self.dir)
            self._point_link(new)
            os.unlink(src)
        else:
            os.rename(src, dst)
        fsync_dir(self.dir)

    def set_active(self, name: str) -> None:
        """Make `name` the active script; "" deactivates (the link is removed)."""
        if name == "":
            if os.path.islink(self.active_link):
                os.unlink(self.active_link)
                fsync_dir(self.base)
            return
        if not os.path.isfile(self.path(name)):
            raise ScriptError(f"Script {name!r} does not exist.", "NONEXISTENT")
        self._keep_regular_file()
        self._point_link(name)

    def _keep_regular_file(self) -> None:
        """A plain file where the link goes (a hand-written ~/.dovecot.sieve) is moved in as a script
        (as Pigeonhole does), never overwritten."""
        link = self.active_link
        if os.path.lexists(link) and not os.path.islink(link):
            target = "dovecot.orig"
            n = 1
            while os.path.lexists(os.path.join(self.dir, target + SUFFIX)):
                n += 1
                target = f"dovecot.orig.{n}"
            self._ensure_dirs()
            os.rename(link, os.path.join(self.dir, target + SUFFIX))
            fsync_dir(self.dir)

    def _point_link(self, name: str) -> None:
        base = os.path.normpath(self.base)
        rel = os.path.relpath(self.path(name), base)
        tmp = os.path.join(base, f"{ACTIVE_LINK}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        os.symlink(rel, tmp)
        self._chown(tmp)
        try:
            os.rename(tmp, self.active_link)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        fsync_dir(base)


class PostgresScriptStore(ScriptLimits):
    """One user's scripts in PostgreSQL (`fd_sieve_script`, schema step 10), for `[storage] url`:
    the same methods as ScriptStore, each change one transaction. At most one script is active
    (a partial unique index); deliveries read it through `active_script()`."""

    def __init__(self, store, *, max_scripts: int = 0, max_script_size: int = 0) -> None:
        self.store = store                      # a storage.postgres.PostgresStore (its user and pool)
        self.max_scripts = max_scripts
        self.max_script_size = max_script_size
        # Where a script's name is shown (compile errors); `:personal` includes are not looked up here.
        self.dir = f"postgresql:{store.user}"
        self.base = self.dir

    def path(self, name: str) -> str:
        check_name(name)
        return f"{self.dir}/{name}{SUFFIX}"

    def _uid(self, conn) -> int:
        return self.store.user_id(conn)

    def _conn(self):
        from fetchdeliver.errors import TemporaryDeliveryError

        class _Wrap:
            def __init__(self, store) -> None:
                self.cm = store.connection()

            def __enter__(self):
                try:
                    return self.cm.__enter__()
                except TemporaryDeliveryError as e:   # the database is away: the session says NO
                    raise ScriptError(f"Temporary failure: {e}", "TRYLATER") from e

            def __exit__(self, et, ev, tb):
                try:
                    return self.cm.__exit__(et, ev, tb)
                except TemporaryDeliveryError as e:
                    raise ScriptError(f"Temporary failure: {e}", "TRYLATER") from e

        return _Wrap(self.store)

    # -- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        with self._conn() as conn:
            rows = conn.execute("SELECT name FROM fd_sieve_script WHERE user_id = %s ORDER BY name",
                                (self._uid(conn),)).fetchall()
        return [r[0] for r in rows]

    def active(self) -> str | None:
        with self._conn() as conn:
            row = conn.execute("SELECT name FROM fd_sieve_script WHERE user_id = %s AND active",
                               (self._uid(conn),)).fetchone()
        return row[0] if row else None

    def exists(self, name: str) -> bool:
        check_name(name)
        with self._conn() as conn:
            return conn.execute("SELECT 1 FROM fd_sieve_script WHERE user_id = %s AND name = %s",
                                (self._uid(conn), name)).fetchone() is not None

    def get(self, name: str) -> bytes:
        check_name(name)
        with self._conn() as conn:
            row = conn.execute("SELECT script FROM fd_sieve_script WHERE user_id = %s AND name = %s",
                               (self._uid(conn), name)).fetchone()
        if row is None:
            raise ScriptError(f"Script {name!r} does not exist.", "NONEXISTENT")
        return bytes(row[0])

    # -- changing ------------------------------------------------------------------------------
    def put(self, name: str, data: bytes) -> None:
        self.check_space(name, len(data))
        with self._conn() as conn, conn.transaction():
            conn.execute("INSERT INTO fd_sieve_script (user_id, name, script) VALUES (%s, %s, %s) "
                         "ON CONFLICT (user_id, name) DO UPDATE SET script = excluded.script",
                         (self._uid(conn), name, data))

    def delete(self, name: str) -> None:
        check_name(name)
        with self._conn() as conn, conn.transaction():
            row = conn.execute("SELECT active FROM fd_sieve_script WHERE user_id = %s AND name = %s FOR UPDATE",
                               (self._uid(conn), name)).fetchone()
            if row is None:
                raise ScriptError(f"Script {name!r} does not exist.", "NONEXISTENT")
            if row[0]:
                raise ScriptError("You may not delete an active script.", "ACTIVE")
            conn.execute("DELETE FROM fd_sieve_script WHERE user_id = %s AND name = %s", (self._uid(conn), name))

    def rename(self, old: str, new: str) -> None:
        check_name(old)
        check_name(new)
        import psycopg

        try:
            with self._conn() as conn, conn.transaction():
                n = conn.execute("UPDATE fd_sieve_script SET name = %s WHERE user_id = %s AND name = %s",
                                 (new, self._uid(conn), old)).rowcount
                if n == 0:
                    raise ScriptError(f"Script {old!r} does not exist.", "NONEXISTENT")
        except psycopg.errors.UniqueViolation:
            raise ScriptError(f"A script named {new!r} already exists.", "ALREADYEXISTS") from None

    def set_active(self, name: str) -> None:
        """Make `name` the active script; "" deactivates. One transaction: never two, never a gap."""
        if name:
            check_name(name)
        with self._conn() as conn, conn.transaction():
            uid = self._uid(conn)
            if name and conn.execute("SELECT 1 FROM fd_sieve_script WHERE user_id = %s AND name = %s",
                                     (uid, name)).fetchone() is None:
                raise ScriptError(f"Script {name!r} does not exist.", "NONEXISTENT")
            conn.execute("UPDATE fd_sieve_script SET active = false WHERE user_id = %s AND active", (uid,))
            if name:
                conn.execute("UPDATE fd_sieve_script SET active = true WHERE user_id = %s AND name = %s",
                             (uid, name))


def active_script(store, digest_only: bool = False):
    """(name, sha256, script bytes or None) of the user's active script in PostgreSQL, or None.
    With digest_only the script is not read (a delivery compares the digest with what it compiled)."""
    with store.connection() as conn:
        row = conn.execute(
            f"SELECT s.name, s.sha256{'' if digest_only else ', s.script'} FROM fd_sieve_script s "
            "JOIN fd_user u ON u.id = s.user_id WHERE u.name = %s AND s.active", (store.user,)).fetchone()
    if row is None:
        return None
    return row[0], bytes(row[1]), (None if digest_only else bytes(row[2]))
