"""Run one message: Sieve -> actions -> deliverers -> one outcome.

`process()` is the single place where a decision becomes deliveries. Its
promise to every source: when it returns "delivered", every action is durable;
when it returns "tempfail", nothing the caller acknowledges is lost (the
deliveries it made are rolled back where possible, and the caller must not
acknowledge the source); "rejected" carries the Sieve reject reason.
"""

from __future__ import annotations

import os

from fetchdeliver.actions import Action, Store, keep
from fetchdeliver.errors import DeliveryError, InvalidMailboxName

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.storage.base import Store as MailStore, Receipt
    from fetchdeliver.message import Message
    from fetchdeliver.pipeline import DatabaseRules, RulesFile
    from fetchdeliver.deliverylog import Recorder
    from collections.abc import Callable

    from fetchdeliver.filter import Filter

DELIVERED = "delivered"
TEMPFAIL = "tempfail"
REJECTED = "rejected"


def _log():
    import logging

    return logging.getLogger(__name__)


class Outcome:
    """The result of processing one message."""

    __slots__ = ("status", "receipts", "actions", "errors", "reason", "quota")

    def __init__(self, status: str, receipts: list | None = None, actions: list | None = None,
                 errors: list[str] | None = None, reason: str = "", quota=None) -> None:
        self.status = status
        self.receipts = receipts or []
        self.actions = actions or []
        self.errors = errors or []
        self.reason = reason
        # A tempfail because the user is over quota: the QuotaExceeded (its `temporary` says whether
        # a source answers 4xx/75 or 5xx/77); None for every other outcome.
        self.quota = quota

    @property
    def ok(self) -> bool:
        """True when the source may be acknowledged (delivered, or a decided reject)."""
        return self.status != TEMPFAIL

    def where(self) -> list[str]:
        """Human-readable list of where the message went."""
        out = []
        for r in self.receipts:
            out.append(f"{r.target}:{r.mailbox}" if r.mailbox else r.target)
        return out

    def __repr__(self) -> str:
        return f"Outcome({self.status!r}, where={self.where()!r}, errors={self.errors!r})"


class Context:
    """What `process()` needs besides the message: where to store, which rules, which options."""

    __slots__ = ("store", "script", "script_error", "sieve_options", "pipe_bin_dir", "state",
                 "outbound", "default_mailbox", "dry_run", "rules", "delivery_log", "trace", "filter",
                 "message_for")

    def __init__(self, store: "MailStore", script=None, *, script_error: str | None = None,
                 sieve_options: dict | None = None, pipe_bin_dir: str | None = None, state=None,
                 outbound=None, default_mailbox: str = "INBOX", dry_run: bool = False) -> None:
        self.store = store
        self.script = script                # a compiled fetchdeliver.sieve Script, or None
        self.script_error = script_error    # why the script could not be compiled (-> implicit keep)
        self.sieve_options = sieve_options or {}
        self.pipe_bin_dir = pipe_bin_dir
        self.state = state                  # fetchdeliver.state.State or None (duplicate/vacation memory)
        self.outbound = outbound            # the SMTP queue, or None until it is configured
        self.default_mailbox = default_mailbox
        self.dry_run = dry_run
        # re-read the script when its file (or, with [storage] url, the active one in PostgreSQL) changed
        self.rules: RulesFile | DatabaseRules | None = None
        self.delivery_log: Recorder | None = None  # one row per decided message, or None
        self.trace: list[str] = []          # the last Sieve run's trace (kept only with a delivery_log)
        self.filter: Filter | None = None   # when [filter] is configured
        # action -> the message as the rules had edited it when the action was taken
        self.message_for: Callable[[Action], Message] | None = None


