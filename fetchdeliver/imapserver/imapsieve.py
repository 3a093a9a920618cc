"""imapsieve (RFC 6785) in the IMAP server: Sieve scripts run when a message is APPENDed, COPYed or
MOVEd into a mailbox, or its flags change, configured as Pigeonhole's imapsieve plugin is.

    [imapsieve]
    expunge_discarded = false         # imapsieve_expunge_discarded: expunge what a script discards
    url = "sieve://mail.example.org"  # imapsieve_url: advertised as IMAPSIEVE=<url> (needs METADATA)

    [[imapsieve.mailbox]]             # imapsieve_mailboxN_*; one table per rule, in order
    name = "Junk"                     # the mailbox the event happens in ("*" and "?" are wildcards)
    causes = ["COPY"]                 # APPEND, COPY (MOVE too) and/or FLAG (default: APPEND COPY)
    before = "/etc/fetchdeliver/report-spam.sieve"   # run before the user's script
    after = "/etc/fetchdeliver/after.sieve"          # run after it
    from = "*"                        # COPY only: the mailbox the message comes from

For an event, every rule that matches (name, cause, and for COPY its `from`) contributes its
`before` script, in rule order; then the user's own script (METADATA `/shared/imapsieve/script`
on the mailbox, a script name in `[imapsieve] user_script_dir`, when METADATA is offered); then the
rules' `after` scripts. Each script sees the flags the previous one left. The Sieve side
(`fetchdeliver.sieve.imapsieve`) decides; this module carries the answer out:

- keep: the message stays; its flags become what the scripts left (imap4flags).
- not kept (discard, fileinto elsewhere): the message is marked \\Deleted (RFC 6785 2.2.4), and
  expunged with `expunge_discarded = true`.
- fileinto: a copy is appended to that mailbox (which must exist).
- vnd.dovecot.pipe: the program from `[sieve] pipe_bin_dir` gets the message on its standard input
  (the classic use: moving into Junk pipes it to `rspamc learn_spam` or `sa-learn --spam`).
- redirect, notify (and vnd.dovecot.report): queued in the outbound queue when `[relay]` is configured,
  as in delivery; without it they are logged and not carried out (a redirect not made keeps the
  message). vacation is refused when the script compiles (RFC 6785 3.11).

A script that does not compile, fails at run time, or whose program fails never fails or undoes the
IMAP command: the command has already done its work durably; the error is logged and the server
goes on. Scripts and programs run in a worker thread, so other sessions are served meanwhile.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fetchdeliver.imapserver.session import Session

log = logging.getLogger("fetchdeliver.imapserver.imapsieve")

CAUSES = ("APPEND", "COPY", "FLAG")
USER_SCRIPT_ENTRY = "/shared/imapsieve/script"


@dataclass(frozen=True)
class Rule:
    """One `[[imapsieve.mailbox]]` table (Pigeonhole's imapsieve_mailboxN_* settings)."""
    name: str
    causes: tuple[str, ...] = ("APPEND", "COPY")
    before: str | None = None
    after: str | None = None
    from_: str | None = None

    def matches(self, cause: str, mailbox: str, source: str | None) -> bool:
        if cause not in self.causes or not _name_matches(self.name, mailbox):
            return False
        if self.from_ is not None:
            return cause == "COPY" and source is not None and _name_matches(self.from_, source)
        return True


def _name_matches(pattern: str, name: str) -> bool:
    if pattern.upper() == "INBOX":
        return name.upper() == "INBOX"
    return fnmatch.fnmatchcase(name, pattern.replace("[", "[[]"))


@dataclass
class ImapSieveConfig:
    rules: list[Rule] = field(default_factory=list)
    sieve_options: dict = field(default_factory=dict)   # the [sieve] table (pipe_bin_dir, extensions ...)
    expunge_discarded: bool = False
    url: str | None = None
    user_script_dir: str | None = None    # where METADATA /shared/imapsieve/script names are found
    outbound: Any = None                  # outbound.lazy.LazyOutbound with [relay]: redirect, notify

    def scripts_for(self, cause: str, mailbox: str, source: str | None,
                    user_script: str | None = None) -> list[str]:
        rules = [r for r in self.rules if r.matches(cause, mailbox, source)]
        out = [r.before for r in rules if r.before]
        if user_script:
            out.append(user_script)
        out += [r.after for r in rules if r.after]
        return out


# -- the [imapsieve] table ------------------------------------------------------------------------------

RULE_KEYS = ("name", "causes", "before", "after", "from")


def check_rules(v: Any, where: str) -> list[dict]:
    """The `[[imapsieve.mailbox]]` tables: each needs `name`; causes from APPEND, COPY, FLAG."""
    from fetchdeliver import config

    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise ValueError("expected [[imapsieve.mailbox]] tables")
    out = []
    for n, t in enumerate(v, 1):
        unknown = sorted(set(t) - set(RULE_KEYS))
        if unknown:
            raise ValueError(f"rule {n}: unknown key {unknown[0]!r} (known keys: {', '.join(RULE_KEYS)})")
        if not isinstance(t.get("name"), str) or not t["name"]:
            raise ValueError(f"rule {n}: `name` (the mailbox, \"*\" for any) is required")
        causes = t.get("causes", ["APPEND", "COPY"])
        if isinstance(causes, str):
            causes = causes.split()
        if not isinstance(causes, list) or not all(isinstance(c, str) for c in causes):
            raise ValueError(f"rule {n}: causes: expected a list such as [\"COPY\", \"APPEND\"]")
        causes = [c.upper() for c in causes]
        bad = [c for c in causes if c not in CAUSES]
        if bad:
            raise ValueError(f"rule {n}: causes: {bad[0]!r} is not one of {', '.join(CAUSES)}")
        rule = {"name": t["name"], "causes": causes}
        for key in ("before", "after"):
            if key in t:
                try:
                    rule[key] = config.check_path(t[key], where)
                except ValueError as e:
                    raise ValueError(f"rule {n}: {key}: {e}") from None
        if "from" in t:
            if not isinstance(t["from"], str) or not t["from"]:
                raise ValueError(f"rule {n}: from: expected a mailbox name or pattern")
            rule["from"] = t["from"]
        if not rule.get("before") and not rule.get("after"):
            raise ValueError(f"rule {n}: give `before` and/or `after` (the script to run)")
        out.append(rule)
    return out


def config_from(data: dict) -> ImapSieveConfig | None:
    """The ImapSieveConfig of a validated configuration (None without an [imapsieve] table)."""
    table = data.get("imapsieve")
    if table is None:
        return None
    from fetchdeliver.config import Settings
    from fetchdeliver.pipeline import sieve_options

    rules = [Rule(r["name"], tuple(r["causes"]), r.get("before"), r.get("after"), r.get("from"))
             for r in table.get("mailbox", [])]
    outbound = None
    if data.get("relay"):     # redirect / notify / report go into the outbound queue, as in delivery
        from fetchdeliver.outbound.lazy import LazyOutbound

        outbound = LazyOutbound(Settings(data))
    return ImapSieveConfig(rules, sieve_options(Settings(data)), table.get("expunge_discarded", False),
                           table.get("url"), table.get("user_script_dir"), outbound)


# -- running the scripts for an event ----------------------------------------------------------------


def _config(s: Session) -> ImapSieveConfig | None:
    return getattr(s.server.config, "imapsieve", None)


def _user_script(s: Session, cfg: ImapSieveConfig, mailbox: str) -> str | None:
    """The user's script for this mailbox: METADATA /shared/imapsieve/script, when both are there."""
    if not cfg.user_script_dir:
        return None
    try:
        from fetchdeliver.imapserver import metadata
    except ImportError:
        return None
    try:
        name = metadata.lookup(s, mailbox, USER_SCRIPT_ENTRY)
    except Exception as e:   # the metadata file is unreadable: run the admin's scripts anyway
        log.warning("imapsieve: %s: cannot read %s: %s", mailbox, USER_SCRIPT_ENTRY, e)
        return None
    if not name:
        return None
    name = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    if "/" in name or name in (".", ".."):
        log.warning("imapsieve: %s: %s %r is not a plain script name", mailbox, USER_SCRIPT_ENTRY, name)
        return None
    path = os.path.join(cfg.user_script_dir, name if name.endswith(".sieve") else name + ".sieve")
    return path


async def after_append(s: Session, mailbox: str, uids: list[int]) -> None:
    await _event(s, "APPEND", mailbox, uids)


async def after_copy(s: Session, source: str, mailbox: str, uids: list[int]) -> None:
    await _event(s, "COPY", mailbox, uids, source=source)


async def after_flag_change(s: Session, mailbox: str, changes: list[tuple[int, frozenset, frozenset]]) -> None:
    """`changes`: (uid, flags before, flags after) for each message whose flags the client changed."""
    cfg = _config(s)
    if cfg is None or not changes:
        return
    await _event(s, "FLAG", mailbox, [u for u, _, _ in changes],
                 changed={u: sorted(old ^ new) for u, old, new in changes})


async def _event(s: Session, cause: str, mailbox: str, uids: list[int], *, source: str | None = None,
                 changed: dict | None = None) -> None:
    cfg = _config(s)
    if cfg is None or not uids:
        return
    try:
        scripts = cfg.scripts_for(cause, mailbox, source, _user_script(s, cfg, mailbox))
        if not scripts:
            return
        await _run_for(s, cfg, scripts, cause, mailbox, uids, changed or {})
    except Exception:   # never lose or fail the IMAP command over a script
        log.exception("imapsieve: %s into %s: the scripts could not be run", cause, mailbox)


async def _run_for(s: Session, cfg: ImapSieveConfig, scripts: list[str], cause: str, mailbox: str,
                   uids: list[int], changed: dict) -> None:
    from fetchdeliver.storage.base import StorageError

    user = getattr(s.account, "user", "") or ""
    mbox = s.storage.open(mailbox)
    try:
        wanted = set(uids)
        msgs = [m for m in mbox.sync() if m.uid in wanted]
        discarded = []
        for m in msgs:
            try:
                raw = mbox.read(m)
            except StorageError:
                continue    # expunged meanwhile
            answer = await asyncio.to_thread(run_scripts, scripts, raw, cause, mailbox, user,
                                             sorted(m.flags), changed.get(m.uid, []), cfg.sieve_options,
                                             _metadata_source(s), cfg.outbound)
            for mailbox_to, flags, copy in answer.copies:
                try:
                    target = s.storage.open(mailbox_to)
                    try:
                        target.append(copy, [f for f in flags if f.lower() != "\\recent"], None)
                    finally:
                        target.close()
                except StorageError as e:
                    log.warning("imapsieve: %s: fileinto %s failed: %s", mailbox, mailbox_to, e)
            new = frozenset(answer.flags)
            if new != m.flags:
                mbox.set_flags([(m, new)])
                m.flags = new
            if not answer.keep:
                discarded.append(m)
        if discarded and cfg.expunge_discarded:
            mbox.expunge(discarded)
    finally:
        mbox.close()


class Outcome:
    """What the scripts decided for one message (the union of their answers)."""

    __slots__ = ("keep", "flags", "copies", "errors")

    def __init__(self, keep: bool, flags: list[str], copies: list, errors: list[str]) -> None:
        self.keep = keep
        self.flags = flags
        self.copies = copies
        self.errors = errors


def _metadata_source(s: Session):
    """The mboxmetadata/servermetadata lookup for the scripts: the user's METADATA entries."""
    from fetchdeliver.imapserver import metadata

    md = metadata.session_metadata(s)
    if md is None:
        return None

    def source(mailbox: str | None, entry: str) -> str | None:
        try:
            v = md.get(mailbox or "", entry)
        except Exception:
            return None
        return None if v is None else v.decode("utf-8", "replace")
    return source


def run_scripts(scripts: list[str], raw: bytes, cause: str, mailbox: str, user: str, flags: list[str],
                changed_flags: list[str], options: dict, metadata=None, outbound=None) -> Outcome:
    """Run `scripts` in order for one message (in a worker thread: programs may take a while) and
    carry out their pipe actions. Errors are logged, never raised."""
    from fetchdeliver.message import Message
    from fetchdeliver.sieve import SieveEnv
    from fetchdeliver.sieve.imapsieve import ImapEvent, compile_for_events, run_event

    keep = True
    copies: list = []
    errors: list[str] = []
    for path in scripts:
        try:
            script = compile_for_events(path, options)
        except Exception as e:
            log.error("imapsieve: %s (%s in %s): script not run: %s", path, cause, mailbox, e)
            errors.append(str(e))
            continue
        message = Message(raw, "", [user] if "@" in user else [], origin=f"imapsieve {cause} {mailbox}")
        event = ImapEvent(cause, mailbox, user=user, email=user if "@" in user else "",
                          changed_flags=changed_flags, flags=flags)
        try:
            answer = run_event(script, message, event, SieveEnv(message, options=options, auth_user=user,
                                                                       metadata=metadata))
        except Exception as e:
            log.error("imapsieve: %s (%s in %s): run-time error: %s", path, cause, mailbox, e)
            errors.append(str(e))
            continue
        for err in answer.errors:
            log.error("imapsieve: %s (%s in %s): %s", path, cause, mailbox, err)
        errors += answer.errors
        failed = False
        for action in answer.outgoing:
            failed |= not _carry_out(action, message, path, cause, mailbox, user, options, errors, outbound)
        if failed:
            continue   # as Pigeonhole: an action failed, so the script failed: implicit keep, flags as they were
        flags = [f for f in answer.flags if f.lower() != "\\recent"]
        if not answer.keep:
            keep = False
        copies += answer.copies
    return Outcome(keep, flags, copies, errors)


def _carry_out(action, message, path: str, cause: str, mailbox: str, user: str, options: dict,
               errors: list[str], outbound=None) -> bool:
    """Run a pipe action, or queue what redirect/notify send; False when it failed (logged)."""
    from fetchdeliver.errors import DeliveryError

    raw = message.raw
    if action.type != "pipe":
        if outbound is None or action.type not in ("redirect", "notify", "report"):
            log.warning("imapsieve: %s (%s in %s): %s is not carried out for IMAP events%s",
                        path, cause, mailbox, action.type,
                        " without a [relay] (the outbound queue)" if outbound is None else "")
            return action.type in ("notify", "report")   # a redirect not made: keep the message
        try:
            outbound.submit_action(action, message)
        except DeliveryError as e:
            log.error("imapsieve: %s (%s in %s): %s: %s", path, cause, mailbox, action.type, e)
            errors.append(str(e))
            return False
        return True
    from fetchdeliver.delivery.pipe import run_program
    from fetchdeliver.sieve import program_environment

    bin_dir = options.get("pipe_bin_dir")
    if not bin_dir or "/" in action.program or action.program in ("", ".", ".."):
        why = "no [sieve] pipe_bin_dir configured" if not bin_dir else "not a plain program name"
        log.error("imapsieve: %s (%s in %s): pipe %r: %s", path, cause, mailbox, action.program, why)
        errors.append(why)
        return False
    env = program_environment("", "", "", None, user or None)
    env.update({"IMAPSIEVE_CAUSE": cause, "IMAPSIEVE_MAILBOX": mailbox})
    try:
        run_program([os.path.join(bin_dir, action.program), *action.args], raw, env=env,
                    timeout=float(options.get("pipe_timeout", 60)))
    except DeliveryError as e:
        log.error("imapsieve: %s (%s in %s): %s", path, cause, mailbox, e)
        errors.append(str(e))
        return False
    return True
