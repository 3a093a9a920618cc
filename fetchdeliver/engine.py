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
    from fetchdeliver.delivery.base import MailStore, Receipt
    from fetchdeliver.message import Message

DELIVERED = "delivered"
TEMPFAIL = "tempfail"
REJECTED = "rejected"


def _log():
    import logging

    return logging.getLogger(__name__)


class Outcome:
    """The result of processing one message."""

    __slots__ = ("status", "receipts", "actions", "errors", "reason")

    def __init__(self, status: str, receipts: list | None = None, actions: list | None = None,
                 errors: list[str] | None = None, reason: str = "") -> None:
        self.status = status
        self.receipts = receipts or []
        self.actions = actions or []
        self.errors = errors or []
        self.reason = reason

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
                 "outbound", "default_mailbox", "dry_run", "rules")

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
        self.rules = None                   # pipeline.RulesFile: re-read the script when its file changed


def decide(message: "Message", ctx: Context) -> tuple[list[Action], list[str], "Message"]:
    """Run the rules (if any) and return (actions, errors, message as edited by the rules)."""
    errors: list[str] = []
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
        env = sieve.SieveEnv(message, options=ctx.sieve_options,
                             duplicate_seen=_duplicate_checker(ctx),
                             mailbox_exists=ctx.store.mailbox_exists)
        result = sieve.run(ctx.script, message, env)
    except Exception as e:  # a bug in the interpreter must not lose mail
        _log().exception("Sieve interpreter failed; keeping the message in INBOX")
        return [keep(implicit=True)], errors + [f"sieve: internal error: {e}"], message
    errors.extend(result.errors)
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
            box = a.mailbox
            if a.type == "keep" or box.upper() == "INBOX":
                box = default_mailbox
            key = "INBOX" if box.upper() == "INBOX" else box
            prev = merged.get(key)
            if prev is None:
                merged[key] = Store(box, a.flags, copy=a.copy, implicit=a.implicit,
                                    create=a.create, kind=a.type)
            else:
                for f in a.flags:
                    if f not in prev.flags:
                        prev.flags.append(f)
    return list(merged.values())


def process(message: "Message", ctx: Context) -> Outcome:
    """Run `message` through the rules and deliver it; see the module docstring for the promise."""
    actions, errors, edited = decide(message, ctx)
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
            extra = _perform_other(a, edited, ctx)
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
        return Outcome(REJECTED, receipts=receipts, actions=actions, errors=errors,
                       reason=rejects[0].reason)  # type: ignore[attr-defined]

    for s in stores:
        try:
            receipts.append(ctx.store.deliver(edited.raw, s.mailbox, s.flags, sender=message.sender,
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
                return Outcome(TEMPFAIL, actions=actions, errors=errors + [str(e2)])
        except DeliveryError as e:
            _log().error("%s: delivery to %s failed: %s", message.origin, s.mailbox, e)
            _rollback(receipts)
            return Outcome(TEMPFAIL, actions=actions, errors=errors + [str(e)])
        except OSError as e:  # a deliverer bug surfacing as a raw OSError: still temporary
            _log().error("%s: delivery to %s failed: %s", message.origin, s.mailbox, e)
            _rollback(receipts)
            return Outcome(TEMPFAIL, actions=actions, errors=errors + [str(e)])
    return Outcome(DELIVERED, receipts=receipts, actions=actions, errors=errors)


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
                       reason=rejects[0].reason)  # type: ignore[attr-defined]
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
    if t in ("redirect", "vacation", "notify"):
        if ctx.outbound is None:
            # No outbound queue configured: the message must not vanish because of it.
            _log().warning("%s: %s needs the outbound SMTP queue, which is not configured; "
                           "keeping the message in INBOX", message.origin, t)
            return False if t == "redirect" else None
        return ctx.outbound.submit_action(a, message)
    if t == "pipe":  # filter and execute already ran inside the script
        return _run_program(a, message, ctx)
    _log().warning("%s: unknown action %s ignored", message.origin, t)
    return None


def _run_program(a, message: "Message", ctx: Context):
    from fetchdeliver.delivery.pipe import run_program
    from fetchdeliver.errors import PermanentDeliveryError

    if not ctx.pipe_bin_dir:
        raise PermanentDeliveryError(f"{a.type} {a.program!r}: no [sieve] pipe_bin_dir configured")
    if "/" in a.program or a.program in ("", ".", ".."):
        raise PermanentDeliveryError(f"{a.type}: program name {a.program!r} must be a plain name")
    path = os.path.join(ctx.pipe_bin_dir, a.program)
    env = {"SENDER": message.sender, "RECIPIENT": ",".join(message.recipients),
           "ORIGINAL_RECIPIENT": message.original_recipient or ""}
    return run_program([path, *a.args], message.raw, env=env)
