"""`fetchdeliver fetch`: one pass over the POP3/IMAP/JMAP accounts, every message delivered exactly once.

The safety order, per batch of messages (many UIDs per FETCH):

1. fetch the bytes;
2. skip what the duplicate memory knows (Message-ID + size + SHA-256);
3. commit a "pending" row per message, holding the random token that goes into
   the message's Received: header;
4. run the rules and deliver (engine.process: durable on return);
5. commit: pending -> delivered + UID/UIDL recorded (tempfails are forgotten);
6. only now act on the source (flag, move, expunge, DELE).

A crash between 4 and 5 leaves pending rows: the next run searches the mail
store for their tokens and records what it finds instead of delivering again.
A crash between 5 and 6 leaves recorded messages on the server: the next run
re-applies the `after` policy to them without fetching.
"""

from __future__ import annotations

import os
import sys
import time

from fetchdeliver.errors import EX_CONFIG, EX_OK, EX_USAGE, ConfigError, FetchdeliverError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.accounts import Account
    from fetchdeliver.config import Settings
    from fetchdeliver.state import Pending, State

EX_FAILED = 1

# Stop an account after this many deliveries in a row failed temporarily (disk full, ...):
# fetching the rest of the mailbox would only fail the same way.
MAX_CONSECUTIVE_TEMPFAILS = 5

# With CONDSTORE, a changed folder is looked at incrementally (what arrived or changed since the last
# complete pass); once a day the full comparison runs anyway, forgetting UIDs expunged meanwhile.
FULL_COMPARE_EVERY = 24 * 3600


def _log():
    import logging

    return logging.getLogger("fetchdeliver.fetch")


def main(args) -> int:
    """Entry point of `fetchdeliver fetch` (args.config, args.accounts, args.dry_run, args.verbose)."""
    from fetchdeliver import accounts as accounts_mod
    from fetchdeliver.config import ConfigErrors, Settings, default_config_path, load

    if getattr(args, "verbose", False):
        import logging

        logging.getLogger("fetchdeliver").setLevel(logging.INFO)
    path = args.config or default_config_path()
    try:
        settings = Settings(load(path), path)
    except ConfigErrors as e:
        for err in e.errors:
            print(f"fetchdeliver: error: {err}", file=sys.stderr)
        return EX_CONFIG
    except ConfigError as e:
        print(f"fetchdeliver: error: {e}", file=sys.stderr)
        return EX_CONFIG
    every = accounts_mod.from_settings(settings)
    if not every:
        print(f"fetchdeliver: error: {path}: no [[account]] configured", file=sys.stderr)
        return EX_CONFIG
    chosen = every
    if args.accounts:
        by_name = {a.name: a for a in every}
        unknown = [n for n in args.accounts if n not in by_name]
        if unknown:
            print(f"fetchdeliver: error: no account named {', '.join(repr(n) for n in unknown)} in {path} "
                  f"(accounts: {', '.join(by_name)})", file=sys.stderr)
            return EX_USAGE
        chosen = [by_name[n] for n in dict.fromkeys(args.accounts)]

    from fetchdeliver.state import StateError, open_state

    try:
        state = open_state(settings)   # PostgreSQL with [storage] url, else sqlite
    except StateError as e:
        print(f"fetchdeliver: error: {e}", file=sys.stderr)
        return EX_FAILED
    ok = True
    try:
        contexts: dict = {}
        for account in chosen:
            run = AccountRun(account, settings, state, dry_run=bool(args.dry_run),
                             verbose=bool(getattr(args, "verbose", False)), contexts=contexts)
            ok = run.run() and ok
    finally:
        state.close()
    return EX_OK if ok else EX_FAILED


