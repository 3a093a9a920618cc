"""IMAP source (imapclient): connect with verified TLS, list, fetch in batches, act on the source.

Every server interaction goes through `_command()`, which turns library and
socket exceptions into a SourceError naming the IMAP command and quoting the
server. The caller (fetchdeliver.fetch) owns the order of events: it only calls
`acknowledge()` for messages whose delivery is durable and recorded.
"""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
import time

import imapclient
from imapclient import exceptions as imap_errors

from fetchdeliver.sources.accounts import Account
from fetchdeliver.sources.base import Fetched, SourceError, describe_os_error, server_words
from fetchdeliver.sources.credentials import SecretError
from fetchdeliver.sources.tls import TLSPinError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from fetchdeliver.sources.base import Handle, Run

log = logging.getLogger("fetchdeliver.fetch")

# The largest amount of message data asked for in one FETCH (besides the count limit).
BATCH_BYTES = 16 * 1024 * 1024

# With CONDSTORE, a changed folder is looked at incrementally (what arrived or changed since the last
# complete pass); once a day the full comparison runs anyway, forgetting UIDs expunged meanwhile.
FULL_COMPARE_EVERY = 24 * 3600

# Gmail: one message, many folders (labels). Its X-GM-MSGID is remembered this long once delivered.
GMAIL_MEMORY = "gmail-msgid"
GMAIL_SECONDS = 10 * 365 * 86400


@contextlib.contextmanager
def _command(name: str, where: str = ""):
    suffix = f" ({where})" if where else ""
    try:
        yield
    except SourceError:
        raise
    except imap_errors.LoginError as e:
        from fetchdeliver.sources.throttle import classify

        words = server_words(e)
        # A login refused because the server is down or throttling ([UNAVAILABLE], too many
        # connections) heals by itself; a wrong password does not.
        raise SourceError(name, f"server said: {words}{suffix}", temporary=classify(words) is not None) from None
    except imap_errors.CapabilityError as e:
        raise SourceError(name, f"{server_words(e)}{suffix}") from None
    except imap_errors.IMAPClientAbortError as e:
        raise SourceError(name, f"connection lost: {server_words(e) or 'the server closed it'}{suffix}") from None
    except imap_errors.IMAPClientError as e:
        raise SourceError(name, f"server said: {_strip_imaplib(server_words(e))}{suffix}") from None
    except (OSError, EOFError) as e:
        if isinstance(e, EOFError):
            detail = "connection closed by the server"
        else:
            detail = describe_os_error(e)
        temporary = not isinstance(e, ssl.SSLCertVerificationError)
        raise SourceError(name, f"{detail}{suffix}", temporary=temporary) from None


# The same, for modules outside this one that talk to an ImapSource's client directly (the push watchers).
command_context = _command


def _strip_imaplib(text: str) -> str:
    # imaplib: "UID command error: BAD [b'Error in IMAP command UID FETCH: ...']" -> the server's part.
    for marker in ("[b'", '[b"'):
        i = text.find(marker)
        if i >= 0 and text.endswith(("']", '"]')):
            status = text[:i].rsplit(":", 1)[-1].strip()
            return f"{status} {text[i + 3:-2]}".strip()
    return text


