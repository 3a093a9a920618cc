"""What the fetchmailrc and getmailrc converters share: the result, TOML output, mda mapping."""

from __future__ import annotations

from fetchdeliver.errors import FetchdeliverError

ORDER = ("name", "protocol", "host", "port", "tls", "ca_file", "fingerprint", "user", "password",
         "password_command", "oauth2_token_command", "oauth2_mechanism", "folders", "after", "initial",
         "timeout", "apop", "rules", "maildir", "mbox")


class ParseError(FetchdeliverError):
    """The rc file cannot be read; the message names the line."""


class AccountsResult:
    """Accounts converted so far, with warnings (not converted) and notes (converted, but read this)."""

    def __init__(self) -> None:
        self.accounts: list[tuple[dict, bool, str]] = []
        self.warnings: list[str] = []
        self.notes: list[str] = []

    def add(self, acc: dict, *, comment_out: bool = False, comment: str = "") -> None:
        names = {a["name"] for a, _, _ in self.accounts}
        base, k = acc["name"], 2
        while acc["name"] in names:
            acc["name"] = f"{base} ({k})"
            k += 1
        self.accounts.append((acc, comment_out, comment))

    @property
    def toml(self) -> str:
        return render(self)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    s = str(v)
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 32 or ord(c) == 127:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def render(result: AccountsResult) -> str:
    lines = ["# Converted by `fetchdeliver convert`; check `fetchdeliver config check -c FILE`."]
    for n in result.notes:
        lines.append(f"# note: {n}")
    for w in result.warnings:
        lines.append(f"# NOT CONVERTED: {w}")
    for acc, commented, comment in result.accounts:
        lines.append("")
        prefix = "# " if commented else ""
        if comment:
            lines.append(f"# {comment}")
        lines.append(prefix + "[[account]]")
        for k in sorted(acc, key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER)):
            lines.append(f"{prefix}{k} = {toml_value(acc[k])}")
    return "\n".join(lines) + "\n"


def password_placeholder(user: str, host: str) -> str:
    """A password_command that fails with a message saying what to put there."""
    return (f"echo 'fetchdeliver: replace this password_command with one printing the password of "
            f"{user} at {host} (e.g. pass show mail/{host})' >&2; exit 1")


def mda_delivery(mda: str, warn, notes: list[str]) -> dict:
    """The account keys for an mda command line (fetchdeliver deliver, procmail, ...)."""
    import posixpath
    import shlex

    try:
        words = shlex.split(mda)
    except ValueError:
        warn(f"mda {mda!r}: cannot split the command")
        return {}
    if not words:
        return {}
    prog = posixpath.basename(words[0])
    keys: dict = {}
    if prog == "fetchdeliver" and len(words) > 1 and words[1] == "deliver":
        args = words[2:]
        k = 0
        while k < len(args):
            a = args[k]
            val = None
            if "=" in a and a.startswith("--"):
                a, val = a.split("=", 1)
            opt = {"--maildir": "maildir", "--mbox": "mbox", "--rules": "rules", "-r": "rules"}.get(a)
            if opt:
                if val is None and k + 1 < len(args):
                    k += 1
                    val = args[k]
                if val is not None:
                    keys[opt] = val
            k += 1
        return keys
    if prog == "procmail":
        notes.append(f"mda {mda!r}: convert the procmailrc with `fetchdeliver convert procmailrc` and set "
                     "rules = the script ([delivery] or per account)")
        return {}
    if prog in ("dovecot-lda", "deliver", "maildrop"):
        warn(f"mda {mda!r}: use fetchdeliver's own delivery (maildir/mbox/rules keys); "
             "see docs/migrating.md")
        return {}
    warn(f"mda {mda!r}: fetchdeliver delivers itself; run the program from a Sieve `pipe` if still needed")
    return {}