class Progress:
    """A one-line progress bar on a terminal: `work  [########------------]  40/120`."""

    WIDTH = 30

    def __init__(self, name: str, stream=None) -> None:
        self.name = name
        self.stream = stream if stream is not None else sys.stdout
        self.enabled = self.stream.isatty()
        self.total = 0
        self.done = 0
        self._last = 0.0
        self._shown = False

    def add_total(self, n: int) -> None:
        self.total += n
        self.draw(force=True)

    def step(self, n: int = 1) -> None:
        self.done += n
        self.draw()

    def draw(self, force: bool = False) -> None:
        if not self.enabled or self.total == 0:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        filled = int(self.WIDTH * min(self.done, self.total) / self.total)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(f"\r{self.name}  [{bar}]  {self.done}/{self.total}\x1b[K")
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


class AccountRun:
    """Fetch one account once."""

    def __init__(self, account: "Account", settings: "Settings", state: "State", *, dry_run: bool = False,
                 verbose: bool = False, contexts: dict | None = None, out=None, err=None,
                 folders: list[str] | None = None) -> None:
        self.account = account
        self.folders = folders  # IMAP: fetch only these (the daemon's push passes); None: all of them
        self.name = account.name
        self.settings = settings
        self.state = state
        self.dry_run = dry_run
        self.verbose = verbose
        self.contexts = contexts if contexts is not None else {}
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.fetched = 0
        self.delivered = 0
        self.duplicates = 0
        self.failed = 0
        self.ctx = None
        self.source = None
        self.progress = Progress(self.name, self.out)
        self._consecutive_tempfails = 0
        self._host = os.uname().nodename

    # -- the account's run --------------------------------------------------------------
    def run(self) -> bool:
        """Fetch, deliver, acknowledge; print the summary (and an error line). True on success."""
        from fetchdeliver.state import AccountBusy

        a = self.account
        error: str | None = None
        try:
            lock_wait = float(self.settings.delivery.get("lock_timeout", 60))
            self.state.lock_account(a.name, wait=lock_wait)
        except AccountBusy as e:
            self._error_line(f"skipped: {e}")
            return False
        lease = None
        if not self.dry_run:
            from fetchdeliver.storage.leases import fetch_lease   # several nodes on one database

            try:
                lease = fetch_lease(self.settings, a.name)
            except FetchdeliverError as e:
                self.state.unlock_account(a.name)
                self._error_line(f"skipped: {e}")
                return False
            if lease is not None and not lease:
                self.state.unlock_account(a.name)
                print(f"{self.name}: skipped: another node is fetching this account", file=self.out)
                return True
        try:
            self.ctx = self._context()
            if not self.dry_run:
                self.recover()
            if a.protocol == "imap":
                from fetchdeliver.sources.imap import ImapSource

                self.source = ImapSource(a)
                self.source.connect()
                for folder in self.folders or a.folders:
                    self.imap_folder(folder)
            elif a.protocol == "jmap":
                # JMAP (RFC 8620/8621): its own pass over Email/changes, through deliver_batch() below.
                from fetchdeliver.sources.jmap import JmapSource, fetch_jmap

                self.source = JmapSource(a)
                self.source.connect()
                fetch_jmap(self, self.source)
            else:
                from fetchdeliver.sources.pop3 import Pop3Source

                self.source = Pop3Source(a)
                self.source.connect()
                self.pop3()
            source, self.source = self.source, None
            source.close()
        except _TooManyFailures as e:
            error = str(e)
        except FetchdeliverError as e:
            error = str(e)
        except OSError as e:  # a local problem (state dir, store) outside the engine
            error = f"{e.strerror or e}: {e.filename}" if e.filename else str(e)
        except Exception as e:  # a bug must not keep the other accounts from running
            _log().debug("internal error", exc_info=True)
            error = f"internal error: {type(e).__name__}: {e} (run with --verbose for details)"
            if self.verbose:
                import traceback

                traceback.print_exc(file=self.err)
        finally:
            if self.source is not None:
                try:
                    self.source.close(quit=False)
                except Exception:
                    pass
                self.source = None
            self.state.unlock_account(a.name)
            if lease is not None:
                lease.__exit__(None, None, None)
            self.progress.clear()
        if error is not None:
            self._error_line(error)
        if error is None or self.fetched:
            if self.dry_run:
                print(f"{self.name}: dry run: nothing was delivered, recorded or changed on the server",
                      file=self.out)
            print(f"{self.name}: {self.fetched} fetched, {self.delivered} delivered, "
                  f"{self.duplicates} duplicates skipped, {self.failed} failed", file=self.out)
            self.out.flush()
        return error is None and self.failed == 0

    def _error_line(self, text: str) -> None:
        self._say(f"fetchdeliver: {self.name}: {text}", self.err)

    def _say(self, line: str, stream) -> None:
        """Print a line without mixing it into the progress bar."""
        self.progress.clear()
        print(line, file=stream)
        stream.flush()

    def _context(self):
        a = self.account
        key = (a.maildir, a.mbox, a.rules, a.default_mailbox)
        ctx = self.contexts.get(key)
        if ctx is None:
            from fetchdeliver.pipeline import build_context

            ctx = build_context(self.settings, maildir=a.maildir, mbox=a.mbox, rules=a.rules or "",
                                default_mailbox=a.default_mailbox, dry_run=self.dry_run,
                                state=None if self.dry_run else self.state)
            if ctx.script_error:
                self._say(f"fetchdeliver: {self.name}: {ctx.script_error}", self.err)
            if ctx.outbound is None:
                # redirect / vacation / notify are queued; `queue flush` or the daemon sends them
                from fetchdeliver.outbound.lazy import LazyOutbound

                ctx.outbound = LazyOutbound(self.settings)
            self.contexts[key] = ctx
        return ctx

    # -- crash recovery -------------------------------------------------------------------
    def store_roots(self) -> list[str]:
        """Files and directories the account's deliveries can land in (for the token search)."""
        store = self.ctx.store
        roots = [getattr(store, attr, None) for attr in ("root", "inbox_path", "folder_dir")]
        return [r for r in roots if isinstance(r, str)]

    def recover(self) -> None:
        """Settle deliveries a crashed run left pending: delivered ones are recorded, others forgotten."""
        pending = self.state.pending(self.name)
        if not pending:
            return
        since = min(p.at for p in pending) - 5
        wanted = {p.token: p.key[2] for p in pending}
        store_find = getattr(self.ctx.store, "find_tokens", None)   # the postgres store
        found = (store_find(wanted, since - 60) if store_find is not None
                 else find_tokens(self.store_roots(), wanted, since))
        done = [p for p in pending if p.token in found]
        lost = [p for p in pending if p.token not in found]
        self.state.complete(self.name, delivered=done, failed=lost)
        _log().info("%s: an interrupted run left %d deliveries pending: %d were delivered (now recorded), "
                    "%d will be fetched again", self.name, len(pending), len(done), len(lost))

    # -- IMAP -----------------------------------------------------------------------------
    def imap_folder(self, folder: str) -> None:
        a = self.account
        src = self.source
        state = self.state
        uidvalidity = src.select(folder, readonly=a.after == "keep" or self.dry_run)
        known = state.imap_uidvalidity(a.name, folder)
        point = src.sync_point()
        since = None
        if not self.dry_run:
            last = state.imap_sync_point(a.name, folder)
            if point is not None and known == uidvalidity and last is not None and last[0] == uidvalidity:
                if tuple(last[:3]) == point:
                    # CONDSTORE: nothing arrived, left or changed since the last complete pass; the SELECT
                    # was the only command this folder cost.
                    _log().debug("%s: %s: unchanged since the last pass (HIGHESTMODSEQ %d)", a.name, folder,
                                 point[1])
                    return
                if time.time() - last[3] < FULL_COMPARE_EVERY:
                    since = last
            state.set_imap_sync_point(a.name, folder, None)
        failed_before = self.failed
        self._imap_folder(folder, uidvalidity, known, since=since)
        if point is not None and not self.dry_run and self.failed == failed_before:
            # Complete, nothing left to retry: the next pass may skip the folder while its modseq stays.
            # (Our own flags/expunges raise the modseq, so the pass after an acknowledgement looks again.)
            state.set_imap_sync_point(a.name, folder, point)

    def _imap_folder(self, folder: str, uidvalidity: int, known: int | None, since: tuple | None = None) -> None:
        """Fetch what is new in the selected folder. `since`: the sync point of the last complete pass
        (CONDSTORE), when only what arrived or changed after it needs looking at."""
        a = self.account
        src = self.source
        state = self.state
        if known is None:
            if a.initial == "new-only":
                uids = src.search("ALL")
                if not self.dry_run:
                    state.imap_reset_folder(a.name, folder, uidvalidity, uids)
                _log().info("%s: %s: first run with initial = new-only: %d existing messages recorded, "
                            "not fetched", a.name, folder, len(uids))
                return
            if not self.dry_run:
                state.imap_reset_folder(a.name, folder, uidvalidity)
            seen: set[int] = set()
        elif known != uidvalidity:
            self._say(f"fetchdeliver: {a.name}: {folder}: UIDVALIDITY changed ({known} -> {uidvalidity}); "
                      "checking every message against the messages already delivered", self.err)
            if not self.dry_run:
                state.imap_reset_folder(a.name, folder, uidvalidity)
            seen = set()
        else:
            seen = state.imap_seen(a.name, folder)
        if since is not None:
            # Incremental: messages that arrived since (UID >= the old UIDNEXT) or whose flags changed since
            # (e.g. \Deleted removed elsewhere), one SEARCH whatever the folder's size. The last pass was
            # complete, acknowledgements included, so nothing recorded waits for its `after`.
            todo = [u for u in src.search(["UNDELETED", "OR", "UID", f"{int(since[2])}:*", "MODSEQ",
                                           str(int(since[1]) + 1)]) if u not in seen]
            if a.after == "move" and todo and not self.dry_run:
                src.ensure_folder(a.move_to)
            self._fetch_todo(folder, uidvalidity, todo)
            return
        every = src.search("ALL")
        candidates = src.search("UNDELETED") if every else []
        present = set(every)
        if not self.dry_run:
            state.imap_forget(a.name, folder, seen - present)
        todo = [u for u in candidates if u not in seen]
        if a.after in ("delete", "move") and not self.dry_run:
            if a.after == "move":
                src.ensure_folder(a.move_to)
            # Recorded but still here: a run that stopped between recording and acting on the source.
            redo = sorted(seen & present)
            if redo:
                src.acknowledge(redo)
        self._fetch_todo(folder, uidvalidity, todo)

    def _fetch_todo(self, folder: str, uidvalidity: int, todo: list[int]) -> None:
        """Fetch, deliver and acknowledge the UIDs in `todo`, in batches."""
        a = self.account
        src = self.source
        if not todo:
            src.finish_folder()
            return
        sizes = src.sizes(todo)
        gmail = src.gmail_info
        if gmail and not self.dry_run:
            todo = self._skip_gmail_delivered(folder, uidvalidity, todo, gmail)
        self._gmail_labels = {(folder, uidvalidity, str(u)): gmail[u][1] for u in todo if u in gmail}
        self.progress.add_total(len(todo))
        for batch in src.batches(todo, sizes, a.batch_size):
            bodies = src.fetch(batch)
            items = [((folder, uidvalidity, str(uid)), bodies[uid]) for uid in batch if uid in bodies]
            done = self.deliver_batch(items)
            if done and not self.dry_run:
                if gmail:
                    self._remember_gmail([gmail[int(loc[2])][0] for loc in done if int(loc[2]) in gmail])
                src.acknowledge([int(loc[2]) for loc in done])
        src.finish_folder()

    # -- Gmail: one message, many folders (labels) ------------------------------------------
    GMAIL_MEMORY = "gmail-msgid"
    GMAIL_SECONDS = 10 * 365 * 86400

    def _gmail_key(self, msgid: int) -> str:
        return f"{self.account.name}\0{msgid}"

    def _skip_gmail_delivered(self, folder: str, uidvalidity: int, todo: list[int], gmail: dict) -> list[int]:
        """Messages whose X-GM-MSGID was delivered from another folder (INBOX, All Mail, a label):
        recorded and acknowledged as duplicates without fetching their bodies."""
        keys = {u: self._gmail_key(gmail[u][0]) for u in todo if u in gmail}
        known = self.state.recalls(self.GMAIL_MEMORY, list(keys.values()))
        dups = [u for u in todo if keys.get(u) in known]
        if not dups:
            return todo
        self.duplicates += len(dups)
        self.state.complete(self.account.name, seen=[(folder, uidvalidity, str(u)) for u in dups])
        if self.verbose:
            self._say(f"{self.name}: {folder}: {len(dups)} message{'s' if len(dups) != 1 else ''} already delivered "
                      "from another Gmail folder (same X-GM-MSGID), skipped", self.out)
        self.source.acknowledge(dups)
        skip = set(dups)
        return [u for u in todo if u not in skip]

    def _remember_gmail(self, msgids: list[int]) -> None:
        for msgid in msgids:
            self.state.remember(self.GMAIL_MEMORY, self._gmail_key(msgid), self.GMAIL_SECONDS)

    # -- POP3 -----------------------------------------------------------------------------
    def pop3(self) -> None:
        from fetchdeliver.sources.pop3 import uid_for

        a = self.account
        src = self.source
        listing = src.listing()
        seen = self.state.pop3_seen(a.name)
        present = {uid for _, uid, _ in listing if uid is not None}
        if not self.dry_run and (present or not listing) and all(uid is not None for _, uid, _ in listing):
            self.state.pop3_forget(a.name, seen - present)
        if a.after == "delete" and not self.dry_run:
            redo = [n for n, uid, _ in listing if uid is not None and uid in seen]
            src.delete(redo)
        todo = [(n, uid) for n, uid, _ in listing if uid is None or uid not in seen]
        self.progress.add_total(len(todo))
        counts: dict[str, int] = {}
        for i in range(0, len(todo), a.batch_size):
            items = []
            numbers: dict[str, int] = {}
            for n, uid in todo[i:i + a.batch_size]:
                raw = src.retrieve(n)
                if uid is None:  # no UIDL and no TOP: the id comes from the headers we now have
                    uid = uid_for(raw, counts)
                    if uid in seen:
                        if a.after == "delete" and not self.dry_run:
                            src.delete([n])
                        self.progress.step()
                        continue
                numbers[uid] = n
                items.append(((None, None, uid), raw))
            done = self.deliver_batch(items)
            if a.after == "delete" and not self.dry_run:
                src.delete([numbers[loc[2]] for loc in done])

    # -- one batch through the safety order --------------------------------------------------
    def deliver_batch(self, items: list[tuple[tuple, bytes]]) -> list[tuple]:
        """Deliver (location, raw) pairs; return the locations the source may now act on.

        A location is (folder, uidvalidity, uid) for IMAP and (None, None, uidl) for POP3.
        """
        from fetchdeliver import engine
        from fetchdeliver.message import Message
        from fetchdeliver.state import POP3_FOLDER, Pending, message_key, new_token

        a = self.account
        state = self.state
        now = time.time()
        dup_locs: list[tuple] = []
        work: list[tuple[Pending, tuple, Message]] = []
        batch_keys: set = set()
        for loc, raw in items:
            self.fetched += 1
            parsed = Message(raw)
            ids = parsed.get_all("Message-ID", decode=False)
            key = message_key(raw, ids[0].strip() if ids else "")
            if key in batch_keys or (not self.dry_run and state.is_delivered(a.name, key)):
                self.duplicates += 1
                dup_locs.append(loc)
                self.progress.step()
                if self.verbose:
                    self._say(f"{self.name}: {_where(loc)}: duplicate of a message already delivered, "
                              "skipped", self.out)
                continue
            batch_keys.add(key)
            folder, uidvalidity, uid = loc
            p = Pending(new_token(), folder if folder is not None else POP3_FOLDER, uidvalidity, uid, key, now)
            work.append((p, loc, parsed))
        if not self.dry_run:
            state.add_pending(a.name, [w[0] for w in work])

        done: list[Pending] = []
        failed: list[Pending] = []
        acked: list[tuple] = list(dup_locs)
        current = None
        try:
            for p, loc, parsed in work:
                current = p
                outcome = self._process(p, parsed)
                current = None
                self.progress.step()
                if outcome.ok:
                    done.append(p)
                    acked.append(loc)
                    self.delivered += 1
                    self._consecutive_tempfails = 0
                    if outcome.status == engine.REJECTED:
                        self._say(f"fetchdeliver: {self.name}: {_where(loc)}: rejected by the rules "
                                  f"({outcome.reason}); not delivered, and no bounce can be sent for "
                                  "fetched mail", self.err)
                    elif self.verbose:
                        self._say(f"{self.name}: {_where(loc)} -> "
                                  f"{', '.join(outcome.where()) or 'discarded'}", self.out)
                else:
                    failed.append(p)
                    self.failed += 1
                    self._consecutive_tempfails += 1
                    why = "; ".join(outcome.errors) or "temporary failure"
                    self._say(f"fetchdeliver: {self.name}: {_where(loc)}: not delivered, left on the "
                              f"server for the next run: {why}", self.err)
                    if self._consecutive_tempfails >= MAX_CONSECUTIVE_TEMPFAILS:
                        raise _TooManyFailures(
                            f"stopped after {self._consecutive_tempfails} deliveries in a row failed: {why}")
        finally:
            if not self.dry_run:
                # Settle what was decided and forget what was never attempted. A message interrupted
                # inside process() (Ctrl-C) keeps its pending row: the next run's recover() looks for it.
                attempted = {id(p) for p in done} | {id(p) for p in failed}
                untouched = [w[0] for w in work if id(w[0]) not in attempted and w[0] is not current]
                state.complete(a.name, delivered=done, failed=failed + untouched,
                               seen=[loc_seen(loc) for loc in dup_locs])
        if self.dry_run:
            return []
        return acked

    def _process(self, p: "Pending", parsed):
        from fetchdeliver import engine
        from fetchdeliver.message import Message

        a = self.account
        msg = Message(stored_bytes(parsed.raw, a.keep_crlf), sender=_envelope_sender(parsed),
                      recipients=[a.recipient], origin=a.name)
        msg = msg.prepend_header("Received", self._received(p.token))
        labels = getattr(self, "_gmail_labels", {}).get((p.folder, p.uidvalidity, p.uid))
        if labels is not None:
            from fetchdeliver.sources.imap import labels_value

            # Above Received: the bytes after the Received line stay the original (crash recovery checks them).
            msg = msg.prepend_header("X-Gmail-Labels", labels_value(labels))
        try:
            return engine.process(msg, self.ctx)
        except Exception as e:  # never let one message's bug lose it or stop the others
            _log().exception("%s: internal error while delivering", a.name)
            return engine.Outcome(engine.TEMPFAIL, errors=[f"internal error: {type(e).__name__}: {e}"])

    def _received(self, token: str) -> str:
        from email.utils import formatdate

        a = self.account
        proto = a.protocol.upper() + ("S" if a.tls != "none" else "")
        name = "".join(c if c.isprintable() and c not in "()\\" else "_" for c in a.name)
        return (f"from {a.host} by {self._host} with {proto} (fetchdeliver; account {name}) "
                f"id {token} for <{a.recipient}>; {formatdate(localtime=True)}")


