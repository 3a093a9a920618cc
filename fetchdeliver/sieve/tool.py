"""`fetchdeliver sieve check|test` and `filter`: the command bodies (cli.py wires argparse)."""

from __future__ import annotations

import sys

from fetchdeliver.errors import FetchdeliverError

DEFAULT_SENDER = "sender@example.com"
DEFAULT_RECIPIENT = "recipient@example.com"

SYSTEM_FLAGS = ("\\answered", "\\flagged", "\\deleted", "\\seen", "\\draft")


def format_flags(flags) -> str:
    """Flags the way Pigeonhole prints them: system flags lower-cased in IMAP order, then keywords."""
    lowered = {f.lower() for f in flags}
    system = [f for f in SYSTEM_FLAGS if f in lowered]
    keywords = [f for f in flags if f.lower() not in SYSTEM_FLAGS]
    return " ".join(system + keywords)


def _store_lines(a) -> list[str]:
    lines = [f" * store message in folder: {a.mailbox}"]
    if a.copy:
        lines.append("        + preserve implicit keep")
    if a.create:
        lines.append("        + create mailbox if it does not exist")
    if a.flags:
        lines.append(f"        + add IMAP flags: {format_flags(a.flags)}")
    return lines


def describe(action) -> list[str]:
    """sieve-test's lines for one action."""
    t = action.type
    if t in ("keep", "fileinto"):
        return _store_lines(action)
    if t == "redirect":
        lines = [f" * redirect message to: <{action.address}>"]
        if action.copy:
            lines.append("        + preserve implicit keep")
        return lines
    if t == "discard":
        return [" * discard"]
    if t in ("reject", "ereject"):
        return [f" * reject message with reason: {action.reason}"]
    if t == "vacation":
        lines = [" * send vacation message:",
                 f"    => seconds : {action.seconds}"]
        if action.subject is not None:
            lines.append(f"    => subject : {action.subject}")
        if action.from_:
            lines.append(f"    => from    : {action.from_}")
        if action.handle:
            lines.append(f"    => handle  : {action.handle}")
        lines.append("")
        lines.append("START MESSAGE")
        lines.append(action.reason.replace("\r\n", "\n").rstrip("\n"))
        lines.append("END MESSAGE")
        return lines
    if t == "notify":
        lines = [f" * send notification with method '{action.method.split(':', 1)[0]}:':",
                 f"    => importance   : {action.importance or '2'}"]
        if action.message:
            lines.append(f"    => subject      : {action.message}")
        if action.from_:
            lines.append(f"    => from         : {action.from_}")
        lines.append("    => recipients   :")
        to = action.method.split(":", 1)[1].split("?", 1)[0]
        for r in (x.strip() for x in to.split(",")):
            if r:
                lines.append(f"       + To: {r}")
        lines.append("")
        return lines
    if t in ("pipe", "filter", "execute"):
        args = " ".join(repr(x) for x in action.args)
        verb = {"pipe": "pipe message to external program",
                "filter": "filter message through external program",
                "execute": "execute external program"}[t]
        return [f" * {verb} '{action.program}'" + (f" {args}" if args else "")]
    return [f" * {t}"]


def merge_duplicates(actions: list) -> list:
    """Actions as Pigeonhole lists them: one store per folder (flags united), one redirect per address."""
    out: list = []
    stores: dict = {}
    seen: set = set()
    for a in actions:
        if a.type in ("keep", "fileinto"):
            prev = stores.get(a.mailbox)
            if prev is not None:
                for f in a.flags:
                    if f.lower() not in {x.lower() for x in prev.flags}:
                        prev.flags.append(f)
                continue
            from fetchdeliver.actions import Store

            a = Store(a.mailbox, a.flags, copy=a.copy, implicit=a.implicit, create=a.create, kind=a.type)
            stores[a.mailbox] = a
        elif a.type in ("redirect", "discard"):
            key = (a.type, getattr(a, "address", "").lower())
            if key in seen:
                continue
            seen.add(key)
        out.append(a)
    return out


def _load(script_path: str, options: dict | None):
    from fetchdeliver.sieve import compile_file

    # The same content-hash cache as the MDA (a stale entry cannot be used: the key is the
    # script's bytes and options, and every include is re-hashed), like Pigeonhole's .svbin.
    return compile_file(script_path, options=options)


def _message(raw: bytes, sender: str | None, recipient: str | None):
    from fetchdeliver.message import Message

    return Message(raw, sender if sender is not None else DEFAULT_SENDER,
                   [recipient if recipient is not None else DEFAULT_RECIPIENT])