def decide(message: "Message", ctx: Context,
           options: dict | None = None) -> tuple[list[Action], list[str], "Message"]:
    """Run the rules (if any) and return (actions, errors, message as edited by the rules).
    `options` replaces ctx.sieve_options for this message (the content filter's doing)."""
    errors: list[str] = []
    ctx.trace = []
    ctx.message_for = None
    if ctx.rules is not None:
        try:
            ctx.rules.refresh(ctx)
        except Exception:  # never lose mail over it: the script loaded before stays
            _log().exception("could not look at the rules file again")
    if ctx.script_error:
        errors.append(ctx.script_error)
    if ctx.script is None:
        return [keep(implicit=True)], errors, message
    from fetchdeliver import sieve

    try:
        env = sieve.SieveEnv(message, options=ctx.sieve_options if options is None else options,
                             duplicate_seen=_duplicate_checker(ctx),
                             mailbox_exists=ctx.store.mailbox_exists,
                             trace=ctx.delivery_log is not None)
        result = sieve.run(ctx.script, message, env)
        ctx.trace = result.trace
    except Exception as e:  # a bug in the interpreter must not lose mail
        _log().exception("Sieve interpreter failed; keeping the message in INBOX")
        return [keep(implicit=True)], errors + [f"sieve: internal error: {e}"], message
    errors.extend(result.errors)
    ctx.message_for = result.message_for
    actions = list(result.actions)
    if not actions:
        # Should not happen (the interpreter adds implicit keep), but never drop mail.
        actions = [keep(implicit=True)]
    return actions, errors, (result.message or message)


def _duplicate_checker(ctx: Context):
    state = ctx.state
    if state is None:
        return None
    return getattr(state, "duplicate_seen", None)


def plan_stores(actions: list[Action], default_mailbox: str = "INBOX") -> list[Store]:
    """Merge store actions: one delivery per mailbox, flags united, INBOX mapped to the default."""
    merged: dict[str, Store] = {}
    for a in actions:
        if isinstance(a, Store):
            box, key = _store_target(a, default_mailbox)
            prev = merged.get(key)
            if prev is None:
                merged[key] = Store(box, a.flags, copy=a.copy, implicit=a.implicit,
                                    create=a.create, kind=a.type)
            else:
                for f in a.flags:
                    if f not in prev.flags:
                        prev.flags.append(f)
    return list(merged.values())


def _store_target(a: Store, default_mailbox: str) -> tuple[str, str]:
    """(mailbox, merge key) of a store action."""
    box = a.mailbox
    if a.type == "keep" or box.upper() == "INBOX":
        box = default_mailbox
    return box, ("INBOX" if box.upper() == "INBOX" else box)


def _stored_messages(actions: list[Action], edited: "Message", ctx: Context) -> dict[str, "Message"]:
    """Merge key -> the message a store delivers: as edited when the first store to that mailbox
    was decided (RFC 5293 section 7), the implicit keep the final one."""
    out: dict[str, "Message"] = {}
    for a in actions:
        if isinstance(a, Store):
            key = _store_target(a, ctx.default_mailbox)[1]
            if key not in out:
                out[key] = ctx.message_for(a) if ctx.message_for is not None else edited
    return out


