"""The `fetchdeliver` command: one sub-command per job, each imported only when it runs."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    # The MDA is the hot path: no argparse, no other imports.
    if argv and argv[0] == "deliver":
        from fetchdeliver.mda import main as deliver_main

        return deliver_main(argv[1:])
    return _main_argparse(argv)


def _build_parser():
    import argparse

    from fetchdeliver import __version__

    p = argparse.ArgumentParser(
        prog="fetchdeliver",
        description="Fetch mail (POP3/IMAP), filter it with Sieve, deliver it to Maildir/mbox.")
    p.add_argument("--version", action="version", version=f"fetchdeliver {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("deliver", help="MDA mode: deliver one message from stdin (like procmail)")
    d.add_argument("-c", "--config")
    d.add_argument("-f", "--from", dest="sender")
    d.add_argument("-a", "--recipient", action="append")
    d.add_argument("-r", "--rules")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--maildir")
    g.add_argument("--mbox")
    d.add_argument("-m", "--mailbox", help="default mailbox instead of INBOX")
    d.add_argument("-n", "--dry-run", action="store_true")

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_command", metavar="ACTION")
    cc = csub.add_parser("check", help="validate the configuration file")
    cc.add_argument("-c", "--config", help="config file (default: $XDG_CONFIG_HOME/fetchdeliver/config.toml)")

    s = sub.add_parser("sieve", help="Sieve tools: check and test scripts")
    ssub = s.add_subparsers(dest="sieve_command", metavar="ACTION")
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

    f = sub.add_parser("filter", help="apply a Sieve script to mail already in a Maildir")
    f.add_argument("--rules", required=True, metavar="SCRIPT")
    f.add_argument("maildir", metavar="MAILDIR")
    f.add_argument("--dry-run", action="store_true")
    f.add_argument("-c", "--config")

    fe = sub.add_parser("fetch", help="fetch mail from the configured POP3/IMAP accounts once")
    fe.add_argument("-c", "--config")
    fe.add_argument("accounts", nargs="*", metavar="ACCOUNT")
    fe.add_argument("--dry-run", action="store_true")
    fe.add_argument("--verbose", action="store_true")

    from fetchdeliver import lmtp_command
    from fetchdeliver.imapserver import command as imap_command
    from fetchdeliver.outbound import command as queue_command

    lmtp_command.add_arguments(sub.add_parser("lmtp", help="accept mail from an MTA over LMTP (RFC 2033)"))
    queue_command.add_arguments(sub.add_parser("queue", help="the outbound SMTP queue: list, flush, remove"))
    imap_command.add_arguments(sub)  # `imap` and `passwd`
    from fetchdeliver.managesieve import command as managesieve_command

    managesieve_command.add_arguments(sub.add_parser("managesieve",
                                                     help="let users edit their Sieve rules (RFC 5804)"))
    from fetchdeliver import deliverylog
    from fetchdeliver.web import command as web_command

    web_command.add_arguments(sub.add_parser("web", help="the web page: accounts, deliveries, queue, rules"))
    deliverylog.add_arguments(sub.add_parser("log", help="the latest deliveries with their Sieve trace"))
    from fetchdeliver.pop3server import command as pop3_command

    pop3_command.add_arguments(sub.add_parser("pop3", help="serve the delivered mail over POP3"))
    from fetchdeliver.submission import command as submission_command

    submission_command.add_arguments(sub.add_parser("submission",
                                                    help="let users' mail clients send (RFC 6409, port 587/465)"))
    from fetchdeliver.convert import command as convert_command
    from fetchdeliver.daemon import command as daemon_command

    convert_command.add_arguments(sub.add_parser("convert", help="convert procmailrc / maildrop / fetchmailrc / getmailrc"))
    daemon_command.add_daemon_arguments(sub.add_parser("daemon", help="run everything configured, until SIGTERM"))
    daemon_command.add_status_arguments(sub.add_parser("status", help="accounts, queue and listeners of the daemon"))

    from fetchdeliver.storage import command as storage_command

    storage_command.add_db_arguments(sub.add_parser("db", help="the PostgreSQL database: migrate the schema"))
    storage_command.add_store_arguments(sub.add_parser("store", help="mail stores: copy between maildir/mbox/postgresql"))

    o = sub.add_parser("oauth2", help="OAuth2: authorize an account once (device code or browser redirect)")
    osub = o.add_subparsers(dest="oauth2_command", metavar="COMMAND")
    oa = osub.add_parser("authorize", help="sign in once and store the account's OAuth2 refresh token")
    oa.add_argument("account", metavar="ACCOUNT")
    oa.add_argument("-c", "--config")
    oa.add_argument("--method", choices=("device", "loopback"),
                    help="device code (RFC 8628) or browser redirect to 127.0.0.1 with PKCE (RFC 8252); "
                         "default: device where the provider offers it for mail, else loopback")
    oa.add_argument("--no-browser", action="store_true", help="only print the URL (loopback)")
    oa.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the sign-in (default 600)")

    dm = sub.add_parser("demo", help="the whole loop on samples: IMAP server, fetch, Sieve, Maildir served over IMAP")
    dm.add_argument("--dir", help="where to create the demo mail (default: a new temporary folder)")
    dm.add_argument("--once", action="store_true", help="fetch and filter the samples once, print the summary and exit")
    return p


def _setup_logging(verbose: int) -> None:
    import logging

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="fetchdeliver: %(levelname)s: %(message)s")


def _main_argparse(argv: list[str]) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    _setup_logging(int(args.verbose or 0))
    cmd = args.command
    if cmd is None:
        parser.print_help()
        return 64
    if cmd == "config":
        if args.config_command != "check":
            parser.parse_args(["config", "--help"])
        from fetchdeliver.commands import config_check

        return config_check(args.config)
    if cmd == "sieve":
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
        parser.parse_args(["sieve", "--help"])
    if cmd == "filter":
        from fetchdeliver.sieve import tool

        return tool.filter_main(args.rules, args.maildir, dry_run=args.dry_run, config=args.config)
    if cmd == "fetch":
        from fetchdeliver import fetch

        return fetch.main(args)
    if cmd == "lmtp":
        from fetchdeliver import lmtp_command

        return lmtp_command.main(args)
    if cmd in ("db", "store"):
        from fetchdeliver.storage import command as storage_command

        return storage_command.db_main(args) if cmd == "db" else storage_command.store_main(args)
    if cmd == "queue":
        from fetchdeliver.outbound import command as queue_command

        return queue_command.main(args)
    if cmd in ("imap", "passwd"):
        from fetchdeliver.imapserver import command as imap_command

        return imap_command.main(args) if cmd == "imap" else imap_command.passwd_main(args)
    if cmd == "managesieve":
        from fetchdeliver.managesieve import command as managesieve_command

        return managesieve_command.main(args)
    if cmd == "web":
        from fetchdeliver.web import command as web_command

        return web_command.main(args)
    if cmd == "log":
        from fetchdeliver import deliverylog

        return deliverylog.main(args)
    if cmd == "pop3":
        from fetchdeliver.pop3server import command as pop3_command

        return pop3_command.main(args)
    if cmd == "submission":
        from fetchdeliver.submission import command as submission_command

        return submission_command.main(args)
    if cmd == "convert":
        from fetchdeliver.convert import command as convert_command

        return convert_command.main(args)
    if cmd in ("daemon", "status"):
        from fetchdeliver.daemon import command as daemon_command

        return daemon_command.daemon_main(args) if cmd == "daemon" else daemon_command.status_main(args)
    if cmd == "oauth2":
        if getattr(args, "oauth2_command", None) != "authorize":
            parser.parse_args(["oauth2", "--help"])
        from fetchdeliver import oauth2_authorize

        return oauth2_authorize.main(args)
    if cmd == "demo":
        from fetchdeliver.demo import main as demo_main

        return demo_main(args)
    parser.print_help()
    return 64
