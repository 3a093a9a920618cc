"""`fetchdeliver db migrate`, `fetchdeliver store copy SRC DST` and `fetchdeliver store sweep`.

`store copy` copies every mailbox of one store into another (maildir:, mbox:, postgresql:),
with flags, keywords and internal dates. A postgres destination keeps the source's UIDs and
UIDVALIDITY (what Dovecot's dsync does); it is resumable by construction: a UID already in the
destination is skipped. Other destinations cannot be told a UID through the Store interface, so
there the copy keeps flags, keywords and dates, and resumes from a journal of copied source UIDs
(`--journal`, default in the state directory), one fsynced line per message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys

from fetchdeliver.config import report_config_error
from fetchdeliver.errors import EX_CONFIG, EX_OK, EX_TEMPFAIL, ConfigError, FetchdeliverError

log = logging.getLogger(__name__)


def add_db_arguments(p) -> None:
    sub = p.add_subparsers(dest="db_command", metavar="COMMAND")
    m = sub.add_parser("migrate", help="create or upgrade the PostgreSQL schema (safe on every node at once)")
    m.add_argument("url", nargs="?", help="postgresql://... (default: [storage] url of the configuration)")
    m.add_argument("-c", "--config", help="configuration file")
    m.add_argument("--status", action="store_true", help="print the schema version and change nothing")


def add_store_arguments(p) -> None:
    sub = p.add_subparsers(dest="store_command", metavar="COMMAND")
    c = sub.add_parser("copy", help="copy a user's mail between maildir:, mbox: and postgresql: stores")
    c.add_argument("src", help="source location, e.g. maildir:~/Maildir")
    c.add_argument("dst", help="destination, e.g. 'postgresql://fd@db/mail?mailuser=alice'")
    c.add_argument("--journal", help="progress journal for a non-postgres destination (resuming)")
    w = sub.add_parser("sweep", help="delete bodies in the S3 blob store that no message refers to")
    w.add_argument("-c", "--config", help="configuration file ([storage] url and blobs)")
    w.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                   help="keep objects younger than this (default 3600: deliveries upload before they commit)")
    w.add_argument("-n", "--dry-run", action="store_true", help="count what would be deleted, delete nothing")


def _url_from_config(config: str | None) -> str:
    from fetchdeliver.config import load_settings

    settings = load_settings(config)
    url = (settings.data.get("storage") or {}).get("url")
    if not url:
        raise ConfigError("no [storage] url: give the database URL or set it", file=settings.file,
                          key="storage.url")
    return url


def db_main(args) -> int:
    if args.db_command != "migrate":
        print("usage: fetchdeliver db migrate [URL]", file=sys.stderr)
        return 64
    try:
        import psycopg

        from fetchdeliver.storage import pgschema
        from fetchdeliver.storage.postgres import split_location

        url = split_location(args.url or _url_from_config(args.config))[0]
        with psycopg.connect(url, autocommit=True, connect_timeout=15) as conn:
            if args.status:
                print(f"schema version {pgschema.current_version(conn)} (this fetchdeliver: {pgschema.LATEST})")
                return EX_OK
            applied = pgschema.migrate(conn)
            version = pgschema.current_version(conn)
    except ConfigError as e:
        return report_config_error("fetchdeliver", e)
    except ImportError:
        print("fetchdeliver: psycopg is not installed: pip install 'fetchdeliver[postgres]'", file=sys.stderr)
        return EX_CONFIG
    except Exception as e:
        if type(e).__module__.startswith("psycopg"):
            print(f"fetchdeliver: db migrate: {e}", file=sys.stderr)
            return EX_TEMPFAIL
        raise
    if applied:
        print(f"schema at version {version}: applied step(s) {', '.join(map(str, applied))}")
    else:
        print(f"schema at version {version}: nothing to do")
    return EX_OK


def _journal_path(src: str, dst: str) -> str:
    from fetchdeliver.config import default_state_dir

    h = hashlib.sha256(f"{src}\0{dst}".encode()).hexdigest()[:16]
    return os.path.join(default_state_dir(), f"store-copy-{h}.jsonl")


class Journal:
    """Source UIDs already copied, per (mailbox, uidvalidity); appended and fsynced per message."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.done: dict[tuple[str, int], set[int]] = {}
        try:
            with open(path) as f:
                for line in f:
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue   # a torn last line from an interrupted run
                    self.done.setdefault((r["mailbox"], r["uidvalidity"]), set()).add(r["uid"])
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.f = open(path, "a")

    def add(self, mailbox: str, uidvalidity: int, uid: int, new_uid: int) -> None:
        self.f.write(json.dumps({"mailbox": mailbox, "uidvalidity": uidvalidity, "uid": uid,
                                 "new_uid": new_uid}) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())
        self.done.setdefault((mailbox, uidvalidity), set()).add(uid)

    def close(self) -> None:
        self.f.close()


