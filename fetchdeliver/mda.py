"""`fetchdeliver deliver`: the MDA an MTA runs once per message (procmail / dovecot-lda mode).

Start-up time matters here more than anywhere: options are parsed by hand (no
argparse), the config comes from a marshal cache, the compiled Sieve script
from its cache, and nothing heavy is imported unless a rule needs it.
Exit codes (sysexits): 0 delivered, 75 temporary failure (the MTA retries),
77 rejected by a Sieve reject (reason on stderr) or over quota ([quota] tempfail = true: 75),
64 usage, 78 configuration.
"""

from __future__ import annotations

import os
import sys

from fetchdeliver.errors import EX_CONFIG, EX_NOPERM, EX_OK, EX_TEMPFAIL, EX_USAGE

USAGE = ("usage: fetchdeliver deliver [-c CONFIG] [-f SENDER] [-a RECIPIENT] [--rules SCRIPT]\n"
         "                            [--maildir DIR | --mbox FILE] [-m MAILBOX] [-n]\n")

_OPTS = {
    "-c": "config", "--config": "config",
    "-f": "sender", "--from": "sender",
    "-a": "recipient", "--recipient": "recipient",
    "-r": "rules", "--rules": "rules",
    "--maildir": "maildir", "--mbox": "mbox",
    "-m": "mailbox", "--mailbox": "mailbox",
}
_FLAGS = {"-n": "dry_run", "--dry-run": "dry_run", "-h": "help", "--help": "help"}


class UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> dict:
    opts: dict = {"recipient": []}
    i = 0
    while i < len(argv):
        arg = argv[i]
        value = None
        if arg.startswith("--") and "=" in arg:
            arg, value = arg.split("=", 1)
        elif len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and arg[:2] in _OPTS:
            arg, value = arg[:2], arg[2:]
        if arg in _FLAGS:
            opts[_FLAGS[arg]] = True
        elif arg in _OPTS:
            if value is None:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"option {arg} needs a value")
                value = argv[i]
            key = _OPTS[arg]
            if key == "recipient":
                opts["recipient"].append(value)
            else:
                opts[key] = value
        else:
            raise UsageError(f"unknown argument {arg!r}")
        i += 1
    if opts.get("maildir") and opts.get("mbox"):
        raise UsageError("give --maildir or --mbox, not both")
    return opts


def split_from_line(raw: bytes) -> tuple[bytes, str | None]:
    """Drop a leading mbox `From sender date` line (Postfix's local(8) and many MTAs prepend one).

    Returns (the message without that line, the sender it names or None when there was none).
    `MAILER-DAEMON` stands for the null sender. Everything after the line is kept byte for byte,
    as procmail and dovecot-lda do.
    """
    if not raw.startswith(b"From "):
        return raw, None
    nl = raw.find(b"\n")
    if nl < 0:
        return raw, None  # only one line: not an envelope line in front of a message
    words = raw[5:nl].split()
    sender = words[0].decode("utf-8", "surrogateescape") if words else ""
    if sender in ("MAILER-DAEMON", "<>"):
        sender = ""
    return raw[nl + 1:], sender


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="fetchdeliver deliver: %(levelname)s: %(message)s",
                        stream=sys.stderr)


def main(argv: list[str]) -> int:
    try:
        opts = parse_args(argv)
    except UsageError as e:
        sys.stderr.write(f"fetchdeliver deliver: {e}\n{USAGE}")
        return EX_USAGE
    if opts.get("help"):
        sys.stdout.write(USAGE)
        return EX_OK
    try:
        return _deliver(opts)
    except SystemExit:
        raise
    except BaseException as e:  # never let a bug turn into a lost or bounced message
        try:
            _setup_logging()
            import logging

            logging.getLogger(__name__).exception("unexpected error, asking the MTA to retry: %s", e)
        except BaseException:
            pass
        return EX_TEMPFAIL


def _deliver(opts: dict) -> int:
    from fetchdeliver.config import Settings, default_config_path, load
    from fetchdeliver.errors import ConfigError

    config_path = opts.get("config")
    data: dict = {}
    try:
        if config_path:
            data = load(config_path)
        elif not (opts.get("maildir") or opts.get("mbox")):
            config_path = default_config_path()
            data = load(config_path)
        else:
            default = default_config_path()
            if os.path.exists(default):
                config_path = default
                data = load(default)
    except ConfigError as e:
        sys.stderr.write(f"fetchdeliver deliver: {e}\n")
        return EX_CONFIG
    settings = Settings(data, config_path)

    raw = sys.stdin.buffer.read()
    raw, from_line_sender = split_from_line(raw)

    from fetchdeliver.message import Message

    sender = opts.get("sender")
    if sender is None:
        sender = from_line_sender if from_line_sender is not None else os.environ.get("SENDER", "")
    if sender in ("<>", "MAILER-DAEMON"):
        sender = ""
    recipients = opts["recipient"] or [r for r in [os.environ.get("RECIPIENT") or os.environ.get("USER")] if r]
    message = Message(raw, sender=sender.strip("<>"), recipients=recipients,
                      original_recipient=os.environ.get("ORIGINAL_RECIPIENT") or None, origin="deliver")

    from fetchdeliver import engine
    from fetchdeliver.pipeline import build_context

    try:
        ctx = build_context(settings, maildir=opts.get("maildir"), mbox=opts.get("mbox"),
                            rules=opts.get("rules"), default_mailbox=opts.get("mailbox"),
                            dry_run=bool(opts.get("dry_run")),
                            # The delivery log costs the MDA a state database open and ~4 fsyncs per
                            # message (benchmarks/mda_pipe.py): only with [log] mda = true.
                            delivery_log=bool(data.get("log", {}).get("mda", False)),
                            quota_user=(recipients[0] if recipients else None),
                            database_rules=not opts.get("rules"))
    except ConfigError as e:
        sys.stderr.write(f"fetchdeliver deliver: {e}\n")
        return EX_CONFIG
    if ctx.script_error:
        _setup_logging()  # the engine will log why the rules were not used
    # Redirect / vacation / notify go into the outbound queue (durable before we exit 0); the
    # daemon, `fetchdeliver lmtp` or `fetchdeliver queue flush` sends them. The queue's modules
    # are imported only when a rule sends mail (a dry run never does).
    from fetchdeliver.outbound.lazy import LazyOutbound

    ctx.outbound = LazyOutbound(settings)
    outcome = engine.process(message, ctx)
    if ctx.dry_run:  # say what the real run would do
        verb = "would reject" if outcome.status == engine.REJECTED else "would deliver to"
        sys.stdout.write(f"{verb} {', '.join(outcome.where()) or 'nowhere (discarded)'}\n")
    if outcome.status == engine.DELIVERED:
        return EX_OK
    if outcome.status == engine.REJECTED:
        sys.stderr.write(f"{outcome.reason}\n")
        return EX_NOPERM
    if outcome.quota is not None:   # [quota] tempfail decides: 75 the MTA retries, 77 it bounces
        kind = "temporary failure" if outcome.quota.temporary else "rejected"
        sys.stderr.write(f"fetchdeliver deliver: {kind}: {outcome.quota}\n")
        return EX_TEMPFAIL if outcome.quota.temporary else EX_NOPERM
    for err in outcome.errors[-1:]:
        sys.stderr.write(f"fetchdeliver deliver: temporary failure: {err}\n")
    return EX_TEMPFAIL