class ImapSource:
    """One IMAP connection for one account: the Source (sources/base.py) of `protocol = "imap"`.

    `batches()` walks the account's folders: it compares each folder with the state database
    (UIDVALIDITY, the UIDs already delivered, the CONDSTORE sync point, Gmail's X-GM-MSGIDs)
    and hands out what is new; `ack()` applies the `after` policy. The lower-level methods
    (select, search, fetch...) are also used by the daemon's push watchers.
    """

    protocol = "imap"

    def __init__(self, account: Account) -> None:
        self.account = account
        self.client: imapclient.IMAPClient | None = None
        self.folder: str | None = None
        self.readonly = True
        self.capabilities: set[bytes] = set()
        self.needs_expunge = False
        self.highestmodseq: int | None = None   # of the selected folder (CONDSTORE), else None
        self.uidnext: int | None = None
        self.uidvalidity: int | None = None
        self.qresync = False                    # ENABLE QRESYNC succeeded
        self.resync: Resync | None = None       # what a SELECT with QRESYNC parameters learned
        # Gmail (X-GM-EXT-1): uid -> (X-GM-MSGID, labels) of the selected folder, filled by sizes().
        self.gmail_info: dict[int, tuple[int, list[str]]] = {}
        self._run: Run | None = None
        self._released = False     # a message of the current folder was released (not delivered)

    # -- session ----------------------------------------------------------------
    def connect(self) -> None:
        """Connect, secure and log in. Called again to reconnect (a fresh OAuth2 token each time)."""
        self.close()
        a = self.account
        where = a.address
        ctx = a.ssl_context() if a.tls != "none" else None
        cmd = "TLS connect" if a.tls == "implicit" else "connect"
        with _command(cmd, where):
            client = imapclient.IMAPClient(a.host, port=a.port, ssl=a.tls == "implicit",
                                           ssl_context=ctx, timeout=a.timeout)
        self.client = client
        try:
            if a.tls == "starttls":
                with _command("STARTTLS", where):
                    if not client.has_capability("STARTTLS"):
                        raise SourceError("STARTTLS", f"the server does not offer STARTTLS ({where}); "
                                          'use tls = "implicit" or, on a trusted network, tls = "none"',
                                          temporary=False)
                    client.starttls(ctx)
            if a.tls != "none":
                try:
                    a.check_peer(client.socket())
                except TLSPinError as e:
                    raise SourceError("TLS", f"{e} ({where})", temporary=False) from None
            self._login()
            with _command("CAPABILITY", where):
                self.capabilities = set(client.capabilities())
            if self.has("QRESYNC"):
                # SELECT can then name the last sync point and learn expunges (VANISHED) and changed or
                # new messages (FETCH) in its own answer (RFC 7162 section 3.2.5); QRESYNC implies CONDSTORE.
                with _command("ENABLE QRESYNC", where):
                    self.qresync = b"QRESYNC" in {bytes(x).upper() for x in client.enable("QRESYNC")}
            elif self.has("CONDSTORE"):
                # SELECT then reports HIGHESTMODSEQ: an unchanged folder needs no SEARCH (RFC 7162).
                with _command("ENABLE CONDSTORE", where):
                    client.enable("CONDSTORE")
        except BaseException:
            self.close()
            raise

    def _login(self) -> None:
        a = self.account
        client = self.client
        who = f"{a.user} at {a.address}"
        if not a.uses_oauth2:
            try:
                password = a.password()
            except SecretError as e:
                raise SourceError("LOGIN", str(e), temporary=False) from None
            with _command("LOGIN", who):
                client.login(a.user, password)
            return
        mech = a.oauth2_mechanism.upper()
        for attempt in (0, 1):
            try:
                token = a.access_token(refresh=attempt == 1)
            except SecretError as e:
                raise SourceError(f"AUTHENTICATE {mech}", str(e), temporary=False) from None
            try:
                with _command(f"AUTHENTICATE {mech}", who):
                    if mech == "OAUTHBEARER":
                        client.oauthbearer_login(a.user, token)
                    else:
                        client.oauth2_login(a.user, token, mech="XOAUTH2")
                return
            except SourceError:
                # A cached token the server no longer takes: refresh once (only the built-in flow caches).
                if attempt == 1 or not a.uses_oauth2_flow:
                    raise

    def close(self, quit: bool = True) -> None:
        """LOGOUT and close (`quit=False`: just drop the connection)."""
        client, self.client = self.client, None
        self.folder = None
        if client is None:
            return
        try:
            if not quit:
                raise ConnectionAbortedError
            client.logout()
        except Exception:  # closing a broken connection: nothing left to report
            with contextlib.suppress(Exception):
                client.shutdown()

    def has(self, capability: str) -> bool:
        return capability.encode() in self.capabilities

    # -- folders ------------------------------------------------------------------
    def select(self, folder: str, *, readonly: bool, since: tuple[int, int] | None = None) -> int:
        """Open `folder`; returns its UIDVALIDITY.

        `since`: (UIDVALIDITY, HIGHESTMODSEQ) of the last complete pass. Where QRESYNC is enabled the
        SELECT carries it and `self.resync` holds what changed since (None when the server could not
        tell: another UIDVALIDITY, no QRESYNC).
        """
        self.resync = None
        with _command(f"{'EXAMINE' if readonly else 'SELECT'} {folder}", self.account.address):
            info = None
            if since is not None and self.qresync:
                try:
                    info = self._select_qresync(folder, readonly, since)
                except imap_errors.IMAPClientAbortError:
                    raise
                except imap_errors.IMAPClientError as e:
                    # A server that announces QRESYNC but refuses its SELECT parameters: the plain SELECT
                    # (whose error, if any, is the one to report) and the UID comparison instead.
                    log.warning("%s: %s: SELECT with QRESYNC refused (%s); selecting without it",
                                self.account.name, folder, _strip_imaplib(server_words(e)))
            if info is None:
                info = self.client.select_folder(folder, readonly=readonly)
        self.folder = folder
        self.readonly = readonly
        self.needs_expunge = False
        uv = info.get(b"UIDVALIDITY")
        if uv is None:
            raise SourceError(f"SELECT {folder}", "the server did not report UIDVALIDITY")
        modseq = info.get(b"HIGHESTMODSEQ")
        uidnext = info.get(b"UIDNEXT")
        self.highestmodseq = int(modseq) if isinstance(modseq, int) and b"NOMODSEQ" not in info else None
        self.uidnext = int(uidnext) if isinstance(uidnext, int) else None
        self.uidvalidity = int(uv)
        return int(uv)

    def _select_qresync(self, folder: str, readonly: bool, since: tuple[int, int]) -> dict:
        """SELECT/EXAMINE folder (QRESYNC (uidvalidity modseq)): one round trip that also reports what
        vanished and which messages are new or changed since `modseq`.

        known-uids is left out on purpose: with it the server reports changes to those UIDs only
        (RFC 7162 3.2.5.1), and messages that arrived since would need another command.
        """
        uidvalidity, modseq = int(since[0]), int(since[1])
        # imapclient has no QRESYNC parameters for SELECT; imaplib's public select() sends its mailbox
        # argument as given, so the parameters ride along, and its untagged_responses keep the answer
        # (imapclient keeps its imaplib connection in `_imap`, as for NOTIFY below).
        imap = self.client._imap
        arg = f"{quote_mailbox(folder)} (QRESYNC ({uidvalidity} {modseq}))"
        typ, data = imap.select(arg, readonly)
        if typ != "OK":
            raise imap_errors.IMAPClientError(f"{typ} {server_words(data)}")
        untagged = imap.untagged_responses
        info: dict = {}
        for key in ("UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ", "EXISTS"):
            values = untagged.get(key)
            if values:
                try:
                    info[key.encode()] = int(values[-1])
                except (TypeError, ValueError):
                    pass
        if "NOMODSEQ" in untagged:
            info[b"NOMODSEQ"] = True
        if info.get(b"UIDVALIDITY") == uidvalidity and b"NOMODSEQ" not in info:
            try:
                self.resync = resync_from(modseq, untagged.get("FETCH", []), untagged.get("VANISHED", []))
            except ValueError as e:
                # An answer we cannot read in full must not hide a message: compare the usual way.
                log.warning("%s: %s: unreadable QRESYNC answer (%s); comparing UIDs instead",
                            self.account.name, folder, e)
        return info

    def sync_point(self) -> tuple[int, int, int] | None:
        """(UIDVALIDITY, HIGHESTMODSEQ, UIDNEXT) of the selected folder, when the server tracks modseqs.

        Equal to the point recorded after a complete pass, nothing in the folder changed since:
        no message arrived, none was expunged, no flag changed (RFC 7162 section 3.1.2).
        """
        if self.highestmodseq is None or self.uidnext is None or self.uidvalidity is None:
            return None
        return (self.uidvalidity, self.highestmodseq, self.uidnext)

    def search(self, criteria: str | list[str] = "ALL") -> list[int]:
        text = criteria if isinstance(criteria, str) else " ".join(criteria)
        with _command(f"UID SEARCH {text}", self.account.address):
            return sorted(int(u) for u in self.client.search(criteria))

    @property
    def gmail(self) -> bool:
        """Gmail's IMAP extensions (X-GM-MSGID, X-GM-LABELS) are offered."""
        return self.has("X-GM-EXT-1")

    def sizes(self, uids: list[int]) -> dict[int, int]:
        """RFC822.SIZE of each UID; on Gmail also X-GM-MSGID and X-GM-LABELS (into `gmail_info`),
        in the same command."""
        out: dict[int, int] = {}
        items = ["RFC822.SIZE"] + (["X-GM-MSGID", "X-GM-LABELS"] if self.gmail else [])
        self.gmail_info = {}
        for i in range(0, len(uids), 1000):
            chunk = uids[i:i + 1000]
            with _command(f"UID FETCH ({' '.join(items)})", self.account.address):
                data = self.client.fetch(chunk, items)
            for uid, d in data.items():
                out[int(uid)] = int(d.get(b"RFC822.SIZE", 0))
                msgid = d.get(b"X-GM-MSGID")
                if msgid is not None:
                    labels = [mailbox_name(x) for x in (d.get(b"X-GM-LABELS") or ())]
                    self.gmail_info[int(uid)] = (int(msgid), labels)
        return out

    def batches_of(self, uids: list[int], sizes: dict[int, int], count: int) -> list[list[int]]:
        """Split UIDs into FETCH batches of at most `count` messages and about BATCH_BYTES bytes."""
        out: list[list[int]] = []
        cur: list[int] = []
        total = 0
        for uid in uids:
            size = sizes.get(uid, 0)
            if cur and (len(cur) >= count or total + size > BATCH_BYTES):
                out.append(cur)
                cur, total = [], 0
            cur.append(uid)
            total += size
        if cur:
            out.append(cur)
        return out

    def fetch(self, uids: list[int]) -> dict[int, bytes]:
        """BODY.PEEK[] of many messages in one command (PEEK: fetching does not set \\Seen)."""
        with _command("UID FETCH BODY.PEEK[]", self.account.address):
            data = self.client.fetch(uids, ["BODY.PEEK[]"])
        out: dict[int, bytes] = {}
        for uid, d in data.items():
            raw = d.get(b"BODY[]")
            if raw is None:
                continue  # vanished meanwhile (expunged by another client): nothing to deliver
            out[int(uid)] = bytes(raw)
        return out

    # -- the Source protocol ---------------------------------------------------------
    def batches(self, run: "Run") -> "Iterator[Sequence[Fetched]]":
        """Every folder of the account (or `run.folders`), what is new in each, in FETCH batches."""
        self._run = run
        for folder in run.folders or self.account.folders:
            yield from self._folder(run, folder)

    def ack(self, handles: "Sequence[Handle]") -> None:
        """Delivered and recorded: remember their X-GM-MSGID (Gmail), then apply the `after` policy."""
        uids = [h for h in handles if isinstance(h, int)]   # the UIDs batches() handed out
        run = self._run
        if self.gmail_info and run is not None and not run.dry_run:
            for uid in uids:
                info = self.gmail_info.get(uid)
                if info is not None:
                    run.state.remember(GMAIL_MEMORY, _gmail_key(run.account_name, info[0]), GMAIL_SECONDS)
        self.acknowledge(uids)

    def release(self, handles: "Sequence[Handle]") -> None:
        """Not delivered: nothing to undo (BODY.PEEK[] left \\Seen alone); the folder is not complete."""
        if handles:
            self._released = True

    def _folder(self, run: "Run", folder: str) -> "Iterator[Sequence[Fetched]]":
        a = self.account
        state = run.state
        known = state.imap_uidvalidity(a.name, folder)
        last = None if run.dry_run else state.imap_sync_point(a.name, folder)
        # QRESYNC: the SELECT names the last complete pass and its answer says what changed since.
        resync_from_point = (int(last[0]), int(last[1])) if last is not None and last[0] == known else None
        uidvalidity = self.select(folder, readonly=a.after == "keep" or run.dry_run, since=resync_from_point)
        point = self.sync_point()
        since = None
        resync = None
        if not run.dry_run:
            if point is not None and known == uidvalidity and last is not None and last[0] == uidvalidity:
                if tuple(last[:3]) == point:
                    # CONDSTORE: nothing arrived, left or changed since the last complete pass; the SELECT
                    # was the only command this folder cost.
                    log.debug("%s: %s: unchanged since the last pass (HIGHESTMODSEQ %d)", a.name, folder,
                              point[1])
                    return
                resync = self.resync
                if resync is None and time.time() - last[3] < FULL_COMPARE_EVERY:
                    since = last
            state.set_imap_sync_point(a.name, folder, None)
        self._released = False
        if resync is not None:
            yield from self._folder_resync(run, folder, uidvalidity, resync)
        else:
            yield from self._folder_todo(run, folder, uidvalidity, known, since=since)
        if point is not None and not run.dry_run and not self._released:
            # Complete, nothing left to retry: the next pass may skip the folder while its modseq stays.
            # (Our own flags/expunges raise the modseq, so the pass after an acknowledgement looks again.)
            state.set_imap_sync_point(a.name, folder, point)

    def _folder_resync(self, run: "Run", folder: str, uidvalidity: int,
                       resync: "Resync") -> "Iterator[Sequence[Fetched]]":
        """QRESYNC: the SELECT's answer listed what vanished and which messages are new or had flags
        changed since the last complete pass (a \\Deleted removed elsewhere included), so no SEARCH is
        needed: forget what vanished, fetch the undeleted ones not yet delivered. That pass was complete,
        acknowledgements included, so nothing recorded waits for its `after`."""
        a = self.account
        seen = run.state.imap_seen(a.name, folder)
        gone = resync.gone(seen)
        if gone:
            run.state.imap_forget(a.name, folder, gone)
        todo = [u for u in resync.candidates() if u not in seen]
        log.debug("%s: %s: QRESYNC since MODSEQ %d: %d changed, %d vanished, %d to fetch", a.name, folder,
                  resync.modseq, len(resync.changed), len(gone), len(todo))
        if a.after == "move" and todo:
            self.ensure_folder(a.move_to)
        yield from self._fetch_todo(run, folder, uidvalidity, todo)

    def _folder_todo(self, run: "Run", folder: str, uidvalidity: int, known: int | None,
                     since: tuple | None = None) -> "Iterator[Sequence[Fetched]]":
        """What is new in the selected folder. `since`: the sync point of the last complete pass
        (CONDSTORE), when only what arrived or changed after it needs looking at."""
        a = self.account
        state = run.state
        if known is None:
            if a.initial == "new-only":
                uids = self.search("ALL")
                if not run.dry_run:
                    state.imap_reset_folder(a.name, folder, uidvalidity, uids)
                log.info("%s: %s: first run with initial = new-only: %d existing messages recorded, "
                         "not fetched", a.name, folder, len(uids))
                return
            if not run.dry_run:
                state.imap_reset_folder(a.name, folder, uidvalidity)
            seen: set[int] = set()
        elif known != uidvalidity:
            run.warn(f"{folder}: UIDVALIDITY changed ({known} -> {uidvalidity}); "
                     "checking every message against the messages already delivered")
            if not run.dry_run:
                state.imap_reset_folder(a.name, folder, uidvalidity)
            seen = set()
        else:
            seen = state.imap_seen(a.name, folder)
        if since is not None:
            # Incremental: messages that arrived since (UID >= the old UIDNEXT) or whose flags changed since
            # (e.g. \Deleted removed elsewhere), one SEARCH whatever the folder's size. The last pass was
            # complete, acknowledgements included, so nothing recorded waits for its `after`.
            todo = [u for u in self.search(["UNDELETED", "OR", "UID", f"{int(since[2])}:*", "MODSEQ",
                                            str(int(since[1]) + 1)]) if u not in seen]
            if a.after == "move" and todo and not run.dry_run:
                self.ensure_folder(a.move_to)
            yield from self._fetch_todo(run, folder, uidvalidity, todo)
            return
        every = self.search("ALL")
        candidates = self.search("UNDELETED") if every else []
        present = set(every)
        if not run.dry_run:
            state.imap_forget(a.name, folder, seen - present)
        todo = [u for u in candidates if u not in seen]
        if a.after in ("delete", "move") and not run.dry_run:
            if a.after == "move":
                self.ensure_folder(a.move_to)
            # Recorded but still here: a run that stopped between recording and acting on the source.
            redo = sorted(seen & present)
            if redo:
                self.acknowledge(redo)
        yield from self._fetch_todo(run, folder, uidvalidity, todo)

    def _fetch_todo(self, run: "Run", folder: str, uidvalidity: int,
                    todo: list[int]) -> "Iterator[Sequence[Fetched]]":
        """The UIDs in `todo` as batches; the folder's EXPUNGE (without UIDPLUS) after the last one."""
        a = self.account
        if not todo:
            self.finish_folder()
            return
        sizes = self.sizes(todo)
        gmail = self.gmail_info
        if gmail and not run.dry_run:
            todo = self._skip_gmail_delivered(run, folder, uidvalidity, todo)
        run.expect(len(todo))
        for batch in self.batches_of(todo, sizes, a.batch_size):
            bodies = self.fetch(batch)
            yield [Fetched(uid, bodies[uid], str(uid), folder=folder, uidvalidity=uidvalidity,
                           headers=[("X-Gmail-Labels", labels_value(gmail[uid][1]))] if uid in gmail else ())
                   for uid in batch if uid in bodies]
        self.finish_folder()

    def _skip_gmail_delivered(self, run: "Run", folder: str, uidvalidity: int, todo: list[int]) -> list[int]:
        """Messages whose X-GM-MSGID was delivered from another folder (INBOX, All Mail, a label):
        recorded and acknowledged as duplicates without fetching their bodies."""
        gmail = self.gmail_info
        keys = {u: _gmail_key(run.account_name, gmail[u][0]) for u in todo if u in gmail}
        known = run.state.recalls(GMAIL_MEMORY, list(keys.values()))
        dups = [u for u in todo if keys.get(u) in known]
        if not dups:
            return todo
        run.state.complete(self.account.name, seen=[(folder, uidvalidity, str(u)) for u in dups])
        run.skipped(len(dups), f"{folder}: {len(dups)} message{'s' if len(dups) != 1 else ''} already "
                    "delivered from another Gmail folder (same X-GM-MSGID), skipped")
        self.acknowledge(dups)
        skip = set(dups)
        return [u for u in todo if u not in skip]

    # -- acting on the server -------------------------------------------------------
    def acknowledge(self, uids: list[int]) -> None:
        """Apply the account's `after` policy to messages that are delivered and recorded."""
        if not uids:
            return
        a = self.account
        client = self.client
        where = a.address
        if a.after == "keep":
            return
        if a.after == "mark-seen":
            with _command("UID STORE +FLAGS (\\Seen)", where):
                client.add_flags(uids, [imapclient.SEEN], silent=True)
            return
        if a.after == "move":
            if self.has("MOVE"):
                with _command(f"UID MOVE {a.move_to}", where):
                    client.move(uids, a.move_to)
                return
            with _command(f"UID COPY {a.move_to}", where):
                client.copy(uids, a.move_to)
        with _command("UID STORE +FLAGS (\\Deleted)", where):
            client.add_flags(uids, [imapclient.DELETED], silent=True)
        if self.has("UIDPLUS"):
            with _command("UID EXPUNGE", where):
                client.uid_expunge(uids)
        else:
            self.needs_expunge = True  # plain EXPUNGE once, at the end of the folder

    def finish_folder(self) -> None:
        if self.needs_expunge and self.client is not None:
            with _command("EXPUNGE", self.account.address):
                self.client.expunge()
            self.needs_expunge = False

    def ensure_folder(self, folder: str) -> None:
        """Create `folder` (the move: target) if the server does not have it."""
        with _command(f"CREATE {folder}", self.account.address):
            if not self.client.folder_exists(folder):
                self.client.create_folder(folder)

    # -- push ---------------------------------------------------------------------
    def idle_wait(self, timeout: float) -> bool:
        """IDLE on the selected folder until the server announces new mail or `timeout` passes.

        Returns True when new mail (EXISTS/RECENT) was announced. Servers drop IDLE after
        ~30 minutes: callers should use a timeout below that and loop; on SourceError,
        `connect()` again (which gets a fresh OAuth2 token).
        """
        if self.folder is None:
            raise SourceError("IDLE", "no folder selected")
        if not self.has("IDLE"):
            raise SourceError("IDLE", "the server does not support IDLE", temporary=False)
        with _command("IDLE", self.account.address):
            self.client.idle()
            try:
                responses = self.client.idle_check(timeout=timeout)
            finally:
                self.client.idle_done()
        return any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses)


    def notify_set(self, folders: list[str]) -> None:
        """NOTIFY SET (RFC 5465): report new and expunged messages in `folders` as untagged STATUS.

        No folder is selected; the server sends `* STATUS "folder" (...)` while the
        connection is in IDLE (or between commands).
        """
        if not self.has("NOTIFY"):
            raise SourceError("NOTIFY", "the server does not offer NOTIFY", temporary=False)
        boxes = " ".join(quote_mailbox(f) for f in folders)
        args = f"SET (mailboxes ({boxes}) (MessageNew MessageExpunge))"
        with _command("NOTIFY SET", self.account.address):
            # imapclient has no NOTIFY method; imaplib's public xatom() sends an extension command
            # and checks its tagged reply (imapclient keeps its imaplib connection in `_imap`).
            typ, data = self.client._imap.xatom("NOTIFY", args)
            if typ != "OK":
                raise SourceError("NOTIFY SET", f"server said: {typ} {server_words(data)}")


