"""The account runner: one pass over one [[account]], whatever its protocol, every message delivered once.

The source comes from the registry (fetchdeliver/sources/registry.py) by the
account's `protocol`; this module knows nothing of IMAP or POP3. The safety
order, per batch the source hands out:

1. the source fetches the bytes (and skips what its own memory knows: UIDs,
   UIDLs, Gmail's X-GM-MSGID);
2. skip what the duplicate memory knows (Message-ID + size + SHA-256);
3. commit a "pending" row per message, holding the random token that goes into
   the message's Received: header;
4. run the rules and deliver (engine.process: durable on return);
5. commit: pending -> delivered + the source's id recorded (tempfails are forgotten);
6. only now `source.ack()` the delivered ones (flag, move, expunge, DELE), and
   `source.release()` the ones that failed (they stay for the next run).

A crash between 4 and 5 leaves pending rows: the next run searches the mail
store for their tokens (sources/recovery.py) and records what it finds instead
of delivering again. A crash between 5 and 6 leaves recorded messages at the
source: the next run re-applies the `after` policy to them without fetching.
"""

from __future__ import annotations

import os
import sys
import time

from fetchdeliver.errors import FetchdeliverError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from fetchdeliver.config import Settings
    from fetchdeliver.sources.accounts import Account
    from fetchdeliver.sources.base import Fetched, Source, SourceKind
    from fetchdeliver.state import Pending, State

# Stop an account after this many deliveries in a row failed temporarily (disk full, ...):
# fetching the rest of the mailbox would only fail the same way.
MAX_CONSECUTIVE_TEMPFAILS = 5


def _log():
    import logging

    return logging.getLogger("fetchdeliver.fetch")


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


class TooManyFailures(FetchdeliverError):
    """MAX_CONSECUTIVE_TEMPFAILS deliveries in a row failed: the account's pass stops."""


