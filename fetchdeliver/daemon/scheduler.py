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

from fetchdeliver.daemon.idle import IdleWatcher
from fetchdeliver.daemon.runner import run_pass

log = logging.getLogger("fetchdeliver.daemon.scheduler")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.accounts import Account


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
        self._idle_known = False            # no IDLE state reported yet
        self.idle: IdleWatcher | None = None
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
        return f"idle, {every}" if self.account._table.get("idle") else every

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

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.account._table.get("idle"):
            self.idle = IdleWatcher(self.account, renew=float(self.daemon.options["idle_renew"]),
                                    on_mail=lambda: loop.call_soon_threadsafe(self.wake.set),
                                    on_state=lambda err: loop.call_soon_threadsafe(self._idle_state, err))
            self.idle.start()
        # Accounts start spread out a little, so many accounts do not all connect at once.
        first = random.uniform(0, min(2.0, self.interval * self.daemon.options["jitter"]))
        try:
            await asyncio.wait_for(self.wake.wait(), first)
        except asyncio.TimeoutError:
            pass
        while not self.retired:
            self.wake.clear()
            await self._pass()
            if self.retired:
                break
            delay = next_delay(jittered(self.interval, self.daemon.options["jitter"]), self.failures,
                               float(self.daemon.options["backoff_max"]))
            self._record(next_poll=time.time() + delay)
            try:
                await asyncio.wait_for(self.wake.wait(), delay)
            except asyncio.TimeoutError:
                pass
        if self.idle is not None:
            self.idle.stop()

    async def _pass(self) -> None:
        d = self.daemon
        gen = d.gen
        started = time.time()
        self.busy = True
        try:
            res = await in_thread(run_pass, self.account, gen, outbound=d.outbound, stop=self.stop_flag,
                                  on_delivered=d.on_delivered, name=f"fetch-{self.name}")
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

    def _idle_state(self, error: str | None) -> None:
        if self._idle_known and error == self.idle_error:
            return
        self._idle_known = True
        extra = {"account": self.name}
        if error is None:
            log.info("%s: IDLE connected: new mail is fetched as it arrives", self.name, extra=extra)
        elif self.idle_error is None:
            log.error("%s: %s (reconnecting with back-off; the same error is not logged again)", self.name,
                      error, extra=extra)
        else:
            log.error("%s: %s", self.name, error, extra=extra)
        self.idle_error = error
        self._record()

    def _record(self, next_poll: float | None = None) -> None:
        if next_poll is not None:
            self._next_poll = next_poll
        try:
            self.daemon.status.account(self.name, mode=self.mode, last_poll=self._last_poll, result=self._result,
                                       next_poll=getattr(self, "_next_poll", None),
                                       error=self.last_error or self.idle_error, failures=self.failures)
        except Exception as e:  # status is for people; it must never stop the schedule
            log.warning("cannot record the status of %s: %s", self.name, e)