def _gmail_key(account: str, msgid: int) -> str:
    return f"{account}\0{msgid}"


# A FETCH line whose items are each a number or a flat parenthesised list: `3 (UID 7 FLAGS (\Seen) MODSEQ (12))`.
_FETCH_ITEM = rb"[A-Za-z0-9.\-]+ (?:\d+|\([^()\[\]{}\"]*\))"
_FETCH_LINE = re.compile(rb"\d+ \((" + _FETCH_ITEM + rb"(?: " + _FETCH_ITEM + rb")*)\)")
_FETCH_ITEMS = re.compile(rb"([A-Za-z0-9.\-]+) (\d+|\([^()\[\]{}\"]*\))")


def resync_from(modseq: int, fetches: list, vanished_lines: list) -> "Resync":
    """A Resync from imaplib's untagged FETCH and VANISHED data; ValueError when any is not as expected
    (a literal, a FETCH without UID or FLAGS)."""
    from imapclient.response_parser import parse_fetch_response

    changed: dict[int, tuple] = {}
    for line in fetches:
        if not isinstance(line, bytes):
            raise ValueError("a FETCH response with a literal")
        # The usual shape, `SEQ (UID n FLAGS (...) MODSEQ (m))` in any order, read directly: after a mass flag
        # change the answer holds one line per message (imapclient's parser needs 20 us each).
        m = _FETCH_LINE.fullmatch(line)
        if m is not None:
            items = {name.upper(): value for name, value in _FETCH_ITEMS.findall(m.group(1))}
            uid, flags = items.get(b"UID"), items.get(b"FLAGS")
            if uid is not None and uid.isdigit() and flags is not None and flags.startswith(b"("):
                changed[int(uid)] = tuple(flags[1:-1].split())
                continue
        for d in parse_fetch_response([line], uid_is_key=False).values():
            if b"UID" not in d or b"FLAGS" not in d:
                raise ValueError("a FETCH response without UID or FLAGS")
            changed[int(d[b"UID"])] = tuple(d[b"FLAGS"])
    vanished: list[tuple[int, int]] = []
    for text in vanished_lines:
        if not isinstance(text, bytes):
            raise ValueError("a VANISHED response with a literal")
        vanished += uid_ranges(text.decode("ascii", "replace").replace("(EARLIER)", ""))
    return Resync(modseq, changed, vanished)


