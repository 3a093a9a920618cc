"""`fetchdeliver convert procmailrc|maildrop|fetchmailrc|getmailrc`.

Exit codes: 0 everything translated, 1 something was not (warnings on stderr,
comments in the output), 65 the input is not the expected syntax, 66 no input.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import types

EX_INCOMPLETE = 1
EX_DATAERR = 65
EX_NOINPUT = 66


def add_arguments(p) -> None:
    """The sub-command's options (cli.py builds the parser)."""
    sub = p.add_subparsers(dest="convert_command", metavar="FORMAT")
    pr = sub.add_parser("procmailrc", help="print a Sieve script equivalent to a procmailrc")
    pr.add_argument("file", nargs="?", metavar="FILE", help="default: ~/.procmailrc; - for stdin")
    pr.add_argument("-o", "--output", metavar="OUT", help="write the Sieve script here instead of stdout")
    pr.add_argument("--config-out", metavar="FILE",
                    help="also write the [delivery]/[sieve] TOML settings the script expects")
    pr.add_argument("--pipe-bin-dir", metavar="DIR", help="pipe_bin_dir to put in those settings")
    pr.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                    help="procmail environment at conversion time (default: HOME, LOGNAME from yours)")
    pr.add_argument("--check", metavar="DIR",
                    help="dry run on copies of the messages in DIR (Maildir, directory or mbox): run procmail "
                         "and the converted script side by side and print where they disagree")
    md = sub.add_parser("maildrop", help="print a Sieve script equivalent to a maildrop mailfilter")
    md.add_argument("file", nargs="?", metavar="FILE", help="default: ~/.mailfilter; - for stdin")
    md.add_argument("-o", "--output", metavar="OUT", help="write the Sieve script here instead of stdout")
    md.add_argument("--config-out", metavar="FILE",
                    help="also write the [delivery]/[sieve] TOML settings the script expects")
    md.add_argument("--pipe-bin-dir", metavar="DIR", help="pipe_bin_dir to put in those settings")
    md.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                    help="maildrop environment at conversion time (default: HOME, LOGNAME from yours)")
    md.add_argument("--check", metavar="DIR",
                    help="dry run on copies of the messages in DIR (Maildir, directory or mbox): run maildrop "
                         "and the converted script side by side and print where they disagree")
    fm = sub.add_parser("fetchmailrc", help="print [[account]] TOML for a fetchmailrc")
    fm.add_argument("file", nargs="?", metavar="FILE", help="default: ~/.fetchmailrc; - for stdin")
    gm = sub.add_parser("getmailrc", help="print [[account]] TOML for getmail rc files")
    gm.add_argument("files", nargs="+", metavar="FILE")
    for q in (fm, gm):
        q.add_argument("-o", "--output", metavar="OUT", help="write the TOML here instead of stdout")
        q.add_argument("--copy-password", action="store_true",
                       help="copy passwords into the TOML (default: a password_command placeholder)")


def _read(path: str | None, default: str) -> tuple[str, str]:
    import os
    import sys

    if path == "-":
        return sys.stdin.read(), "<stdin>"
    path = path or os.path.expanduser(default)
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read(), path


def _write(path: str | None, text: str) -> None:
    import sys

    if not path or path == "-":
        sys.stdout.write(text)
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(args) -> int:
    """Run the conversion named by args.convert_command."""
    import sys

    which = getattr(args, "convert_command", None)
    if not which:
        sys.stderr.write("fetchdeliver convert: name a format: procmailrc, maildrop, fetchmailrc or getmailrc\n")
        return 64
    try:
        if which in ("procmailrc", "maildrop"):
            return _procmailrc(args, which)
        return _accounts(args, which)
    except OSError as e:
        sys.stderr.write(f"fetchdeliver convert {which}: {e.filename or ''}: {e.strerror}\n")
        return EX_NOINPUT


def _procmailrc(args, which: str = "procmailrc") -> int:
    import os
    import sys

    from fetchdeliver.convert import procmailrc

    mod: types.ModuleType = procmailrc
    if which == "maildrop":
        from fetchdeliver.convert import maildrop

        mod = maildrop

    text, name = _read(args.file, "~/.procmailrc" if which == "procmailrc" else "~/.mailfilter")
    env = procmailrc.default_env()
    for item in args.set:
        if "=" not in item:
            sys.stderr.write(f"fetchdeliver convert {which}: --set needs VAR=VALUE, got {item!r}\n")
            return 64
        k, v = item.split("=", 1)
        env[k] = v
    reads: dict[str, str] = {}

    def read_file(path: str) -> str:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            reads[path] = f.read()
        return reads[path]

    try:
        result = mod.convert(text, name, env=env, pipe_bin_dir=args.pipe_bin_dir, read_file=read_file)
    except mod.ParseError as e:
        sys.stderr.write(f"fetchdeliver convert {which}: {e}\n")
        return EX_DATAERR
    check_dir = getattr(args, "check", None)
    if not check_dir or args.output:
        _write(args.output, result.script)
    if args.config_out:
        _write(args.config_out, result.config)
    for p in result.problems:
        sys.stderr.write(f"warning: {p}\n")
    status = 0 if result.complete else EX_INCOMPLETE
    if check_dir:
        from fetchdeliver.convert import check

        if name == "<stdin>":
            sys.stderr.write(f"fetchdeliver convert {which}: --check needs the rc file by name, not stdin\n")
            return 64
        if not os.path.exists(check_dir):
            sys.stderr.write(f"fetchdeliver convert {which}: --check {check_dir}: no such file or directory\n")
            return EX_NOINPUT
        status = max(status, check.report(which, name, text, check_dir, env, result.script, result, reads))
    return status


def _accounts(args, which: str) -> int:
    import sys

    mod: types.ModuleType
    if which == "fetchmailrc":
        from fetchdeliver.convert import fetchmailrc

        mod = fetchmailrc
        text, name = _read(args.file, "~/.fetchmailrc")
        sources = [(text, name)]
    else:
        from fetchdeliver.convert import getmailrc

        mod = getmailrc
        sources = [_read(f, f) for f in args.files]
    try:
        result = mod.convert(sources, copy_password=args.copy_password)
    except mod.ParseError as e:
        sys.stderr.write(f"fetchdeliver convert {which}: {e}\n")
        return EX_DATAERR
    _write(args.output, result.toml)
    for w in result.warnings:
        sys.stderr.write(f"warning: {w}\n")
    return 0 if not result.warnings else EX_INCOMPLETE