class _TooManyFailures(FetchdeliverError):
    pass


def loc_seen(loc: tuple) -> tuple:
    folder, uidvalidity, uid = loc
    return (folder if folder is not None else "", uidvalidity, uid)


def _where(loc: tuple) -> str:
    folder, _, uid = loc
    return f"{folder} UID {uid}" if folder is not None else f"message {uid}"


def stored_bytes(raw: bytes, keep_crlf: bool = False) -> bytes:
    """What a fetched message is stored as: the wire's CRLF line ends become LF (as LMTP, the MDA,
    Dovecot, fetchmail+procmail and getmail store it), nothing else changes; `keep_crlf` keeps
    the wire bytes."""
    return raw if keep_crlf else raw.replace(b"\r\n", b"\n")


def _envelope_sender(m) -> str:
    values = m.get_all("Return-Path", decode=False)
    if not values:
        return ""
    v = values[0].strip()
    if v.startswith("<") and ">" in v:
        v = v[1:v.index(">")]
    return v.strip()


# ---------------------------------------------------------------------------
# Finding the tokens of interrupted deliveries in the mail store.

def find_tokens(roots: list[str], wanted: dict[str, str], since: float) -> set[str]:
    """Which tokens (token -> SHA-256 of the original message) are in messages stored since `since`.

    Maildir: a file in new/ or cur/ is complete by construction (written in tmp/, then renamed).
    mbox: a writer killed mid-append leaves a partial message, so a token only counts there when the
    bytes after its Received: line are the whole original message.
    """
    found: set[str] = set()
    tokens = {t.encode(): d for t, d in wanted.items()}
    for root in roots:
        if os.path.isfile(root):
            found |= _scan_mbox(root, tokens)
        elif os.path.isdir(root):
            for dirpath, _dirnames, filenames in os.walk(root):
                leaf = os.path.basename(dirpath)
                maildir_part = leaf in ("new", "cur")
                if leaf == "tmp":
                    continue  # never delivered
                for fn in filenames:
                    path = os.path.join(dirpath, fn)
                    if maildir_part:
                        stamp = _leading_int(fn)
                        if stamp is not None and stamp < since - 60:
                            continue  # Maildir names start with the delivery time
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    if st.st_mtime < since:
                        continue
                    if maildir_part:
                        found |= _scan_maildir_file(path, tokens)
                    else:
                        found |= _scan_mbox(path, tokens)
        if len(found) == len(tokens):
            break
    return {t.decode() for t in found}


