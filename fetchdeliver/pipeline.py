"""Wiring shared by every source: settings -> store, compiled rules, engine Context.

Sources (MDA, fetch, LMTP, demo) call `build_context()` and then
`engine.process()` for each message; nothing else needs to know how stores and
scripts are made.
"""

from __future__ import annotations

import os

from fetchdeliver.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.config import Settings
    from fetchdeliver.storage.base import Store as MailStore
    from typing import Any

    from fetchdeliver.engine import Context


def _log():
    import logging

    return logging.getLogger(__name__)


def build_store(*, maildir: str | None = None, mbox: str | None = None,
                mbox_folders: str | None = None, fsync: bool = True,
                lock_timeout: float | None = None) -> "MailStore":
    """A Maildir++ store or an mbox store; exactly one of maildir/mbox."""
    if maildir:
        from fetchdeliver.storage.maildir import MaildirStore

        return MaildirStore(os.path.expanduser(maildir), fsync=fsync)
    if mbox:
        from fetchdeliver.storage.mbox import MboxStore

        kwargs: dict[str, Any] = {"fsync": fsync}
        if lock_timeout is not None:
            kwargs["lock_timeout"] = lock_timeout
        return MboxStore(os.path.expanduser(mbox), mbox_folders, **kwargs)
    raise ConfigError("no mail store: set [delivery] maildir or mbox, or pass --maildir / --mbox",
                      key="delivery.maildir")


def store_from_settings(settings: "Settings", *, maildir: str | None = None,
                        mbox: str | None = None) -> "MailStore":
    d = settings.delivery
    url = (settings.data.get("storage") or {}).get("url")
    if url and not maildir and not mbox:
        # [storage] url: the postgres store (docs/scaling.md); psycopg is imported only here.
        from fetchdeliver.storage.postgres import PostgresStore

        st = settings.data["storage"]
        blobs = None
        if st.get("blobs"):
            from fetchdeliver.storage.blobs import DEFAULT_MIN_SIZE, BlobStore

            blobs = BlobStore(st["blobs"], st.get("blob_min_size", DEFAULT_MIN_SIZE))
        return PostgresStore(url, user=st.get("user"), blobs=blobs)
    if not maildir and not mbox:
        maildir, mbox = d.get("maildir"), d.get("mbox")
    return build_store(maildir=maildir, mbox=mbox,
                       mbox_folders=d.get("mbox_folders") if mbox else None,
                       fsync=d.get("fsync", True), lock_timeout=d.get("lock_timeout"))


def sieve_options(settings: "Settings") -> dict:
    """The [sieve] table in the form the interpreter's SieveEnv takes (with [filter]'s defaults for
    spamtest/virustest when a content filter is configured)."""
    opts = dict(settings.sieve)
    table = settings.table("filter")
    if table:
        from fetchdeliver.filter import Filter

        Filter(table).apply_sieve_defaults(opts)
    return opts


ACTIVE_SCRIPT_LINK = ".dovecot.sieve"


def no_active_script(path: str) -> bool:
    """True when `path` is a ManageSieve/Pigeonhole active-script link (`.dovecot.sieve`) that is absent
    or dangling: the user has no active script, so mail goes to INBOX without an error."""
    return os.path.basename(path) == ACTIVE_SCRIPT_LINK and not os.path.exists(path)


def load_rules(path: str | None, settings: "Settings"):
    """Compile (or load from cache) the Sieve script. Returns (script or None, error text or None).

    A script that does not compile is not fatal for delivery: the caller keeps
    the message in INBOX (implicit keep) and reports the error.
    """
    if not path:
        return None, None
    from fetchdeliver import sieve
    from fetchdeliver.errors import FetchdeliverError

    if no_active_script(path):
        return None, None
    if os.path.basename(path) == ACTIVE_SCRIPT_LINK:
        # Compile the script the link leads to: its includes are found beside it (~/sieve), as in Pigeonhole.
        path = os.path.realpath(path)
    try:
        script = sieve.compile_file(path, cache_dir=os.path.join(settings.cache_dir, "sieve"),
                                    options=sieve_options(settings))
        return script, None
    except FetchdeliverError as e:
        return None, f"rules not used, message kept in INBOX: {e}"
    except OSError as e:
        return None, f"rules not used, message kept in INBOX: cannot read {path}: {e.strerror}"
    except Exception as e:  # a compiler bug must not stop delivery either (implicit keep)
        return None, f"rules not used, message kept in INBOX: {path}: internal error while compiling: " \
                     f"{type(e).__name__}: {e}"


