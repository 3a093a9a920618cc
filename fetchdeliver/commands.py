"""Small sub-commands that do not deserve a module of their own, and the argparse arguments of
commands whose module cli.py does not take them from (see the registry in cli.py)."""

from __future__ import annotations

import sys

from fetchdeliver.errors import EX_OK

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

CONFIG_HELP = "config file (default: $XDG_CONFIG_HOME/fetchdeliver/config.toml)"


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    cc = csub.add_parser("check", help="validate the configuration file")
    cc.add_argument("-c", "--config", help=CONFIG_HELP)


def config_main(args: argparse.Namespace) -> int:
    """`fetchdeliver config check`; `fetchdeliver config` alone prints the help."""
    if args.config_command != "check":
        return _print_help(args)
    return config_check(args.config)


def _print_help(args: argparse.Namespace) -> int:
    """A command given without its ACTION: its help on stdout, exit 0 (as `COMMAND --help`)."""
    args.command_parser.print_help()
    return EX_OK


def config_check(path: str | None) -> int:
    """`fetchdeliver config check`: validate the config; print every problem with file and key."""
    from fetchdeliver.config import ConfigError, load_settings, report_config_error

    try:
        settings = load_settings(path, cache=False)
    except ConfigError as e:
        return report_config_error("error", e)
    data, file = settings.data, settings.file
    problems = rules_problems(data)
    for key, text in problems:
        print(f"error: {file}: {key}: {text}", file=sys.stderr)
    if problems:
        from fetchdeliver.errors import EX_CONFIG

        return EX_CONFIG
    accounts = data.get("account", [])
    print(f"{file}: OK ({len(accounts)} account(s))")
    return EX_OK


def add_sieve_arguments(p: argparse.ArgumentParser) -> None:
    ssub = p.add_subparsers(dest="sieve_command", metavar="ACTION")
    sc = ssub.add_parser("check", help="compile scripts and report errors")
    sc.add_argument("files", nargs="+", metavar="FILE")
    st = ssub.add_parser("test", help="show what a script would do with a message (no action is performed)")
    st.add_argument("script")
    st.add_argument("message")
    st.add_argument("--json", action="store_true", help="print one JSON object {\"actions\": [...]}")
    st.add_argument("--trace", action="store_true", help="show which tests matched, line by line")
    st.add_argument("--from", dest="sender", metavar="ADDR", help="envelope sender")
    st.add_argument("--to", dest="recipient", metavar="ADDR", help="envelope recipient")
    st.add_argument("-c", "--config", help="config file for [sieve] options")
    sts = ssub.add_parser("testsuite", help="run Pigeonhole testsuite (.svtest) files with this interpreter")
    sts.add_argument("files", nargs="*", metavar="FILE")
    sts.add_argument("-F", "--expect-failure", action="store_true",
                     help="every test of the FILEs must fail (Pigeonhole's testsuite -F)")
    sts.add_argument("--makefile", metavar="MAKEFILE_AM",
                     help="also run every file Pigeonhole's Makefile.am lists for `make test`")
    sts.add_argument("--plugins", action="store_true", help="with --makefile: the extprograms files too")
    sts.add_argument("-v", "--verbose", action="store_true", help="print each test's outcome")


def sieve_main(args: argparse.Namespace) -> int:
    """`fetchdeliver sieve check|test|testsuite` (the bodies are in fetchdeliver.sieve.tool)."""
    from fetchdeliver.sieve import tool

    if args.sieve_command == "check":
        return tool.check_main(args.files)
    if args.sieve_command == "test":
        return tool.test_main(args.script, args.message, json_out=args.json, trace=args.trace,
                              sender=args.sender, recipient=args.recipient, config=args.config)
    if args.sieve_command == "testsuite":
        from fetchdeliver.sieve.testsuite.command import main as testsuite_main

        return testsuite_main(args.files, expect_failure=args.expect_failure, makefile=args.makefile,
                              plugins=args.plugins, verbose=args.verbose)
    return _print_help(args)


def add_filter_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", required=True, metavar="SCRIPT")
    p.add_argument("maildir", metavar="MAILDIR")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("-c", "--config")


def filter_main(args: argparse.Namespace) -> int:
    from fetchdeliver.sieve import tool

    return tool.filter_main(args.rules, args.maildir, dry_run=args.dry_run, config=args.config)


def add_fetch_arguments(p: argparse.ArgumentParser) -> None:
    """`fetchdeliver fetch` (run by fetchdeliver.fetch.main)."""
    p.add_argument("-c", "--config")
    p.add_argument("accounts", nargs="*", metavar="ACCOUNT")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--verbose", action="store_true")


class _OneOf:
    """Stands in for argparse's sub-parsers action: hands out `parser` for the command `name` and a
    throw-away parser for any other. imapserver.command.add_arguments(sub) adds both `imap` and
    `passwd`; the registry adds one command per sub-parser (to go when imapserver/command.py has one
    function per command; that package is being restructured in #11)."""

    def __init__(self, name: str, parser: argparse.ArgumentParser) -> None:
        self.name = name
        self.parser = parser

    def add_parser(self, name: str, **kwargs: object) -> argparse.ArgumentParser:
        import argparse

        return self.parser if name == self.name else argparse.ArgumentParser(prog=name)


def add_imap_arguments(p: argparse.ArgumentParser) -> None:
    from fetchdeliver.imapserver import command

    command.add_arguments(_OneOf("imap", p))


def add_passwd_arguments(p: argparse.ArgumentParser) -> None:
    from fetchdeliver.imapserver import command

    command.add_arguments(_OneOf("passwd", p))


def rules_files(data: dict) -> list[tuple[str, str]]:
    """Every Sieve script the config names, as (key, path): delivery.rules, account[i].rules, ..."""
    out = []
    rules = (data.get("delivery") or {}).get("rules")
    if rules:
        out.append(("delivery.rules", rules))
    for table in ("account", "recipient"):
        for i, item in enumerate(data.get(table) or []):
            if item.get("rules"):
                out.append((f"{table}[{i}].rules", item["rules"]))
    return out


def rules_problems(data: dict) -> list[tuple[str, str]]:
    """(key, what is wrong) for each rules file that is missing, unreadable or does not compile.

    Delivery keeps every message in INBOX when its rules cannot be used (no mail is lost), so a
    missing file shows nowhere else: `config check` fails on it and the servers log it at start.
    """
    from fetchdeliver import sieve
    from fetchdeliver.pipeline import no_active_script

    seen: dict[str, str | None] = {}
    out: list[tuple[str, str]] = []
    for key, path in rules_files(data):
        if no_active_script(path):   # no active ManageSieve script yet: mail goes to INBOX, no error
            continue
        if path not in seen:
            problem = None
            try:
                sieve.compile_file(path, use_cache=False, options=data.get("sieve") or {})
            except OSError as e:
                problem = f"cannot read the rules file {path}: {e.strerror or e}"
            except Exception as e:  # report, do not crash: the user asked for a check
                problem = str(e)
            seen[path] = problem
        problem = seen[path]
        if problem:
            out.append((key, problem))
    return out
