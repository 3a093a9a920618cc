"""`fetchdeliver convert procmailrc|maildrop FILE --check DIR`: a dry run of moving in.

Every message in DIR (a Maildir, a directory of message files, or an mbox file) goes
through the old tool (when installed) and through the converted script, side by side,
on copies in a temporary directory; the report lists where they disagree: the message,
the old tool's folders, ours, and the rc line that decided ours.

The old tool runs with HOME pointing into the temporary directory and a copy of the rc
file (and the files it includes) whose paths under your home point there too. Its
forwards (`! address`, maildrop's `to "!address"`) and programs (`| program`, except
filters, which change the message) are replaced by deliveries into marker folders, so
nothing leaves the machine and no program of yours runs with the copies; the converted
script is only evaluated (sieve interpreter, no delivery). Shown as "(forwarded)" and
"(piped)" on both sides.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tempfile
from email.utils import parseaddr

FORWARDED, PIPED = "(forwarded)", "(piped)"
_MARK = {".fd-check-forwarded": FORWARDED, ".fd-check-piped": PIPED}


def read_messages(path: str) -> list[tuple[str, bytes]]:
    """(name, raw) for a Maildir, a directory of message files or an mbox file."""
    out = []
    if os.path.isdir(path):
        subs = [os.path.join(path, d) for d in ("cur", "new")]
        dirs = [d for d in subs if os.path.isdir(d)] or [path]
        for d in dirs:
            for f in sorted(os.listdir(d)):
                p = os.path.join(d, f)
                if os.path.isfile(p) and not f.startswith("."):
                    with open(p, "rb") as fh:
                        out.append((os.path.relpath(p, path), fh.read()))
        return out
    with open(path, "rb") as fh:
        data = fh.read()
    parts = re.split(rb"(?m)^(?=From )", data)
    n = 0
    for part in parts:
        if not part.strip():
            continue
        n += 1
        raw = part.split(b"\n", 1)[1] if part.startswith(b"From ") else part
        raw = re.sub(rb"(?m)^>(>*From )", rb"\1", raw)
        out.append((f"{os.path.basename(path)}#{n}", raw))
    return out


def sender_of(raw: bytes) -> str:
    try:
        addr = parseaddr(email.message_from_bytes(raw).get("From", "") or "")[1]
    except Exception:
        addr = ""
    return addr if "@" in addr and " " not in addr else "nobody@localhost"


# -- our side ---------------------------------------------------------------------------

def ours(script_text: str, programs: dict[str, str], messages, tmp: str) -> list[tuple[list[str], str]]:
    """(folders, the rc line that decided) per message, from the converted script (no delivery)."""
    from fetchdeliver.convert import checked
    from fetchdeliver.message import Message
    from fetchdeliver.sieve import SieveEnv, compile_text, run

    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir, exist_ok=True)
    for name, path in programs.items():
        # the program the rc names (found on PATH when it gave no directory, as procmail does)
        real = path if "/" in path else shutil.which(path)
        if real and os.path.exists(real) and not os.path.exists(os.path.join(bindir, name)):
            os.symlink(os.path.abspath(real), os.path.join(bindir, name))
    options = dict(checked.OPTIONS, pipe_bin_dir=bindir)
    script = compile_text(script_text, "converted.sieve", options=options)
    where = _rc_lines(script_text)
    out = []
    for _, raw in messages:
        m = Message(raw, sender_of(raw), [os.environ.get("LOGNAME", "user")])
        res = run(script, m, SieveEnv(m, options=options, trace=True,
                                      duplicate_seen=lambda key, seconds: False))
        folders = []
        for a in res.actions:
            j = a.to_json()
            if j["type"] in ("keep", "fileinto"):
                folders.append(j["mailbox"])
            elif j["type"] == "redirect":
                folders.append(FORWARDED)
            elif j["type"] == "pipe":
                folders.append(PIPED)
        decided = ""
        for line in reversed(res.trace or []):
            m_ = re.match(r"^converted\.sieve:(\d+): (fileinto|keep|redirect|pipe|discard)", line)
            if m_:
                decided = where.get(int(m_.group(1)), "")
                break
        out.append((sorted(set(folders)), decided or "(no recipe: the default)"))
    return out


def _rc_lines(script_text: str) -> dict[int, str]:
    """Script line -> the `# file:line` comment of the recipe it belongs to."""
    out, cur = {}, ""
    for k, line in enumerate(script_text.split("\n"), 1):
        m = re.match(r"^\s*# (\S+:\d+): ", line)
        if m:
            cur = m.group(1)
        out[k] = cur
    return out


# -- the old tool ------------------------------------------------------------------------

def _rewrite_procmail(text: str, home: str, fake_home: str, file: str) -> str:
    """The rc with paths under home moved to fake_home, forwards and programs turned into marker folders."""
    from fetchdeliver.convert import procmailrc

    lines = text.split("\n")
    try:
        items = procmailrc.parse(text, file)
    except procmailrc.ParseError:
        items = []

    def walk(items):
        for it in items:
            if isinstance(it, procmailrc.Recipe):
                if it.block is not None:
                    walk(it.block)
                    continue
                action = it.action or ""
                marker = None
                if action.startswith("!"):
                    marker = ".fd-check-forwarded"
                elif (action.startswith("|") and "f" not in it.flags
                      and not re.match(r"^\|\s*(\S*/)?formail\s(.*\s)?-D\s", action)):
                    marker = ".fd-check-piped"
                if marker:
                    k = it.action_line - 1
                    cont = lines[k].endswith("\\")
                    lines[k] = re.sub(r"^(\s*).*$", r"\g<1>" + f"$HOME/{marker}/", lines[k])
                    while cont and k + 1 < len(lines):
                        k += 1
                        cont = lines[k].endswith("\\")
                        lines[k] = ""
    walk(items)
    out = "\n".join(lines)
    return out.replace(home.rstrip("/") + "/", fake_home.rstrip("/") + "/") if home not in ("", "/") else out


def _rewrite_maildrop(text: str, home: str, fake_home: str, spoolbox: str) -> str:
    text = re.sub(r'(?m)^(\s*(?:to|cc)\s+)(["\']?)\s*!.*$', r'\1"$HOME/.fd-check-forwarded"', text)
    text = re.sub(r'(?m)^(\s*(?:to|cc)\s+)(["\']?)\s*\|.*$', r'\1"$HOME/.fd-check-piped"', text)
    # maildrop takes HOME from the password file, not from the environment: spell it out.
    text = re.sub(r"\$\{?HOME\}?", lambda m: fake_home, text)
    text = f'DEFAULT="{spoolbox}"\n' + text
    return text.replace(home.rstrip("/") + "/", fake_home.rstrip("/") + "/") if home not in ("", "/") else text


def _mirror_dirs(real: str, fake: str, limit: int = 2000) -> None:
    """The directories (not the files) of a real mail root, empty, under the fake home: the old
    tool then sees the same Maildirs and folder directories (maildrop creates none itself)."""
    if not os.path.isdir(real):
        return
    n = 0
    for dirpath, dirnames, _ in os.walk(real):
        rel = os.path.relpath(dirpath, real)
        if os.path.basename(dirpath) in ("cur", "new", "tmp"):
            dirnames[:] = []
        os.makedirs(os.path.normpath(os.path.join(fake, rel)), exist_ok=True)
        n += 1
        if n >= limit:
            return


def _map_back(path: str, root: str, home: str) -> str:
    fake_home = os.path.join(root, "home")
    rel = os.path.relpath(path, fake_home)
    return os.path.normpath(os.path.join(home, rel))


def _delivered(root: str, skip: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Every folder path under root holding a message (Maildir, MH, mbox file), as found;
    skip: the rc file copies."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = os.path.basename(dirpath)
        if base in ("new", "cur") and os.path.isdir(os.path.join(os.path.dirname(dirpath), "tmp")):
            if filenames:
                out.append(os.path.dirname(dirpath) + "/")
            continue
        if base == "tmp" or base == "rc":
            continue
        is_maildir = os.path.isdir(os.path.join(dirpath, "new"))
        for f in filenames:
            p = os.path.join(dirpath, f)
            if f.isdigit() and not is_maildir:
                out.append(dirpath + "/.")
                break
        for f in filenames:
            p = os.path.join(dirpath, f)
            if (f.isdigit() or f.endswith((".lock", ".log", ".cache")) or p in skip
                    or p.startswith(os.path.join(root, "rc"))):
                continue
            if os.path.getsize(p) and not f.startswith("msgid"):
                out.append(p)
    return sorted(set(out))


class SpoolGuard:
    """procmail run as root creates an empty system mailbox (/var/mail/USER) when there is none:
    remove it again if it was not there before and is still empty."""

    def __init__(self) -> None:
        import pwd

        try:
            name = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            name = ""
        self.paths = [p for p in (os.path.join(d, name) for d in ("/var/mail", "/var/spool/mail"))
                      if name and os.path.isdir(os.path.dirname(p)) and not os.path.lexists(p)]

    def __enter__(self) -> "SpoolGuard":
        return self

    def __exit__(self, *exc) -> None:
        for p in self.paths:
            try:
                if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) == 0:
                    os.unlink(p)
            except OSError:
                pass


def old_tool(kind: str, rc_file: str, reads: dict[str, str], result, messages, tmp: str,
             home: str, logname: str) -> list[list[str]] | None:
    tool = shutil.which("procmail" if kind == "procmailrc" else "maildrop")
    if not tool:
        return None
    with SpoolGuard():
        return _old_tool(kind, tool, rc_file, reads, result, messages, tmp, home, logname)


def _old_tool(kind: str, tool: str, rc_file: str, reads: dict[str, str], result, messages, tmp: str,
              home: str, logname: str) -> list[list[str]]:
    out = []
    static = result.static
    for i, (_, raw) in enumerate(messages):
        root = os.path.join(tmp, f"m{i}")
        fake_home = os.path.join(root, "home")
        spool = os.path.join(root, "spool")
        os.makedirs(spool, exist_ok=True)
        os.makedirs(fake_home, exist_ok=True)
        # The rc file and what it includes, rewritten, at the same places under the fake home.
        written: set[str] = set()
        for path, text in reads.items():
            new = (_rewrite_procmail(text, home, fake_home, path) if kind == "procmailrc"
                   else _rewrite_maildrop(text, home, fake_home, os.path.join(spool, logname)))
            target = os.path.join(root, "rc", "main") if path == rc_file else (
                fake_home + path[len(home.rstrip("/")):] if path.startswith(home.rstrip("/") + "/") else None)
            if target is None:
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(new)
            written.add(target)
            if path == rc_file:
                os.chmod(target, 0o600)
        for var in ("MAILDIR", "DEFAULT"):
            v = static.get(var, "").rstrip("/")
            if v.startswith(home.rstrip("/") + "/"):
                d = fake_home + v[len(home.rstrip("/")):]
                if var == "MAILDIR" or os.path.isdir(v) or static.get(var, "").endswith("/"):
                    os.makedirs(d, exist_ok=True)
                _mirror_dirs(v, d)
        rc = os.path.join(root, "rc", "main")
        spoolbox = os.path.join(spool, logname)
        if kind == "procmailrc":
            argv = [tool, "-f", sender_of(raw), rc, f"HOME={fake_home}", f"DEFAULT={spoolbox}",
                    f"ORGMAIL={spoolbox}", "SENDMAIL=/bin/false", f"LOGFILE={root}/procmail.log",
                    "LOCKSLEEP=1"]
            env = dict(os.environ, HOME=fake_home)
        else:
            argv = [tool, "-f", sender_of(raw), rc]
            env = dict(os.environ, HOME=fake_home)
        try:
            subprocess.run(argv, input=raw, capture_output=True, timeout=120, env=env, cwd=fake_home)
        except subprocess.TimeoutExpired:
            out.append(["(timed out)"])
            continue
        folders = []
        for p in _delivered(root, written):
            if p.startswith(spool):
                folders.append("INBOX")
                continue
            real = _map_back(p.rstrip("/."), root, home)
            name = os.path.basename(real)
            if name in _MARK:
                folders.append(_MARK[name])
                continue
            try:
                folders.append(result.mailbox(real))
            except Exception:
                folders.append(real)
        out.append(sorted(set(folders)))
    return out


def report(kind: str, rc_file: str, text: str, check_dir: str, env: dict[str, str], script: str, result,
           reads: dict[str, str], write=sys.stdout.write) -> int:
    """Run both sides on copies of the messages in check_dir and print the disagreements; 0 if none."""
    messages = read_messages(check_dir)
    tool = "procmail" if kind == "procmailrc" else "maildrop"
    if not messages:
        write(f"no messages in {check_dir}\n")
        return 1
    home = env.get("HOME", os.path.expanduser("~"))
    logname = env.get("LOGNAME", "user")
    reads = dict(reads)
    reads[rc_file] = text
    with tempfile.TemporaryDirectory(prefix="fetchdeliver-check-") as tmp:
        mine = ours(script, result.programs, messages, tmp)
        theirs = old_tool(kind, rc_file, reads, result, messages, tmp, home, logname)
    if theirs is None:
        write(f"{tool} is not installed: where the converted script puts each message\n")
        for (name, _), (folders, decided) in zip(messages, mine):
            write(f"{name}\t{', '.join(folders) or '(nowhere)'}\t{decided}\n")
        return 1
    bad = 0
    write(f"message\t{tool}\tfetchdeliver\trecipe\n")
    for (name, _), old, (folders, decided) in zip(messages, theirs, mine):
        if old != folders:
            bad += 1
            write(f"{name}\t{', '.join(old) or '(nowhere)'}\t{', '.join(folders) or '(nowhere)'}\t{decided}\n")
    write(f"{len(messages)} message(s) checked, {bad} disagreement(s)\n")
    return 1 if bad else 0
