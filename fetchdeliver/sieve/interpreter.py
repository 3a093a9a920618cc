"""Run a compiled Sieve script over one message: decide actions, perform no I/O.

On the MDA path: imports only the core and the modules of the extensions the
script requires. On a run-time error every queued action is dropped and the
message is kept (implicit keep), as Pigeonhole does. So it is when the run uses
more CPU time than [sieve] max_run_time (checked every few commands, tests and
match steps, as Pigeonhole checks sieve_max_cpu_time), and when the interpreter
itself fails: the error names the rule (file:line) that was running.
"""

from __future__ import annotations

import time

from fetchdeliver.actions import Discard, Redirect, Reject, Store
from fetchdeliver.sieve import matching, registry
from fetchdeliver.sieve.errors import SieveRuntimeError
from fetchdeliver.sieve.runtime import Break, OverBudget, Return, Stop

__all__ = ["Break", "Context", "OverBudget", "Return", "SieveResult", "Stop", "run", "tables"]

MAX_REDIRECTS = 4    # Pigeonhole's sieve_max_redirects
MAX_ACTIONS = 32     # sieve_max_actions (0: no limit)
MAX_RUN_TIME = 5     # seconds of CPU time per message (Pigeonhole's sieve_max_cpu_time is 30 s)
CHECK_EVERY = 16     # steps between two looks at the clock (one look costs about a microsecond)

# The CPU time of this thread: time waiting for a vnd.dovecot program, or for the GIL while
# other deliveries run, does not count against the budget.
_cpu_clock = getattr(time, "thread_time", time.process_time)


_TABLES: dict = {}


def tables(requires: tuple) -> tuple:
    """(commands, tests, match types, comparators, address parts, services) for these extensions."""
    t = _TABLES.get(requires)
    if t is not None:
        return t
    commands: dict = {}
    tests: dict = {}
    mtypes = dict(matching.MATCH_TYPES)
    comparators = dict(matching.COMPARATORS)
    parts: dict = {}
    services: dict = {}
    exts = [registry.core()]
    for name in requires:
        ext = registry.load_extension(name)
        if ext is not None and ext not in exts:
            exts.append(ext)
    for ext in exts:
        for name, spec in ext.commands.items():
            commands[name] = spec.run
        for name, spec in ext.tests.items():
            tests[name] = spec.run
        mtypes.update(ext.match_types)
        comparators.update(ext.comparators)
        parts.update(ext.address_parts)
        services.update(ext.services)
    t = (commands, tests, mtypes, comparators, parts, services)
    _TABLES[requires] = t
    return t


