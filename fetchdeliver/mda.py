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

from fetchdeliver.errors import EX_NOPERM, EX_OK, EX_TEMPFAIL, EX_USAGE, UsageError

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


def add_arguments(p) -> None:
    """The options parse_args() reads, for `fetchdeliver --help` and the registry's parser test
    (`fetchdeliver deliver` itself never builds an argparse parser: start-up time)."""
    p.add_argument("-c", "--config")
    p.add_argument("-f", "--from", dest="sender")
    p.add_argument("-a", "--recipient", action="append")
    p.add_argument("-r", "--rules")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--maildir")
    g.add_argument("--mbox")
    p.add_argument("-m", "--mailbox", help="default mailbox instead of INBOX")
    p.add_argument("-n", "--dry-run", action="store_true")


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
    from fetchdeliver.config import load_settings, report_config_error
    from fetchdeliver.errors import ConfigError

    try:
        # With --maildir/--mbox the default config file is optional (a named one never is).
        settings = load_settings(opts.get("config"), required=not (opts.get("maildir") or opts.get("mbox")))
    except ConfigError as e:
        return report_config_error("fetchdeliver deliver", e)

    from fetchdeliver.message import Message
    from fetchdeliver.sources.stdin import StdinSource

    # The message and its envelope (options, the leading From line, the environment).
    source = StdinSource(sys.stdin.buffer, sender=opts.get("sender"), recipients=opts["recipient"])
    (fetched,) = next(source.batches())
    envelope = fetched.envelope
    assert envelope is not None     # the stdin source always gives one
    message = Message(fetched.raw, sender=envelope.sender, recipients=envelope.recipients,
                      original_recipient=os.environ.get("ORIGINAL_RECIPIENT") or None, origin="deliver")

    from fetchdeliver import engine
    from fetchdeliver.pipeline import build_context

    try:
        ctx = build_context(settings, maildir=opts.get("maildir"), mbox=opts.get("mbox"),
                            rules=opts.get("rules"), default_mailbox=opts.get("mailbox"),
                            dry_run=bool(opts.get("dry_run")),
                            # The delivery log costs the MDA a state database open and ~4 fsyncs per
                            # message (benchmarks/mda_pipe.py): only with [log] mda = true.
                            delivery_log=bool(settings.data.get("log", {}).get("mda", False)),
                            quota_user=(envelope.recipients[0] if envelope.recipients else None),
                            database_rules=not opts.get("rules"))
    except ConfigError as e:
        return report_config_error("fetchdeliver deliver", e)
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
        source.ack([fetched.handle])       # durable: exit 0 tells the MTA it may forget the message
        return source.exit_status
    if outcome.status == engine.REJECTED:
        sys.stderr.write(f"{outcome.reason}\n")
        return EX_NOPERM                   # the MTA bounces it with the reason
    source.release([fetched.handle])       # the MTA keeps it and retries
    if outcome.quota is not None:   # [quota] tempfail decides: 75 the MTA retries, 77 it bounces
        kind = "temporary failure" if outcome.quota.temporary else "rejected"
        sys.stderr.write(f"fetchdeliver deliver: {kind}: {outcome.quota}\n")
        return EX_TEMPFAIL if outcome.quota.temporary else EX_NOPERM
    for err in outcome.errors[-1:]:
        sys.stderr.write(f"fetchdeliver deliver: temporary failure: {err}\n")
    return source.exit_status
