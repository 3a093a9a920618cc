"""Push for `idle = true` accounts: every folder pushed where the server and the budget allow.

How an account's folders are watched (decided once its server's capabilities are known):

- NOTIFY (RFC 5465) when the server offers it and `notify` is not false: one connection for
  every folder. It sends `NOTIFY SET (mailboxes (...) (MessageNew MessageExpunge))` and stays in
  IDLE; the server announces changes as untagged `STATUS "folder" (... UIDNEXT n ...)`.
- Otherwise IDLE, one connection per folder, as many as `max_connections` allows: the budget
  counts every connection the account holds at once, so one is kept for the fetch pass and
  `max_connections - 1` folders are pushed; the others are polled every `poll`.

The watchers only listen. When mail is announced they call `on_mail(folders)`; the scheduler
then runs a fetch pass over those folders on a separate connection, so the safety order of
fetch.py applies unchanged. IDLE is re-issued every `renew` seconds (servers may drop it at 30
minutes). A lost connection is re-established with exponential back-off, and each (re)connect
also calls `on_mail()`, since mail may have arrived while it was down.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, NamedTuple

log = logging.getLogger("fetchdeliver.daemon.idle")

# How often the IDLE loop looks at its stop flag (the wait for server data is sliced by this).
TICK = 0.5

PUSHED = "pushed"
POLLED = "polled"


def backoff(failures: int, base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds to wait after `failures` consecutive failures: 1, 2, 4, ... up to `cap`."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2 ** (failures - 1))


class FolderPlan(NamedTuple):
    """How one folder gets its new mail noticed: `state` is PUSHED or POLLED, `why` says how/why."""

    folder: str
    state: str
    why: str

    def as_dict(self) -> dict:
        return {"folder": self.folder, "state": self.state, "why": self.why}


def plan_push(folders: list[str], capabilities: set[bytes] | None, *, max_connections: int,
              use_notify: bool = True, poll: str = "") -> tuple[str, list[FolderPlan]]:
    """Decide how each folder is watched. Returns (kind, plans); kind is "notify", "idle" or "none".

    `capabilities` None: the server has not been reached yet (every folder polled until it is).
    """
    every = f"every {poll}" if poll else "on schedule"
    if max_connections < 2:
        why = (f"max_connections = {max_connections} leaves no connection for push (the fetch pass needs "
               f"one); polled {every}")
        return "none", [FolderPlan(f, POLLED, why) for f in folders]
    if capabilities is None:
        return "none", [FolderPlan(f, POLLED, f"push is connecting; polled {every} until then")
                        for f in folders]
    if use_notify and b"NOTIFY" in capabilities:
        n = len(folders)
        why = f"NOTIFY, one connection for {'the folder' if n == 1 else f'all {n} folders'}"
        return "notify", [FolderPlan(f, PUSHED, why) for f in folders]
    if b"IDLE" not in capabilities:
        return "none", [FolderPlan(f, POLLED, f"the server offers neither NOTIFY nor IDLE; polled {every}")
                        for f in folders]
    slots = max_connections - 1
    pushed = folders[:slots]
    note = ", notify = false" if b"NOTIFY" in capabilities else ", no NOTIFY on the server"
    plans = [FolderPlan(f, PUSHED, f"IDLE connection {i + 1} of {len(pushed)}{note}")
             for i, f in enumerate(pushed)]
    for f in folders[slots:]:
        plans.append(FolderPlan(f, POLLED, f"max_connections = {max_connections}: {len(pushed)} IDLE "
                                           f"connection{'s' if len(pushed) != 1 else ''} and one for fetching "
                                           f"are in use{note}; polled {every}"))
    return "idle", plans


class Watcher:
    """One thread holding one push connection: IDLE on one folder, or NOTIFY for several."""

    def __init__(self, account, folders: list[str], *, notify: bool, on_mail: Callable, on_state: Callable,
                 renew: float, reconnect_cap: float = 300.0, servers=None) -> None:
        self.account = account
        self.servers = servers        # the daemon's ServerBackoff (None: no shared back-off)
        self.folders = list(folders)
        self.notify = notify
        self.label = "NOTIFY" if notify else f"IDLE {folders[0]}"
        self.on_mail = on_mail        # on_mail(set of folders): called from this thread
        self.on_state = on_state      # on_state(label, error text or None) when the connection state changes
        self.renew = renew
        self.reconnect_cap = reconnect_cap
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._uidnext: dict[str, tuple] = {}   # folder -> (UIDVALIDITY, UIDNEXT) last announced

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"push-{self.account.name}-{self.label}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _prefix(self) -> str:
        return "NOTIFY: " if self.notify else f"IDLE: {self.folders[0]}: "

    def _run(self) -> None:
        from fetchdeliver.sources.base import SourceError

        failures = 0
        while not self.stop_event.is_set():
            if wait_for_server(self.servers, self.account.address, self.stop_event):
                break
            try:
                self._session()
                failures = 0
            except SourceError as e:
                if self.stop_event.is_set():
                    break
                failures += 1
                text = str(e)
                if text.startswith("IDLE: "):
                    text = text[len("IDLE: "):]  # "IDLE: INBOX: connection lost", not "IDLE: INBOX: IDLE: ..."
                self.on_state(self.label, self._prefix() + text)
                if not e.temporary and failures > 3:
                    delay = self.reconnect_cap  # a refused login will not heal by hammering the server
                else:
                    delay = backoff(failures, cap=self.reconnect_cap)
                delay = max(delay, server_throttled(self.servers, self.account.address, str(e)))
                log.debug("%s: %s reconnect in %.0fs", self.account.name, self.label, delay)
                self.stop_event.wait(delay)
            except Exception as e:  # a bug here must not end push for good
                log.exception("%s: %s watcher failed", self.account.name, self.label)
                failures += 1
                self.on_state(self.label, f"{self._prefix()}internal error: {type(e).__name__}: {e}")
                self.stop_event.wait(backoff(failures, cap=self.reconnect_cap))

    def _news(self, responses: list) -> set[str]:
        """Folders with new mail in IDLE responses (a STATUS whose UIDNEXT did not grow is an expunge
        or a flag change, e.g. our own pass deleting: nothing to fetch)."""
        from fetchdeliver.sources.imap import mailbox_name, new_mail_in

        selected, _ = new_mail_in(responses)
        out = set(self.folders[:1]) if selected and not self.notify else set()
        for r in responses:
            if len(r) > 1 and r[0] == b"STATUS":
                name = mailbox_name(r[1])
                items = r[2] if len(r) > 2 and isinstance(r[2], tuple) else ()
                values = dict(zip(items[::2], items[1::2]))
                uidnext = values.get(b"UIDNEXT")
                if not isinstance(uidnext, int):
                    out.add(name)
                    continue
                now = (values.get(b"UIDVALIDITY"), uidnext)
                before = self._uidnext.get(name)
                if before is None or before[0] != now[0] or now[1] > before[1]:
                    self._uidnext[name] = now
                    out.add(name)
        return {f for f in out if f in self.folders}

    def _session(self) -> None:
        from fetchdeliver.sources.base import SourceError
        from fetchdeliver.sources.imap import ImapSource, command_context

        src = ImapSource(self.account)
        try:
            src.connect()
            if self.notify:
                src.notify_set(self.folders)
            else:
                if not src.has("IDLE"):
                    raise SourceError("IDLE", "the server does not support IDLE; set idle = false",
                                      temporary=False)
                src.select(self.folders[0], readonly=True)
            self._uidnext.clear()
            if self.servers is not None:
                self.servers.clear(self.account.address)
            self.on_state(self.label, None)
            self.on_mail(set(self.folders))
            client = src.client
            assert client is not None  # connected above
            where = self.account.address
            rounds = 0
            while not self.stop_event.is_set():
                started = time.monotonic()
                if rounds:
                    log.debug("%s: IDLE re-issued (round %d) %s", self.account.name, rounds + 1,
                              "for NOTIFY" if self.notify else f"on {self.folders[0]}",
                              extra={"account": self.account.name})
                rounds += 1
                with command_context("IDLE", where):
                    client.idle()
                    try:
                        while not self.stop_event.is_set() and time.monotonic() - started < self.renew:
                            responses = client.idle_check(timeout=TICK)
                            if responses:
                                log.debug("%s: %s: %r", self.account.name, self.label, responses)
                            news = self._news(responses)
                            if news:
                                self.on_mail(news)
                            bye = next((r for r in responses if r and r[0] == b"BYE"), None)
                            if bye is not None:
                                from fetchdeliver.sources.base import server_words

                                words = server_words(list(bye[1:])) if len(bye) > 1 else ""
                                raise SourceError("IDLE", f"the server ended the session (BYE {words})".replace(
                                    " )", ")"))
                    finally:
                        client.idle_done()
        finally:
            src.close()


class AccountPush:
    """Every push connection of one account: learns the server's capabilities, plans, runs watchers."""

    def __init__(self, account, *, poll: str, on_mail: Callable, on_state: Callable, on_plan: Callable,
                 renew: float, reconnect_cap: float = 300.0, servers=None) -> None:
        self.account = account
        self.servers = servers
        self.poll = poll
        self.on_mail = on_mail
        self.on_state = on_state      # on_state(label, error or None)
        self.on_plan = on_plan        # on_plan(kind, [FolderPlan])
        self.renew = renew
        self.reconnect_cap = reconnect_cap
        self.stop_event = threading.Event()
        self.watchers: list[Watcher] = []
        self._thread: threading.Thread | None = None

    def plan(self, capabilities: set[bytes] | None) -> tuple[str, list[FolderPlan]]:
        a = self.account
        return plan_push(a.folders, capabilities, max_connections=a.max_connections, use_notify=a.notify,
                         poll=self.poll)

    def start(self) -> None:
        kind, plans = self.plan(None)
        self.on_plan(kind, plans)
        if self.account.max_connections < 2:
            return
        self._thread = threading.Thread(target=self._run, name=f"push-{self.account.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for w in self.watchers:
            w.stop()

    def _capabilities(self) -> set[bytes] | None:
        """Log in once to learn what the server offers (retried with back-off until it answers)."""
        from fetchdeliver.sources.base import SourceError
        from fetchdeliver.sources.imap import ImapSource

        failures = 0
        while not self.stop_event.is_set():
            if wait_for_server(self.servers, self.account.address, self.stop_event):
                break
            src = ImapSource(self.account)
            try:
                src.connect()
                caps = set(src.capabilities)
                if self.servers is not None:
                    self.servers.clear(self.account.address)
                self.on_state("push", None)
                return caps
            except SourceError as e:
                failures += 1
                self.on_state("push", f"push: {e}")
                delay = self.reconnect_cap if (not e.temporary and failures > 3) else \
                    backoff(failures, cap=self.reconnect_cap)
                delay = max(delay, server_throttled(self.servers, self.account.address, str(e)))
                self.stop_event.wait(delay)
            finally:
                src.close()
        return None

    def _run(self) -> None:
        try:
            caps = self._capabilities()
        except Exception as e:  # a bug must not end push silently
            log.exception("%s: push planning failed", self.account.name)
            self.on_state("push", f"push: internal error: {type(e).__name__}: {e}")
            return
        if caps is None:
            return
        kind, plans = self.plan(caps)
        self.on_plan(kind, plans)
        pushed = [p.folder for p in plans if p.state == PUSHED]
        if kind == "notify":
            self.watchers = [self._watcher(pushed, notify=True)]
        elif kind == "idle":
            self.watchers = [self._watcher([f], notify=False) for f in pushed]
        else:
            return
        for w in self.watchers:
            if self.stop_event.is_set():
                break
            w.start()
        if self.stop_event.is_set():
            for w in self.watchers:
                w.stop()

    def _watcher(self, folders: list[str], *, notify: bool) -> Watcher:
        return Watcher(self.account, folders, notify=notify, on_mail=self.on_mail, on_state=self.on_state,
                       renew=self.renew, reconnect_cap=self.reconnect_cap, servers=self.servers)


def wait_for_server(servers, address: str, stop: threading.Event) -> bool:
    """Wait while `address` is backing off (throttled); True if `stop` was set meanwhile."""
    while servers is not None and not stop.is_set():
        left = servers.left(address)
        if left <= 0:
            break
        stop.wait(min(left, 60.0))
    return stop.is_set()


def server_throttled(servers, address: str, error: str) -> float:
    """If `error` is a throttling/outage reply, start or extend the server's back-off; its seconds."""
    if servers is None:
        return 0.0
    from fetchdeliver.sources.throttle import classify

    t = classify(error)
    return servers.hit(address, t) if t is not None else 0.0