class Context:
    """The state of one script run (the interpreter and the extension handlers share it)."""

    def __init__(self, script, message, env) -> None:
        self.script = script
        self.message = message
        self.env = env
        self.requires = frozenset(script.data.get("main_requires", script.requires))
        (self.commands, self.tests, self.match_types, self.comparators,
         self.address_parts, self.services) = tables(tuple(script.requires))
        self.actions: list = []
        # id(action) -> the message as it was when the action was taken: RFC 5293 section 7, "actions
        # that store, send, or alter the message MUST do so with the current set of header fields".
        self.snapshots: dict = {}
        # How many of the first actions were already carried out (a multiscript run, or the
        # testsuite's test_result_execute): an action done cannot conflict any more (Pigeonhole).
        self.executed = 0
        self.implicit_keep = True
        # imap4flags' internal variable: a message's own flags when the script runs for an IMAP event
        self.flags: list[str] = list(env.event.flags) if env.event is not None else []
        self.variables: dict[str, str] = {}
        self.global_vars: dict[str, str] = {}
        self.match_values: list[str] = []
        self.vars_enabled = "variables" in self.requires
        self.match_vars_enabled = self.vars_enabled
        self.errors: list[str] = []
        self.logged: list[str] = []   # the messages of log_error(), without file and line
        self.trace: list[str] | None = [] if env.trace else None
        self.file = script.name
        self.line = 0
        self.duplicate_keys: list = []
        self.ext_state: dict = {}     # per-extension scratch space
        self.redirects: list[str] = []
        self.vacation_done = False
        self.edited = False            # editheader changed the message
        self.mime_part = None          # foreverypart: the current part
        opts = env.options
        self.max_actions = opts.get("max_actions", MAX_ACTIONS) or (1 << 62)
        self.max_redirects = opts.get("max_redirects", MAX_REDIRECTS)
        self.budget = opts.get("max_run_time", MAX_RUN_TIME)
        self.deadline = _cpu_clock() + self.budget if self.budget else None
        self.ticks = CHECK_EVERY

    # -- the time budget -----------------------------------------------------
    def tick(self) -> None:
        """One step of work (a command, a test, a match): now and then, look at the clock."""
        self.ticks -= 1
        if self.ticks <= 0:
            self.ticks = CHECK_EVERY
            if self.deadline is not None and _cpu_clock() > self.deadline:
                self.deadline = None  # report once, even if a handler catches and goes on
                raise OverBudget(f"the script used more than its CPU time budget ([sieve] max_run_time = "
                                 f"{self.budget}s); stopped at this rule", self.file, self.line)

    # -- helpers for handlers ------------------------------------------------
    def fail(self, message: str):
        raise SieveRuntimeError(message, self.file, self.line)

    def log_error(self, message: str) -> None:
        """An error the run goes on after (as Pigeonhole's: an invalid regex built from variables
        makes that key match nothing): logged with the result, once per rule and message."""
        text = str(SieveRuntimeError(message, self.file, self.line))
        if text not in self.errors:
            self.errors.append(text)
            self.logged.append(message)

    def has(self, ext: str) -> bool:
        return ext in self.requires

    def comparator(self, name: str):
        return self.comparators[name]

    def match_fn(self, name: str):
        return self.match_types[name]

    def set_match_vars(self, values: list[str]) -> None:
        self.match_values = list(values)

    def expand(self, s: str) -> str:
        if self.vars_enabled and "${" in s:
            return self.services["expand"](self, s)
        return s

    def expand_list(self, values) -> list[str]:
        if self.vars_enabled:
            return [self.expand(s) for s in values]
        return values

    def note(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.file}:{self.line}: {text}")

    # -- execution -----------------------------------------------------------
    def run_block(self, block) -> None:
        commands = self.commands
        for node in block:
            self.line = node[1]
            self.ticks -= 1
            if self.ticks <= 0:
                self.tick()
            commands[node[0]](self, node)

    def test(self, node) -> bool:
        saved = self.line
        self.line = node[1]
        self.ticks -= 1
        if self.ticks <= 0:
            self.tick()
        result = bool(self.tests[node[0]](self, node))
        if self.trace is not None:
            self.note(f"{node[0]} test: {'true' if result else 'false'}")
        self.line = saved
        return result

    # -- actions ---------------------------------------------------------------
    def _check_reject_conflict(self, what: str) -> None:
        for a in self.actions[self.executed:]:
            if a.type in ("reject", "ereject"):
                self.fail(f"{what} action conflicts with earlier {a.type} action")

    def _add(self, action) -> None:
        if len(self.actions) >= self.max_actions:
            self.fail(f"total number of actions exceeds policy limit ({len(self.actions) + 1} > "
                      f"{self.max_actions})")
        self.actions.append(action)
        self.snapshots[id(action)] = self.message

    def store(self, mailbox: str, tags: dict, kind: str) -> None:
        """keep / fileinto with :flags, :copy, :create as given in the compiled tags."""
        self._check_reject_conflict("store")
        if "flags" in tags:
            flags = self.services["parse_flags"](self.expand_list(tags["flags"]))
        else:
            flags = list(self.flags)
        copy = bool(tags.get("copy"))
        create = bool(tags.get("create"))
        key = "INBOX" if mailbox.upper() == "INBOX" else mailbox
        for prev in self.actions:
            # Pigeonhole merges stores to one folder: the last flags win, in the first one's place.
            if isinstance(prev, Store) and ("INBOX" if prev.mailbox.upper() == "INBOX" else prev.mailbox) == key:
                # A duplicate store is dropped (it does not cancel the implicit keep either).
                prev.flags = flags
                prev.create = prev.create or create
                if kind == "keep":
                    prev.type = "keep"  # keep takes the earlier store's place (as in Pigeonhole)
                self.note(f"{kind} {mailbox}: merged with the earlier store")
                return
        self._add(Store(mailbox, flags, copy=copy, create=create, kind=kind))
        self.note(f"{kind} {mailbox}" + (f" flags {' '.join(flags)}" if flags else ""))
        if not copy:
            self.implicit_keep = False

    def redirect(self, address: str, copy: bool) -> None:
        self._check_reject_conflict("redirect")
        if address in self.redirects:
            # The same address again: one redirect (Pigeonhole compares the exact string).
            return
        self.redirects.append(address)
        if len(self.redirects) > self.max_redirects:
            self.fail(f"number of redirect actions exceeds policy limit "
                      f"({len(self.redirects)} > {self.max_redirects})")
        self._add(Redirect(address, copy=copy))
        self.note(f"redirect {address}")
        if not copy:
            self.implicit_keep = False

    def discard(self) -> None:
        if not any(a.type == "discard" for a in self.actions):
            self._add(Discard())
        self.note("discard")
        self.implicit_keep = False

    def not_for_imap_events(self, what: str) -> None:
        """RFC 6785 3.11 and 4.6: reject, ereject, vacation and envelope tests end a script run
        for an IMAP event with an error."""
        if self.env.event is not None:
            self.fail(f"{what} is not applicable when the script runs for an IMAP event (RFC 6785)")

    def reject(self, reason: str, ereject: bool) -> None:
        name = "ereject" if ereject else "reject"
        self.not_for_imap_events(name)
        for i, a in enumerate(self.actions):
            if i < self.executed:
                if a.type in ("reject", "ereject"):
                    return  # the same response again: already sent, this one is dropped
                continue  # what was carried out cannot be undone; no conflict any more
            if a.type in ("keep", "fileinto", "redirect") or a.type in ("reject", "ereject", "vacation"):
                if a.type in ("reject", "ereject"):
                    self.fail(f"duplicate {a.type} action not allowed")
                if a.type == "redirect" and getattr(a, "copy", False):
                    continue
                self.fail(f"reject/ereject action conflicts with other action: the {a.type} action "
                          f"tries to deliver the message")
        self._add(Reject(reason, ereject=ereject))
        self.note(f"{name}")
        self.implicit_keep = False

    def add_action(self, action, cancels_keep: bool = False) -> None:
        self._add(action)
        self.note(action.type)
        if cancels_keep:
            self.implicit_keep = False