def copy_store(src, dst, journal: Journal | None = None, out=None) -> dict:
    """Copy every mailbox of `src` into `dst`; {mailbox: (copied, skipped)}."""
    from fetchdeliver.storage.base import StorageError
    from fetchdeliver.storage.postgres import PostgresStore

    report = {}
    for entry in src.list():
        if "\\Noselect" in entry.attributes or "\\NonExistent" in entry.attributes:
            continue
        name = entry.name
        sbox = src.open(name, readonly=True)
        try:
            msgs = sbox.sync()
            copied = skipped = 0
            if isinstance(dst, PostgresStore):
                dbox = dst.ensure_mailbox(name, sbox.uidvalidity)
                present = {m.uid for m in dbox.sync()}
                keep_uids = dbox.uidvalidity == sbox.uidvalidity
                if not keep_uids:
                    log.warning("%s: the destination mailbox already has other mail (UIDVALIDITY %d, "
                                "source %d): messages get new UIDs", name, dbox.uidvalidity, sbox.uidvalidity)
                for m in msgs:
                    if keep_uids and m.uid in present:
                        skipped += 1
                        continue
                    raw = sbox.read(m)
                    if keep_uids:
                        try:
                            dbox.append_uid(m.uid, raw, m.flags, m.internaldate)
                        except StorageError as e:
                            # expunged in the destination since an earlier run: a UID is never reused
                            log.warning("%s: UID %d not copied: %s", name, m.uid, e)
                            skipped += 1
                            continue
                    else:
                        dbox.append(raw, m.flags, m.internaldate)
                    copied += 1
            else:
                if not dst.exists(name):
                    dst.create(name)
                dbox = dst.open(name)
                done = journal.done.get((name, sbox.uidvalidity), set()) if journal else set()
                for m in msgs:
                    if m.uid in done:
                        skipped += 1
                        continue
                    new_uid = dbox.append(sbox.read(m), m.flags, m.internaldate)
                    if journal:
                        journal.add(name, sbox.uidvalidity, m.uid, new_uid)
                    copied += 1
            dbox.close()
            if src.subscriptions and name in src.subscriptions():
                dst.subscribe(name)
        finally:
            sbox.close()
        report[name] = (copied, skipped)
        if out is not None:
            print(f"{name}: {copied} copied, {skipped} already there", file=out)
    return report


def sweep_main(args) -> int:
    """`fetchdeliver store sweep`: see storage/sweep.py."""
    from fetchdeliver.config import Settings, default_config_path, load

    try:
        path = args.config or default_config_path()
        st = Settings(load(path), path).data.get("storage") or {}
        if not st.get("url") or not st.get("blobs"):
            raise ConfigError("store sweep needs [storage] url and blobs", file=path, key="storage.blobs")
        from fetchdeliver.storage.blobs import BlobStore
        from fetchdeliver.storage.postgres import split_location
        from fetchdeliver.storage.sweep import DEFAULT_GRACE, sweep

        grace = DEFAULT_GRACE if args.grace is None else args.grace
        if grace < 0:
            raise ConfigError(f"--grace must not be negative, got {grace}")
        report = sweep(split_location(st["url"])[0], BlobStore(st["blobs"]), grace=grace, dry_run=args.dry_run)
    except ConfigError as e:
        print(f"fetchdeliver: {e}", file=sys.stderr)
        return EX_CONFIG
    except ImportError as e:
        print(f"fetchdeliver: store sweep needs pip install 'fetchdeliver[postgres]' ({e})", file=sys.stderr)
        return EX_CONFIG
    except Exception as e:   # the database or S3 away: nothing half-done matters, run it again
        print(f"fetchdeliver: store sweep stopped, run it again: {type(e).__name__}: {e}", file=sys.stderr)
        return EX_TEMPFAIL
    print(("dry run: " if args.dry_run else "") + str(report))
    return EX_OK


def store_main(args) -> int:
    if args.store_command == "sweep":
        return sweep_main(args)
    if args.store_command != "copy":
        print("usage: fetchdeliver store copy SRC DST | fetchdeliver store sweep", file=sys.stderr)
        return 64
    from fetchdeliver.storage import open_store
    from fetchdeliver.storage.postgres import PostgresStore

    journal = None
    try:
        src = open_store(os.path.expanduser(args.src))
        dst = open_store(os.path.expanduser(args.dst))
        if not isinstance(dst, PostgresStore):
            journal = Journal(args.journal or _journal_path(args.src, args.dst))
        copy_store(src, dst, journal, out=sys.stdout)
    except ConfigError as e:
        return report_config_error("fetchdeliver", e)
    except FetchdeliverError as e:
        print(f"fetchdeliver: store copy interrupted, run it again to resume: {e}", file=sys.stderr)
        return EX_TEMPFAIL
    finally:
        if journal is not None:
            journal.close()
    return EX_OK