class Resync:
    """What a SELECT with QRESYNC parameters reported since `modseq`: the flags of each message that
    is new or changed (`changed`, uid -> flags) and the UID ranges expunged (`vanished`)."""

    __slots__ = ("modseq", "changed", "vanished")

    def __init__(self, modseq: int, changed: dict[int, tuple], vanished: list[tuple[int, int]]) -> None:
        self.modseq = modseq
        self.changed = changed
        self.vanished = sorted(vanished)

    def gone(self, uids) -> set[int]:
        """Those of `uids` that vanished."""
        import bisect

        starts = [lo for lo, _ in self.vanished]
        out = set()
        for u in uids:
            i = bisect.bisect_right(starts, u) - 1
            if i >= 0 and self.vanished[i][1] >= u:
                out.add(u)
        return out

    def candidates(self) -> list[int]:
        """New or changed messages not flagged \\Deleted, in UID order."""
        return sorted(u for u, flags in self.changed.items()
                      if not any(bytes(f).lower() == b"\\deleted" for f in flags))


def uid_ranges(text: str) -> list[tuple[int, int]]:
    """A UID set such as `1:3,7,9:8` as sorted (low, high) pairs."""
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition(":")
        a, b = int(lo), int(hi or lo)
        out.append((min(a, b), max(a, b)))
    return sorted(out)