def process(message: "Message", ctx: Context) -> Outcome:
    """Run `message` through the rules and deliver it; see the module docstring for the promise."""
    options = None
    if ctx.filter is not None:
        message, options, failed = _content_filter(message, ctx)
        if failed is not None:
            return failed
    actions, errors, edited = decide(message, ctx, options)
    for err in errors:
        _log().error("%s: %s", message.origin, err)

    rejects = [a for a in actions if a.type in ("reject", "ereject")]
    stores = plan_stores(actions, ctx.default_mailbox)
    others = [a for a in actions if not isinstance(a, Store) and a.type not in ("reject", "ereject")]

    if ctx.dry_run:
        return _planned(actions, errors, stores, others, rejects, ctx)

    receipts: list[Receipt] = []
    fallback_needed = False
    # Side actions first only where they cannot fail the message; stores are the durable part.
    for a in others:
        try:
            extra = _perform_other(a, ctx.message_for(a) if ctx.message_for is not None else edited, ctx)
        except DeliveryError as e:
            if e.temporary:
                _log().error("%s: %s failed temporarily: %s", message.origin, a.type, e)
                _rollback(receipts)
                return Outcome(TEMPFAIL, actions=actions, errors=errors + [str(e)])
            errors.append(f"{a.type}: {e}")
            _log().error("%s: %s failed: %s; keeping the message in INBOX", message.origin, a.type, e)
            fallback_needed = True
            continue
        if extra is False:
            fallback_needed = True
        elif extra is not None:
            receipts.append(extra)

    if fallback_needed and not any(s.mailbox.upper() == "INBOX" or s.mailbox == ctx.default_mailbox
                                   for s in stores):
        stores.append(Store(ctx.default_mailbox, [], implicit=True, kind="keep"))

    if rejects and not stores:
        return _logged(message, ctx, Outcome(REJECTED, receipts=receipts, actions=actions, errors=errors,
                                             reason=rejects[0].reason))  # type: ignore[attr-defined]

    stored = _stored_messages(actions, edited, ctx)
    for s in stores:
        try:
            raw = stored.get(_store_target(s, ctx.default_mailbox)[1], edited).raw
            receipts.append(ctx.store.deliver(raw, s.mailbox, s.flags, sender=message.sender,
                                              create=True))
        except InvalidMailboxName as e:
            errors.append(str(e))
            _log().error("%s: %s; delivering to INBOX instead", message.origin, e)
            if any(r.mailbox == ctx.default_mailbox for r in receipts):
                continue
            try:
                receipts.append(ctx.store.deliver(edited.raw, ctx.default_mailbox, s.flags,
                                                  sender=message.sender))
            except DeliveryError as e2:
                _rollback(receipts)
                return Outcome(TEMPFAIL, actions=actions, errors=errors + [str(e2)], quota=_over_quota(e2))
        except DeliveryError as e:
            _log().error("%s: delivery to %s failed: %s", message.origin, s.mailbox, e)
            _rollback(receipts)
            return Outcome(TEMPFAIL, actions=actions, errors=errors + [str(e)], quota=_over_quota(e))
        except OSError as e:  # a deliverer bug surfacing as a raw OSError: still temporary
            _log().error("%s: delivery to %s failed: %s", message.origin, s.mailbox, e)
            _rollback(receipts)
            return Outcome(TEMPFAIL, actions=actions, errors=errors + [str(e)])
    return _logged(message, ctx, Outcome(DELIVERED, receipts=receipts, actions=actions, errors=errors))


def _over_quota(e: DeliveryError):
    """`e` when it is a QuotaExceeded (storage/quota.py), else None."""
    from fetchdeliver.errors import QuotaExceeded

    return e if isinstance(e, QuotaExceeded) else None


def _logged(message: "Message", ctx: Context, outcome: Outcome) -> Outcome:
    """Write the delivery log row (when there is a log); the outcome is returned unchanged."""
    if ctx.delivery_log is not None:
        store = ctx.store
        root = getattr(store, "root", None) or getattr(store, "inbox_path", None) or ""
        ctx.delivery_log.record(message, outcome, ctx.trace, ctx.script, os.path.abspath(root) if root else "")
    return outcome


def _content_filter(message: "Message", ctx: Context):
    """The [filter] step: (message with the verdict's headers, Sieve options or None, Outcome or None).
    A scanner that is down or slow tempfails the message, or with on_failure = "deliver" lets it
    through unfiltered with a header saying so, and spamtest/virustest then say "not tested"."""
    from fetchdeliver.filter import FilterUnavailable, add_headers

    flt = ctx.filter
    assert flt is not None  # only called with a filter
    try:
        result = flt.scan(message)
    except Exception as e:  # FilterUnavailable, or a bug in a client: never lose the message over it
        if not isinstance(e, FilterUnavailable):
            _log().exception("%s: content filter failed", message.origin)
            e = FilterUnavailable(f"internal error: {type(e).__name__}: {e}")
        if flt.on_failure != "deliver":
            _log().error("%s: content filter: %s; temporary failure (on_failure = \"tempfail\")",
                         message.origin, e)
            return message, None, Outcome(TEMPFAIL, errors=[f"content filter: {e}"])
        _log().warning("%s: content filter: %s; delivering unfiltered (on_failure = \"deliver\")",
                       message.origin, e)
        result = flt.unfiltered(e)
    options = None
    if not result.scanned and flt.applied:
        # The headers our defaults read were not written by us: spamtest/virustest say "not tested".
        options = {k: v for k, v in ctx.sieve_options.items() if k not in flt.applied}
    return add_headers(message, result.headers), options, None


