"""The `fetchdeliver` command: one registry of sub-commands, each imported only when it runs.

A command is registered with one line (see "Adding a command" in docs/extending.md):

    register("lmtp", "accept mail from an MTA over LMTP (RFC 2033)", "fetchdeliver.lmtp_command")

which names its module and, in it, the function that adds its arguments to an argparse parser
(`add_arguments(p)` unless told otherwise) and the function that runs it (`main(args) -> exit code`).
Either function may live in another module, written "module:function". Only the chosen command's
module is imported, and only its arguments are added; `fetchdeliver --help` lists every command
from the registry without importing any of them.

A `raw` command gets its argument list as it was given and parses it itself: `deliver`, the MDA an
MTA starts once per message, runs without argparse and without importing any other command.

A ConfigError that escapes a command is printed here (file and key named) and exits 78 (EX_CONFIG).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, Callable


class Command:
    """One sub-command: its help line and where its code lives ("module" or "module:function")."""

    __slots__ = ("name", "help", "module", "arguments", "run", "raw")

    def __init__(self, name: str, help: str, module: str, arguments: str, run: str, raw: bool) -> None:
        self.name = name
        self.help = help
        self.module = module
        self.arguments = arguments
        self.run = run
        self.raw = raw

    def _resolve(self, ref: str) -> Callable[..., Any]:
        module, _, func = ref.rpartition(":") if ":" in ref else (self.module, ":", ref)
        __import__(module)
        return getattr(sys.modules[module], func)

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        """Import the command's module and add its arguments to `p` (its sub-parser)."""
        self._resolve(self.arguments)(p)

    def runner(self) -> Callable[..., int]:
        """The function that runs the command: f(args) -> exit code (raw commands: f(argv))."""
        return self._resolve(self.run)


COMMANDS: dict[str, Command] = {}


def register(name: str, help: str, module: str, *, arguments: str = "add_arguments", run: str = "main",
             raw: bool = False) -> None:
    """Add the sub-command `name` (listed in `fetchdeliver --help` in registration order).

    `arguments` and `run` are function names in `module`, or "other.module:function"."""
    COMMANDS[name] = Command(name, help, module, arguments, run, raw)


# The commands, in the order `fetchdeliver --help` lists them.
register("deliver", "MDA mode: deliver one message from stdin (like procmail)", "fetchdeliver.mda", raw=True)
register("config", "configuration tools", "fetchdeliver.commands",
         arguments="add_config_arguments", run="config_main")
register("sieve", "Sieve tools: check and test scripts", "fetchdeliver.commands",
         arguments="add_sieve_arguments", run="sieve_main")
register("filter", "apply a Sieve script to mail already in a Maildir", "fetchdeliver.commands",
         arguments="add_filter_arguments", run="filter_main")
register("fetch", "fetch mail from the configured POP3/IMAP accounts once", "fetchdeliver.fetch",
         arguments="fetchdeliver.commands:add_fetch_arguments")
register("lmtp", "accept mail from an MTA over LMTP (RFC 2033)", "fetchdeliver.lmtp_command")
register("queue", "the outbound SMTP queue: list, flush, remove", "fetchdeliver.outbound.command")
register("imap", "serve the delivered mail over IMAP", "fetchdeliver.imapserver.command",
         arguments="fetchdeliver.commands:add_imap_arguments")
register("passwd", "add or change a user in the IMAP passwd-file (hashed)", "fetchdeliver.imapserver.command",
         arguments="fetchdeliver.commands:add_passwd_arguments", run="passwd_main")
register("managesieve", "let users edit their Sieve rules (RFC 5804)", "fetchdeliver.managesieve.command")
register("web", "the web page: accounts, deliveries, queue, rules", "fetchdeliver.web.command")
register("log", "the latest deliveries with their Sieve trace", "fetchdeliver.deliverylog")
register("pop3", "serve the delivered mail over POP3", "fetchdeliver.pop3server.command")
register("submission", "let users' mail clients send (RFC 6409, port 587/465)", "fetchdeliver.submission.command")
register("convert", "convert procmailrc / maildrop / fetchmailrc / getmailrc", "fetchdeliver.convert.command")
register("daemon", "run everything configured, until SIGTERM", "fetchdeliver.daemon.command",
         arguments="add_daemon_arguments", run="daemon_main")
register("status", "accounts, queue and listeners of the daemon", "fetchdeliver.daemon.command",
         arguments="add_status_arguments", run="status_main")
register("db", "the PostgreSQL database: migrate the schema", "fetchdeliver.storage.command",
         arguments="add_db_arguments", run="db_main")
register("store", "mail stores: copy between maildir/mbox/postgresql", "fetchdeliver.storage.command",
         arguments="add_store_arguments", run="store_main")
register("oauth2", "OAuth2: authorize an account once (device code or browser redirect)",
         "fetchdeliver.oauth2_authorize")
register("demo", "the whole loop on samples: IMAP server, fetch, Sieve, Maildir served over IMAP", "fetchdeliver.demo")


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    # The MDA is the hot path: no argparse, no other imports.
    if argv:
        command = COMMANDS.get(argv[0])
        if command is not None and command.raw:
            return command.runner()(argv[1:])
    return _main_argparse(argv)


def _command_index(argv: list[str]) -> int | None:
    """Where the command name is: the first argument that is not an option (the global options
    -v/--verbose, --version and -h take no value)."""
    for i, arg in enumerate(argv):
        if arg == "--":
            return i + 1 if i + 1 < len(argv) else None
        if not arg.startswith("-"):
            return i
    return None


def build_parser(only: str | None = "", *, parsers: dict[str, argparse.ArgumentParser] | None = None
                 ) -> argparse.ArgumentParser:
    """The argparse parser: every command listed with its help line; the arguments of every command
    (only="", the default), of the command `only`, or of none (only=None). `parsers` collects the
    sub-parsers by command name."""
    import argparse

    from fetchdeliver import __version__

    p = argparse.ArgumentParser(
        prog="fetchdeliver",
        description="Fetch mail (POP3/IMAP), filter it with Sieve, deliver it to Maildir/mbox.")
    p.add_argument("--version", action="version", version=f"fetchdeliver {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        sp = sub.add_parser(name, help=command.help)
        if only == "" or only == name:
            command.add_arguments(sp)
        if parsers is not None:
            parsers[name] = sp
    return p


def _setup_logging(verbose: int) -> None:
    import logging

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="fetchdeliver: %(levelname)s: %(message)s")


def _main_argparse(argv: list[str]) -> int:
    i = _command_index(argv)
    name = argv[i] if i is not None else None
    command = COMMANDS.get(name) if name is not None else None
    parsers: dict[str, argparse.ArgumentParser] = {}
    parser = build_parser(command.name if command is not None and not command.raw else None, parsers=parsers)
    if command is not None and command.raw:
        # `fetchdeliver -v deliver ...`: the global options here, the command's own after its name.
        assert i is not None
        args = parser.parse_args(argv[:i])
        _setup_logging(int(args.verbose or 0))
        return command.runner()(argv[i + 1:])
    args = parser.parse_args(argv)
    _setup_logging(int(args.verbose or 0))
    if command is None or args.command is None:
        parser.print_help()
        return 64
    args.command_parser = parsers[command.name]  # for commands that print their own help
    from fetchdeliver.errors import ConfigError

    try:
        return command.runner()(args)
    except ConfigError as e:
        from fetchdeliver.config import report_config_error

        return report_config_error(f"fetchdeliver {command.name}", e)
