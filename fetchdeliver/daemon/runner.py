"""One fetch pass of one account inside the daemon: sources.runner.AccountRun with the daemon's wiring.

Differences from `fetchdeliver fetch`: output goes to logging instead of the
terminal; the compiled Sieve scripts come from the daemon's current (validated)
configuration rather than from disk, so a broken edit never reaches delivery;
redirect/vacation/notify use the daemon's outbound queue; delivered messages
are handed to the watch rules; and a stop request ends the pass between two
messages (the delivered ones are recorded, the rest stay on the server).
"""

from __future__ import annotations

import io
import logging
import threading

from fetchdeliver.errors import FetchdeliverError
from fetchdeliver.sources.runner import AccountRun

log = logging.getLogger("fetchdeliver.daemon.runner")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.sources.accounts import Account
    from fetchdeliver.daemon.reload import Generation


class Stopping(FetchdeliverError):
    """The daemon is shutting down: no further message is started."""

    def __init__(self) -> None:
        super().__init__("interrupted: the daemon is stopping (the rest is fetched at the next start)")


class PassResult:
    """What one pass did."""

    __slots__ = ("ok", "error", "fetched", "delivered", "duplicates", "failed", "stopped")

    def __init__(self, ok: bool, error: str | None, fetched: int, delivered: int, duplicates: int,
                 failed: int, stopped: bool) -> None:
        self.ok = ok
        self.error = error
        self.fetched = fetched
        self.delivered = delivered
        self.duplicates = duplicates
        self.failed = failed
        self.stopped = stopped

    def summary(self) -> str:
        return (f"{self.fetched} fetched, {self.delivered} delivered, {self.duplicates} duplicates skipped, "
                f"{self.failed} failed")


class DaemonAccountRun(AccountRun):
    """AccountRun wired to the daemon (see the module docstring)."""

    def __init__(self, account: "Account", gen: "Generation", state, *, outbound=None,
                 stop: threading.Event | None = None, on_delivered=None, folders: list[str] | None = None) -> None:
        super().__init__(account, gen.settings, state, out=io.StringIO(), err=io.StringIO(), folders=folders)
        self.gen = gen
        self.outbound = outbound
        self.stop = stop or threading.Event()
        self.on_delivered = on_delivered
        self.error: str | None = None
        self.stopped = False

    def _error_line(self, text: str) -> None:
        self.error = text  # the scheduler logs it once per change of state, not at every poll

    def _say(self, line: str, stream) -> None:
        text = line[len("fetchdeliver: "):] if line.startswith("fetchdeliver: ") else line
        if stream is self.err:
            log.warning("%s", text, extra={"account": self.name})
        else:
            log.info("%s", text, extra={"account": self.name})

    def _context(self):
        a = self.account
        key = (a.maildir, a.mbox, a.rules, a.default_mailbox)
        ctx = self.contexts.get(key)
        if ctx is None:
            from fetchdeliver.pipeline import build_context

            # rules="" : nothing is compiled here; the validated script of this generation is used.
            ctx = build_context(self.settings, maildir=a.maildir, mbox=a.mbox, rules="",
                                default_mailbox=a.default_mailbox, state=self.state)
            ctx.script = self.gen.script(a.rules)
            ctx.script_error = self.gen.script_error(a.rules)
            if a.rules:
                from fetchdeliver.pipeline import RulesFile

                # Changes after this generation was loaded (a script activated over ManageSieve) count too.
                ctx.rules = RulesFile(a.rules, self.settings)
                ctx.rules.stamp = ()
            ctx.outbound = self.outbound
            self.contexts[key] = ctx
        return ctx

    def _process(self, p, parsed):
        if self.stop.is_set():
            self.stopped = True
            raise Stopping()
        outcome = super()._process(p, parsed)
        if self.on_delivered is not None and outcome.ok and outcome.receipts:
            try:
                self.on_delivered(parsed, outcome, self.name)
            except Exception:  # a watch problem never touches delivery
                log.exception("%s: watch rules failed", self.name)
        return outcome


def run_pass(account: "Account", gen: "Generation", *, outbound=None, stop: threading.Event | None = None,
             on_delivered=None, folders: list[str] | None = None) -> PassResult:
    """Fetch `account` once (blocking: call it from a worker thread); `folders`: only these (push)."""
    from fetchdeliver.state import StateError, open_state

    try:
        state = open_state(gen.settings)
    except StateError as e:
        return PassResult(False, str(e), 0, 0, 0, 0, False)
    try:
        run = DaemonAccountRun(account, gen, state, outbound=outbound, stop=stop, on_delivered=on_delivered,
                               folders=folders)
        ok = run.run()
    finally:
        state.close()
    error = run.error
    if error is None and run.failed:
        error = f"{run.failed} message{'s' if run.failed != 1 else ''} not delivered (left on the server)"
    return PassResult(ok and not run.stopped, error, run.fetched, run.delivered, run.duplicates, run.failed,
                      run.stopped)