def quote_mailbox(name: str) -> str:
    """A mailbox name as an IMAP quoted string, in modified UTF-7 (RFC 3501 5.1.3)."""
    from imapclient import imap_utf7

    raw = imap_utf7.encode(name)
    text = raw.decode("ascii") if isinstance(raw, bytes) else raw
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mailbox_name(value) -> str:
    """A mailbox name from a parsed response (bytes in modified UTF-7, or an int for all-digit names)."""
    from imapclient import imap_utf7

    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        value = value.encode()
    return imap_utf7.decode(bytes(value))


def labels_value(labels: list[str]) -> str:
    """The value of `X-Gmail-Labels:`, e.g. `\\Inbox, Work, "a, b"`: Gmail's labels of a message."""
    parts = []
    for label in labels:
        text = label.replace("\r", " ").replace("\n", " ")
        if any(c in text for c in ',"') or text != text.strip():
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(text)
    return ", ".join(parts)


def new_mail_in(responses: list) -> tuple[bool, set[str]]:
    """What IDLE responses announce: (EXISTS/RECENT in the selected folder, folders named by STATUS)."""
    selected = False
    folders: set[str] = set()
    for r in responses:
        if len(r) > 1 and r[1] in (b"EXISTS", b"RECENT"):
            selected = True
        elif len(r) > 1 and r[0] == b"STATUS":
            folders.add(mailbox_name(r[1]))
    return selected, folders