def _leading_int(name: str) -> int | None:
    i = 0
    while i < len(name) and name[i].isdigit():
        i += 1
    return int(name[:i]) if i else None


def _scan_maildir_file(path: str, tokens: dict[bytes, str]) -> set[bytes]:
    try:
        with open(path, "rb") as f:
            head = f.read(256 * 1024)  # the token is in the Received: header at the top
    except OSError:
        return set()
    return {t for t in tokens if head.find(t) >= 0}


def _scan_mbox(path: str, tokens: dict[bytes, str]) -> set[bytes]:
    import mmap

    try:
        with open(path, "rb") as f:
            try:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # empty file
                return set()
    except OSError:
        return set()
    found = set()
    try:
        for token, digest in tokens.items():
            pos = data.find(token)
            while pos >= 0:
                if _mbox_entry_complete(data, pos, digest):
                    found.add(token)
                    break
                pos = data.find(token, pos + 1)
    finally:
        data.close()
    return found


def _mbox_entry_complete(data, pos: int, digest: str) -> bool:
    """Is the mbox message holding a token at `pos` the whole original message (mboxrd-unquoted)?"""
    import hashlib
    import re

    start = data.find(b"\n", pos)
    if start < 0:
        return False
    start += 1
    end = data.find(b"\nFrom ", start)
    region = data[start:] if end < 0 else data[start:end + 1]
    # The entry ends with the blank separator line, plus a newline the writer adds when the
    # message had none of its own.
    body = re.sub(rb"(?m)^>(>*From )", rb"\1", region)
    for cut in (1, 2):
        candidate = body[:-cut] if body.endswith(b"\n" * cut) else None
        if candidate is None:
            continue
        # The digest is of the wire bytes; the store holds them with CRLF made LF (unless
        # keep_crlf). IMAP and POP3 send every line end as CRLF, so LF -> CRLF gives the wire back.
        if digest in (hashlib.sha256(candidate).hexdigest(),
                      hashlib.sha256(candidate.replace(b"\n", b"\r\n")).hexdigest()):
            return True
    return False