def _stamp(path: str):
    """What changes when the rules at `path` change: the link itself (SETACTIVE re-points it) and the
    file it leads to (PUTSCRIPT renames a new file into place)."""
    try:
        lst = os.lstat(path)
        st = os.stat(path) if lst.st_mode & 0o170000 == 0o120000 else lst
        return (lst.st_ino, lst.st_mtime_ns, st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        return None


class RulesFile:
    """The rules at `path`, looked at again before each message: when the file or the symlink
    changed, the script is loaded again (from the compile cache, keyed by the text's hash, when this
    text was compiled before). This is how a script activated over ManageSieve takes effect at the
    next message in a long-running LMTP server or fetch. A changed script that does not compile
    leaves the one loaded before in place (and is logged)."""

    __slots__ = ("path", "settings", "stamp")

    def __init__(self, path: str, settings: "Settings") -> None:
        self.path = path
        self.settings = settings
        self.stamp = _stamp(path)

    def refresh(self, ctx: "Context") -> None:
        stamp = _stamp(self.path)
        if stamp == self.stamp:
            return
        self.stamp = stamp
        script, error = load_rules(self.path, self.settings)
        if error and ctx.script is not None:
            # A broken edit never replaces working rules (as the daemon's reload promises).
            _log().error("%s changed but cannot be used; the rules loaded before stay: %s", self.path, error)
            return
        ctx.script, ctx.script_error = script, error
        if error:
            _log().error("%s", error)
        else:
            _log().info("rules %s changed: loaded again", self.path)


def compile_script_bytes(raw: bytes, name: str, settings: "Settings"):
    """(script or None, error text or None) for Sieve source held elsewhere than a file (PostgreSQL),
    through the same compile cache as load_rules()."""
    from fetchdeliver.sieve import cache
    from fetchdeliver.errors import FetchdeliverError

    options = sieve_options(settings)
    cache_dir = os.path.join(settings.cache_dir, "sieve")
    key = cache.key(raw, options)
    try:
        script = cache.load(cache_dir, key, name)
        if script is None:
            from fetchdeliver.sieve.compiler import compile_bytes

            script = compile_bytes(raw, name, options=options)
            cache.store(cache_dir, key, script)
        return script, None
    except FetchdeliverError as e:
        return None, f"rules not used, message kept in INBOX: {e}"
    except Exception as e:  # a compiler bug must not stop delivery (implicit keep)
        return None, f"rules not used, message kept in INBOX: {name}: internal error while compiling: " \
                     f"{type(e).__name__}: {e}"


class DatabaseRules:
    """With `[storage] url`: the user's active ManageSieve script in PostgreSQL (fd_sieve_script),
    looked up before each message (one query comparing its SHA-256 with the one compiled), so a
    SETACTIVE on any node takes effect at the next delivery on every node. Without an active script
    the configured rules apply (`file`, a RulesFile, or none), as Pigeonhole's sieve_default does.
    A database that cannot be asked keeps the script in use (the delivery itself will tempfail)."""

    __slots__ = ("settings", "file", "digest", "fallback")

    def __init__(self, settings: "Settings", file: "RulesFile | None", fallback) -> None:
        self.settings = settings
        self.file = file
        self.digest: bytes | None = None     # the script in use came from the database (its SHA-256)
        self.fallback = fallback             # (script, error) of the configured rules

    def refresh(self, ctx: "Context") -> None:
        store = ctx.store
        if getattr(store, "kind", "") != "postgres":
            if self.file is not None:
                self.file.refresh(ctx)
            return
        from fetchdeliver.managesieve.storage import active_script

        try:
            found = active_script(store, digest_only=True)
        except Exception as e:
            _log().warning("cannot look up the active Sieve script of %s: %s", getattr(store, "user", "?"), e)
            return
        if found is None:
            if self.digest is not None:      # deactivated: back to the configured rules
                self.digest = None
                ctx.script, ctx.script_error = self.fallback
                if self.file is not None:
                    self.file.stamp = None   # read the file again
            if self.file is not None:
                self.file.refresh(ctx)
                self.fallback = (ctx.script, ctx.script_error)
            return
        name, digest, _ = found
        if digest == self.digest:
            return
        try:
            got = active_script(store)
        except Exception as e:
            _log().warning("cannot read the active Sieve script of %s: %s", getattr(store, "user", "?"), e)
            return
        if got is None:
            return
        name, digest, raw = got
        user = getattr(store, "user", "?")
        script, error = compile_script_bytes(raw or b"", f"postgresql:{user}/{name}.sieve", self.settings)
        if error and self.digest is not None and ctx.script is not None:
            _log().error("the active script of %s changed but cannot be used; the one loaded before stays: %s",
                         user, error)
            self.digest = digest
            return
        if self.digest is None and self.file is None:
            self.fallback = (ctx.script, ctx.script_error)
        self.digest = digest
        ctx.script, ctx.script_error = script, error
        if error:
            _log().error("%s", error)
        else:
            _log().info("the active Sieve script %r of %s (PostgreSQL) loaded", name, user)


def build_context(settings: "Settings", *, maildir: str | None = None, mbox: str | None = None,
                  rules: str | None = None, default_mailbox: str | None = None,
                  dry_run: bool = False, state=None, delivery_log: bool = True,
                  quota_user: str | None = None, database_rules: bool = True) -> "Context":
    """`quota_user`: whose [quota] limits apply (the passwd-file's per-user rules); None: the table's.
    `database_rules`: with [storage] url, a user's active ManageSieve script in PostgreSQL replaces
    the configured rules (False: only the configured ones, e.g. the MDA's --rules)."""
    from fetchdeliver.engine import Context

    store = store_from_settings(settings, maildir=maildir, mbox=mbox)
    if "quota" in settings.data:
        from fetchdeliver.storage.quota import attach_quota

        attach_quota(store, settings, quota_user or (settings.data.get("storage") or {}).get("user"))
    path = rules if rules is not None else settings.delivery.get("rules")
    live = RulesFile(path, settings) if path else None   # stat before reading: a change in between is seen
    script, error = load_rules(path, settings)
    ctx = Context(store, script, script_error=error, sieve_options=sieve_options(settings),
                  pipe_bin_dir=settings.sieve.get("pipe_bin_dir"), state=state,
                  default_mailbox=default_mailbox or settings.delivery.get("default_mailbox", "INBOX"),
                  dry_run=dry_run)
    ctx.rules = live
    if database_rules and getattr(store, "kind", "") == "postgres":
        ctx.rules = DatabaseRules(settings, live, (script, error))
    table = settings.table("filter")
    if table:
        from fetchdeliver.filter import Filter

        ctx.filter = flt = Filter(table)
        flt.apply_sieve_defaults(dict(settings.sieve))  # which keys are ours (see engine)
    if delivery_log and not dry_run:
        from fetchdeliver.deliverylog import recorder_for

        ctx.delivery_log = recorder_for(settings)
    return ctx