def _planned(actions, errors, stores, others, rejects, ctx: Context) -> Outcome:
    """The dry run's outcome: what the real run would do, as receipts without a file behind them
    (so `where()` reads the same as after a real delivery)."""
    from fetchdeliver.delivery.base import Receipt

    planned = []
    fallback = False
    for a in others:
        if a.type in ("redirect", "vacation", "notify"):
            if ctx.outbound is None:
                fallback = fallback or a.type == "redirect"
                continue
            what = f"redirect <{a.address.strip().strip('<>')}>" if a.type == "redirect" else a.type
            planned.append(Receipt("queue", what))
        elif a.type == "pipe":
            planned.append(Receipt("pipe", a.program))
    stores = list(stores)
    if fallback and not any(s.mailbox.upper() == "INBOX" or s.mailbox == ctx.default_mailbox for s in stores):
        stores.append(Store(ctx.default_mailbox, [], implicit=True, kind="keep"))
    if rejects and not stores:
        return Outcome(REJECTED, receipts=planned, actions=actions, errors=errors,
                       reason=rejects[0].reason)
    kind = getattr(ctx.store, "kind", "store")
    planned += [Receipt(kind, s.mailbox) for s in stores]
    return Outcome(DELIVERED, receipts=planned, actions=actions, errors=errors)


def _rollback(receipts: list["Receipt"]) -> None:
    for r in receipts:
        try:
            r.rollback()
        except OSError as e:
            _log().warning("could not roll back %r: %s", r, e)


def _perform_other(a: Action, message: "Message", ctx: Context):
    """Carry out a non-store action. Returns a Receipt, None (nothing to record) or False (keep instead)."""
    t = a.type
    if t == "discard":
        return None
    if t in ("redirect", "vacation", "notify", "report"):
        if ctx.outbound is None:
            # No outbound queue configured: the message must not vanish because of it.
            _log().warning("%s: %s needs the outbound SMTP queue, which is not configured; "
                           "keeping the message in INBOX", message.origin, t)
            return False if t == "redirect" else None
        receipt = ctx.outbound.submit_action(a, message)
        if getattr(a, "fcc", None) and receipt is not None and receipt.path:
            return _file_fcc_copy(a, receipt, message, ctx)
        return receipt
    if t == "pipe":  # filter and execute already ran inside the script
        return _run_program(a, message, ctx)
    _log().warning("%s: unknown action %s ignored", message.origin, t)
    return None


def _file_fcc_copy(a: Action, receipt: "Receipt", message: "Message", ctx: Context) -> "Receipt":
    """RFC 8580: file a copy of the message vacation/notify queued. A failure is only logged
    (section 4: it must not affect the sending); the copy is rolled back with the queued message."""
    from fetchdeliver.delivery.base import Receipt

    fcc = a.fcc  # type: ignore[attr-defined]
    try:
        with open(receipt.path, "rb") as f:  # type: ignore[arg-type]
            raw = f.read()
        copy = ctx.store.deliver(raw, fcc["mailbox"], fcc["flags"], sender="", create=fcc["create"])
    except (DeliveryError, OSError) as e:
        _log().warning("%s: %s :fcc copy to %s not filed: %s", message.origin, a.type, fcc["mailbox"], e)
        return receipt

    def undo() -> None:
        copy.rollback()
        receipt.rollback()
    return Receipt(receipt.target, receipt.mailbox, receipt.path, undo=undo)


def _run_program(a, message: "Message", ctx: Context):
    from fetchdeliver.delivery.pipe import run_program
    from fetchdeliver.errors import PermanentDeliveryError

    if not ctx.pipe_bin_dir:
        raise PermanentDeliveryError(f"{a.type} {a.program!r}: no [sieve] pipe_bin_dir configured")
    if "/" in a.program or a.program in ("", ".", ".."):
        raise PermanentDeliveryError(f"{a.type}: program name {a.program!r} must be a plain name")
    path = os.path.join(ctx.pipe_bin_dir, a.program)
    from fetchdeliver.sieve import program_environment

    env = program_environment(message.sender, ",".join(message.recipients), message.original_recipient)
    env["ORIGINAL_RECIPIENT"] = env["ORIG_RECIPIENT"]  # the name this engine used first
    return run_program([path, *a.args], message.raw, env=env)