def _env(message, options: dict | None, trace: bool = False):
    from fetchdeliver.sieve import SieveEnv

    opts = dict(options or {})
    kwargs = {}
    for k in ("now", "timezone", "auth_user", "duplicate_seen", "mailbox_exists"):
        if k in opts:
            kwargs[k] = opts.pop(k)
    if isinstance(kwargs.get("timezone"), str):
        del kwargs["timezone"]  # a TZ name: the caller sets TZ for the process (as for sieve-test)
    if "mailboxes" in opts and "mailbox_exists" not in kwargs:
        names = set(opts.pop("mailboxes"))
        kwargs["mailbox_exists"] = lambda name: name.upper() == "INBOX" or name in names
    return SieveEnv(message, options=opts, trace=trace, **kwargs)


def test_json(script_path: str, message_bytes: bytes, *, sender: str | None = None,
              recipient: str | None = None, env_options: dict | None = None) -> dict:
    """Run a script on a message; {"actions": [...], "errors": [...]}. Compile errors raise
    SieveCompileError. env_options may also hold now, timezone, auth_user and callbacks."""
    from fetchdeliver.sieve import run

    opts = dict(env_options or {})
    script = _load(script_path, opts)
    message = _message(message_bytes, sender, recipient)
    result = run(script, message, _env(message, opts))
    return {"actions": [a.to_json() for a in result.actions], "errors": list(result.errors)}


def _config_options(config: str | None) -> dict:
    if not config:
        return {}
    from fetchdeliver.config import load

    return dict(load(config).get("sieve", {}))


def test_main(script: str, message_path: str, *, json_out: bool = False, trace: bool = False,
              sender: str | None = None, recipient: str | None = None, config: str | None = None) -> int:
    """Print what `script` would do with the message (like Pigeonhole's sieve-test)."""
    from fetchdeliver.sieve import run
    from fetchdeliver.sieve.errors import SieveCompileError

    try:
        options = _config_options(config)
        compiled = _load(script, options)
    except SieveCompileError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    except (OSError, FetchdeliverError) as e:
        sys.stderr.write(f"fetchdeliver sieve test: {e}\n")
        return 1
    except Exception as e:  # a compiler bug is reported, never a traceback
        sys.stderr.write(f"{script}: error: internal error while compiling: {type(e).__name__}: {e}\n")
        return 1
    try:
        with open(message_path, "rb") as f:
            raw = f.read()
    except OSError as e:
        sys.stderr.write(f"fetchdeliver sieve test: cannot read {message_path}: {e.strerror}\n")
        return 1
    message = _message(raw, sender, recipient)
    result = run(compiled, message, _env(message, options, trace))
    for err in result.errors:
        sys.stderr.write(f"{err}\n")
    if json_out:
        import json

        sys.stdout.write(json.dumps({"actions": [a.to_json() for a in result.actions],
                                     "errors": list(result.errors)}) + "\n")
        return 0
    out: list[str] = []
    if trace:
        out.extend(result.trace)
    explicit = merge_duplicates([a for a in result.actions if not getattr(a, "implicit", False)])
    implicit = [a for a in result.actions if getattr(a, "implicit", False)]
    out += ["", "Performed actions:", ""]
    if explicit:
        for a in explicit:
            out.extend(describe(a))
    else:
        out.append("  (none)")
    out += ["", "Implicit keep:", ""]
    if implicit:
        for a in implicit:
            out.extend(describe(a))
    else:
        out.append("  (none)")
    out.append("")
    sys.stdout.write("\n".join(out) + "\n")
    return 1 if result.errors else 0


def check_main(files: list[str]) -> int:
    """Compile each file; print every error; 0 when all compile."""
    from fetchdeliver.sieve import compile_file
    from fetchdeliver.sieve.errors import SieveCompileError

    status = 0
    for path in files:
        try:
            compile_file(path, use_cache=False)
            sys.stdout.write(f"{path}: OK\n")
        except SieveCompileError as e:
            sys.stderr.write(f"{e}\n")
            status = 1
        except OSError as e:
            sys.stderr.write(f"{path}: error: cannot read: {e.strerror}\n")
            status = 1
        except Exception as e:  # a compiler bug is reported, never a traceback
            sys.stderr.write(f"{path}: error: internal error while compiling: {type(e).__name__}: {e}\n")
            status = 1
    return status


def filter_main(rules: str, maildir: str, dry_run: bool = False, config: str | None = None) -> int:
    """Not implemented yet: applying rules to mail already in a Maildir."""
    sys.stderr.write("fetchdeliver filter: not implemented yet\n")
    return 69