class SieveResult:
    """What a script decided: actions (implicit keep included), errors, the (edited) message."""

    __slots__ = ("actions", "errors", "message", "trace", "duplicate_keys", "implicit_keep", "snapshots")

    def __init__(self, actions, errors, message, trace, duplicate_keys, implicit_keep,
                 snapshots=None) -> None:
        self.snapshots = snapshots or {}
        self.actions = actions
        self.errors = errors
        self.message = message
        self.trace = trace
        self.duplicate_keys = duplicate_keys
        self.implicit_keep = implicit_keep

    def __repr__(self) -> str:
        return f"SieveResult(actions={self.actions!r}, errors={self.errors!r})"

    def message_for(self, action):
        """The message `action` works on: as edited when the script took it (editheader, replace,
        filter change the message for later actions only); the implicit keep gets the final one."""
        return self.snapshots.get(id(action), self.message)


def run(script, message, env) -> SieveResult:
    """Run `script` (a compiled Script) on `message` with `env` (a SieveEnv)."""
    ctx = Context(script, message, env)
    try:
        try:
            ctx.run_block(script.code)
        except (Stop, Return):
            pass
        except Break:
            pass
        if len(ctx.actions) > ctx.max_actions:
            ctx.fail("too many actions")
    except Exception as e:  # noqa: BLE001 - whatever went wrong, the message is kept
        if not isinstance(e, SieveRuntimeError):
            # A bug, or a limit of Python itself (RecursionError, MemoryError): still this rule's error.
            e = SieveRuntimeError(f"internal error while running this rule: {type(e).__name__}: {e}",
                                  ctx.file, ctx.line)
        ctx.errors.append(f"{e}; the message is kept (implicit keep)")
        if ctx.trace is not None:
            ctx.trace.append(f"runtime error: {e}; keeping the message")
        # As if no script had run: an IMAP event's message keeps its own flags (RFC 6785 3.1).
        flags = list(env.event.flags) if env.event is not None else []
        return SieveResult([Store("INBOX", flags, implicit=True, kind="keep")], ctx.errors, message,
                           ctx.trace or [], [], True)
    actions = list(ctx.actions)
    if ctx.implicit_keep:
        actions.append(Store("INBOX", list(ctx.flags), implicit=True, kind="keep"))
    return SieveResult(actions, ctx.errors, ctx.message, ctx.trace or [], ctx.duplicate_keys,
                       ctx.implicit_keep, ctx.snapshots)