class AccountRun:
    """Fetch one account once (the `Run` a source is driven by, see sources/base.py)."""

    def __init__(self, account: "Account", settings: "Settings", state: "State", *, dry_run: bool = False,
                 verbose: bool = False, contexts: dict | None = None, out=None, err=None,
                 folders: list[str] | None = None) -> None:
        self.account = account
        self.folders = folders  # only these folders (the daemon's push passes); None: all of them
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
        self.ctx: Any = None          # the pipeline's Context (fetchdeliver.pipeline.build_context)
        self.source: "Source | None" = None
        self.progress = Progress(self.name, self.out)
        self._consecutive_tempfails = 0
        self._host = os.uname().nodename
        self._current: dict[str, "Fetched"] = {}   # pending token -> the message, during a batch

    # -- what a source may use (sources/base.py: Run) -----------------------------------
    @property
    def account_name(self) -> str:
        return self.name

    def expect(self, count: int) -> None:
        self.progress.add_total(count)

    def step(self, count: int = 1) -> None:
        self.progress.step(count)

    def skipped(self, count: int, note: str) -> None:
        self.duplicates += count
        if self.verbose:
            self._say(f"{self.name}: {note}", self.out)

    def warn(self, text: str) -> None:
        self._say(f"fetchdeliver: {self.name}: {text}", self.err)

    # -- the account's run --------------------------------------------------------------
    def kind(self) -> "SourceKind":
        from fetchdeliver.sources.registry import source_kind

        kind = source_kind(self.account.protocol)
        if kind is None:  # the schema checks the name; a plugin uninstalled since the config was cached
            raise FetchdeliverError(f"no source is registered for protocol {self.account.protocol!r}")
        return kind

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
            self.source = self.kind().make(a)
            self.source.connect()
            for batch in self.source.batches(self):
                self.deliver_batch(batch)
            source, self.source = self.source, None
            source.close()
        except TooManyFailures as e:
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
        from fetchdeliver.sources.recovery import find_tokens

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

    # -- one batch through the safety order --------------------------------------------------
    def deliver_batch(self, batch: "Sequence[Fetched]") -> list["Fetched"]:
        """Deliver a batch, then ack the source what is durable and recorded and release what failed.

        Returns the messages acknowledged (none in a dry run).
        """
        from fetchdeliver import engine
        from fetchdeliver.message import Message
        from fetchdeliver.state import POP3_FOLDER, Pending, message_key, new_token

        a = self.account
        state = self.state
        source = self.source
        if source is None:
            raise FetchdeliverError("deliver_batch() without a connected source")
        now = time.time()
        dups: list[Fetched] = []
        work: list[tuple[Pending, Fetched, Message]] = []
        batch_keys: set = set()
        for f in batch:
            self.fetched += 1
            parsed = Message(f.raw)
            ids = parsed.get_all("Message-ID", decode=False)
            key = message_key(f.raw, ids[0].strip() if ids else "")
            if key in batch_keys or (not self.dry_run and state.is_delivered(a.name, key)):
                self.duplicates += 1
                dups.append(f)
                self.progress.step()
                if self.verbose:
                    self._say(f"{self.name}: {f.where()}: duplicate of a message already delivered, "
                              "skipped", self.out)
                continue
            batch_keys.add(key)
            p = Pending(new_token(), f.folder if f.folder is not None else POP3_FOLDER, f.uidvalidity, f.uid,
                        key, now)
            work.append((p, f, parsed))
        if not self.dry_run:
            state.add_pending(a.name, [w[0] for w in work])

        done: list[Pending] = []
        failed: list[Pending] = []
        acked: list[Fetched] = list(dups)
        released: list[Fetched] = []
        current = None
        self._current = {p.token: f for p, f, _ in work}
        try:
            for p, f, parsed in work:
                current = p
                outcome = self._process(p, parsed)
                current = None
                self.progress.step()
                if outcome.ok:
                    done.append(p)
                    acked.append(f)
                    self.delivered += 1
                    self._consecutive_tempfails = 0
                    if outcome.status == engine.REJECTED:
                        self._say(f"fetchdeliver: {self.name}: {f.where()}: rejected by the rules "
                                  f"({outcome.reason}); not delivered, and no bounce can be sent for "
                                  "fetched mail", self.err)
                    elif self.verbose:
                        self._say(f"{self.name}: {f.where()} -> "
                                  f"{', '.join(outcome.where()) or 'discarded'}", self.out)
                else:
                    failed.append(p)
                    released.append(f)
                    self.failed += 1
                    self._consecutive_tempfails += 1
                    why = "; ".join(outcome.errors) or "temporary failure"
                    self._say(f"fetchdeliver: {self.name}: {f.where()}: not delivered, left on the "
                              f"server for the next run: {why}", self.err)
                    if self._consecutive_tempfails >= MAX_CONSECUTIVE_TEMPFAILS:
                        source.release([x.handle for x in released])
                        raise TooManyFailures(
                            f"stopped after {self._consecutive_tempfails} deliveries in a row failed: {why}")
        finally:
            self._current = {}
            if not self.dry_run:
                # Settle what was decided and forget what was never attempted. A message interrupted
                # inside process() (Ctrl-C) keeps its pending row: the next run's recover() looks for it.
                attempted = {id(p) for p in done} | {id(p) for p in failed}
                untouched = [w[0] for w in work if id(w[0]) not in attempted and w[0] is not current]
                state.complete(a.name, delivered=done, failed=failed + untouched,
                               seen=[_seen(f) for f in dups])
        if self.dry_run:
            source.release([f.handle for f in batch])   # nothing changes at the source
            return []
        if acked:
            source.ack([f.handle for f in acked])
        if released:
            source.release([f.handle for f in released])
        return acked

    def _process(self, p: "Pending", parsed):
        """Deliver one message (its pending row committed); the engine's Outcome."""
        from fetchdeliver import engine
        from fetchdeliver.message import Message, envelope_sender

        a = self.account
        f = self._current.get(p.token)
        envelope = f.envelope if f is not None else None
        if envelope is not None:
            sender, recipients = envelope.sender, list(envelope.recipients) or [a.recipient]
        else:
            sender, recipients = envelope_sender(parsed), [a.recipient]
        msg = Message(stored_bytes(parsed.raw, a.keep_crlf), sender=sender, recipients=recipients, origin=a.name)
        msg = msg.prepend_header("Received", self._received(p.token))
        # Above Received: the bytes after the Received line stay the original (crash recovery checks them).
        for name, value in reversed(list(f.headers if f is not None else ())):
            msg = msg.prepend_header(name, value)
        try:
            return engine.process(msg, self.ctx)
        except Exception as e:  # never let one message's bug lose it or stop the others
            _log().exception("%s: internal error while delivering", a.name)
            return engine.Outcome(engine.TEMPFAIL, errors=[f"internal error: {type(e).__name__}: {e}"])

    def _received(self, token: str) -> str:
        from email.utils import formatdate

        a = self.account
        proto = self.kind().received_with + ("S" if a.tls != "none" else "")
        name = "".join(c if c.isprintable() and c not in "()\\" else "_" for c in a.name)
        return (f"from {a.host} by {self._host} with {proto} (fetchdeliver; account {name}) "
                f"id {token} for <{a.recipient}>; {formatdate(localtime=True)}")


def _seen(f: "Fetched") -> tuple:
    return (f.folder if f.folder is not None else "", f.uidvalidity, f.uid)


def stored_bytes(raw: bytes, keep_crlf: bool = False) -> bytes:
    """What a fetched message is stored as: the wire's CRLF line ends become LF (as LMTP, the MDA,
    Dovecot, fetchmail+procmail and getmail store it), nothing else changes; `keep_crlf` keeps
    the wire bytes."""
    return raw if keep_crlf else raw.replace(b"\r\n", b"\n")
