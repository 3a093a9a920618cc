"""Per-account schedule: poll every `poll` (with jitter), back off after failures, wake on IDLE.

One AccountTask per account runs in the daemon's event loop. Its fetch passes run
one at a time in a worker thread (fetch.py is blocking, and two passes of one
account in one process would defeat the per-account lock: fcntl locks are per
process). An error is logged when the account's state changes (ok -> failing,
a different error, failing -> ok), not at every poll.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time

from fetchdeliver.daemon.idle import AccountPush
from fetchdeliver.daemon.runner import run_pass

log = logging.getLogger("fetchdeliver.daemon.scheduler")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.sources.accounts import Account


def jittered(interval: float, jitter: float, rnd: random.Random | None = None) -> float:
    """`interval` stretched or shrunk by up to `jitter` (a fraction), so accounts drift apart."""
    r = (rnd or random).uniform(-jitter, jitter)
    return max(1.0, interval * (1.0 + r))


def next_delay(interval: float, failures: int, backoff_max: float) -> float:
    """The wait before the next poll: the interval, doubled per consecutive failure up to backoff_max."""
    if failures <= 0:
        return interval
    return min(max(backoff_max, interval), interval * 2 ** min(failures - 1, 20))


def describe_interval(seconds: float) -> str:
    s = int(seconds)
    for unit, n in (("h", 3600), ("m", 60)):
        if s >= n and s % n == 0:
            return f"{s // n}{unit}"
    return f"{s}s"


async def in_thread(fn, *args, name: str | None = None, **kwargs):
    """Run a blocking call in a new daemon thread (never joined at exit, unlike an executor's)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def settle(ok: bool, value) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def target() -> None:
        try:
            value = fn(*args, **kwargs)
        except BaseException as e:  # handed to the awaiting coroutine
            ok, value = False, e
        else:
            ok = True
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:
            pass  # the loop is gone: the daemon is exiting

    threading.Thread(target=target, name=name, daemon=True).start()
    return await fut


class AccountTask:
    """The schedule of one account."""

    def __init__(self, daemon, account: "Account") -> None:
        self.daemon = daemon
        self.account = account
        self.name = account.name
        self.wake = asyncio.Event()
        self.stop_flag = threading.Event()   # seen by the fetch pass between messages
        self.retired = False
        self.failures = 0
        self.last_error: str | None = None
        self.idle_error: str | None = None
        self.push_errors: dict[str, str | None] = {}   # per push connection (label -> error or None)
        self.push_plan: list = []                      # [FolderPlan]: each folder pushed or polled, and why
        self.idle: AccountPush | None = None
        self._dirty: set[str] = set()      # folders push announced new mail in, not fetched yet
        self._full = True                  # the next pass covers every folder
        self.task: asyncio.Task | None = None
        self.busy = False
        self.passes = 0

    @property
    def interval(self) -> float:
        opts = self.daemon.options
        return float(self.account._table.get("poll", opts["poll"]))

    @property
    def mode(self) -> str:
        every = f"poll every {describe_interval(self.interval)}"
        return f"idle, {every}" if self.account.idle else every

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.run())

    def retire(self, *, interrupt: bool = False) -> None:
        """End after the current pass (`interrupt`: also stop the pass between two messages)."""
        self.retired = True
        if interrupt:
            self.stop_flag.set()
        if self.idle is not None:
            self.idle.stop()
        self.wake.set()

    def _pushed(self, folders: set[str] | None) -> None:
        """Push announced new mail (in `folders`; None: anywhere): fetch those folders now."""
        if folders is None:
            self._full = True
        else:
            self._dirty |= folders
        self.wake.set()

    def _pass_folders(self) -> list[str] | None:
        """The folders of the next pass (None: all) and forget what it covers."""
        folders = None
        if not self._full and self._dirty:
            folders = [f for f in self.account.folders if f in self._dirty] or None
        self._full = False
        self._dirty.clear()
        return folders

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.account.idle:
            push = AccountPush
            watcher = self.account.kind.watcher   # a source's own push (JMAP: EventSource)
            if watcher:
                import importlib

                module, _, cls = watcher.partition(":")
                push = getattr(importlib.import_module(module), cls)
            self.idle = push(
                self.account, poll=describe_interval(self.interval),
                renew=float(self.daemon.options["idle_renew"]),
                on_mail=lambda folders: loop.call_soon_threadsafe(self._pushed, folders),
                on_state=lambda label, err: loop.call_soon_threadsafe(self._idle_state, label, err),
                on_plan=lambda kind, plans: loop.call_soon_threadsafe(self._push_plan, kind, plans),
                servers=self.daemon.servers)
            self.idle.start()
        # Accounts start spread out a little, so many accounts do not all connect at once.
        first = random.uniform(0, min(2.0, self.interval * self.daemon.options["jitter"]))
        try:
            await asyncio.wait_for(self.wake.wait(), first)
        except asyncio.TimeoutError:
            pass
        self._full = True
        servers = self.daemon.servers
        while not self.retired:
            left = servers.left(self.account.address) if servers is not None else 0.0
            if left > 0:
                # The server asked to be left alone (throttled, unavailable): no pass until then.
                self._result = f"waiting: {self.account.address} is backing off"
                self._record(next_poll=time.time() + left)
                try:
                    await asyncio.wait_for(self.wake.wait(), left)
                except asyncio.TimeoutError:
                    pass
                self.wake.clear()
                continue
            self.wake.clear()
            await self._pass(self._pass_folders())
            if self.retired:
                break
            delay = next_delay(jittered(self.interval, self.daemon.options["jitter"]), self.failures,
                               float(self.daemon.options["backoff_max"]))
            if servers is not None:
                delay = max(delay, servers.left(self.account.address))
            self._record(next_poll=time.time() + delay)
            try:
                await asyncio.wait_for(self.wake.wait(), delay)
            except asyncio.TimeoutError:
                self._full = True  # the scheduled poll: every folder, pushed or not
        if self.idle is not None:
            self.idle.stop()

    async def _pass(self, folders: list[str] | None = None) -> None:
        d = self.daemon
        gen = d.gen
        started = time.time()
        self.busy = True
        try:
            res = await in_thread(run_pass, self.account, gen, outbound=d.outbound, stop=self.stop_flag,
                                  on_delivered=d.on_delivered, folders=folders, name=f"fetch-{self.name}")
        except Exception as e:  # run_pass catches what fetch can raise; this is a bug
            log.exception("%s: fetch pass failed", self.name)
            from fetchdeliver.daemon.runner import PassResult

            res = PassResult(False, f"internal error: {type(e).__name__}: {e}", 0, 0, 0, 0, False)
        finally:
            self.busy = False
        self.passes += 1
        self._last_poll = started
        extra = {"account": self.name}
        if res.stopped:
            self._result = f"interrupted by shutdown: {res.summary()}"
            log.info("%s: stopped between two messages: %s", self.name, res.summary(), extra=extra)
            self._record()
            return
        if res.fetched:
            log.info("%s: %s", self.name, res.summary(), extra=extra)
        else:
            log.debug("%s: pass over %s: %s", self.name, ", ".join(folders) if folders else "every folder",
                      res.error or res.summary(), extra=extra)
        servers = d.servers
        if servers is not None and not res.stopped:
            if res.error is None:
                servers.clear(self.account.address)
            else:
                from fetchdeliver.sources.throttle import classify

                throttle = classify(res.error)
                if throttle is not None:
                    wait = servers.hit(self.account.address, throttle)
                    log.warning("%s: %s asks us to wait (%s): no connection to it for %s", self.name,
                                self.account.address, throttle.reason, describe_interval(max(1, wait)),
                                extra=extra)
        if res.error is None:
            if self.last_error is not None:
                log.info("%s: working again after %d failed polls", self.name, self.failures, extra=extra)
            self.failures = 0
            self.last_error = None
            self._result = f"ok: {res.summary()}"
        else:
            self.failures += 1
            if res.error != self.last_error:
                log.error("%s: %s (retrying with back-off; the same error is not logged again)",
                          self.name, res.error, extra=extra)
            else:
                log.debug("%s: still failing: %s", self.name, res.error, extra=extra)
            self.last_error = res.error
            self._result = f"failed: {res.error}" + (f" ({res.summary()})" if res.fetched else "")

    _last_poll: float | None = None
    _result: str | None = None

    def _idle_state(self, label: str, error: str | None) -> None:
        """A push connection (`label`: "push", "NOTIFY" or "IDLE folder") connected or failed."""
        known = label in self.push_errors
        before = self.push_errors.get(label)
        if known and error == before:
            return
        self.push_errors[label] = error
        extra = {"account": self.name}
        if error is None:
            if label == "NOTIFY":
                n = len(self.account.folders)
                log.info("%s: NOTIFY connected: new mail in %d folder%s is fetched as it arrives", self.name,
                         n, "" if n == 1 else "s", extra=extra)
            elif label == "EventSource":
                log.info("%s: JMAP EventSource connected: new mail is fetched as it arrives", self.name,
                         extra=extra)
            elif label.startswith("IDLE "):
                log.info("%s: IDLE connected on %s: new mail is fetched as it arrives", self.name, label[5:],
                         extra=extra)
        elif before is None:
            log.error("%s: %s (reconnecting with back-off; the same error is not logged again)", self.name,
                      error, extra=extra)
        else:
            log.error("%s: %s", self.name, error, extra=extra)
        errors = [e for e in self.push_errors.values() if e]
        self.idle_error = "; ".join(errors) if errors else None
        self._record()

    def _push_plan(self, kind: str, plans: list) -> None:
        if plans != self.push_plan:
            pushed = sum(1 for p in plans if p.state == "pushed")
            if kind != "none" or self.push_plan:
                log.info("%s: %d of %d folders pushed (%s)", self.name, pushed, len(plans),
                         {"notify": "NOTIFY", "idle": "IDLE per folder", "eventsource": "JMAP EventSource"
                          }.get(kind, "none"),
                         extra={"account": self.name})
        self.push_plan = list(plans)
        try:
            self.daemon.status.push(self.name, [p.as_dict() for p in plans])
        except Exception as e:  # status is for people; it must never stop the schedule
            log.warning("cannot record the push state of %s: %s", self.name, e)

    def _record(self, next_poll: float | None = None) -> None:
        if next_poll is not None:
            self._next_poll = next_poll
        try:
            self.daemon.status.account(self.name, mode=self.mode, last_poll=self._last_poll, result=self._result,
                                       next_poll=getattr(self, "_next_poll", None),
                                       error=self.last_error or self.idle_error, failures=self.failures)
        except Exception as e:  # status is for people; it must never stop the schedule
            log.warning("cannot record the status of %s: %s", self.name, e)
