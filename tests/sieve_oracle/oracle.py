"""Pigeonhole's `sieve-test` as a differential oracle for fetchdeliver's Sieve.

Two halves share one normalized result form:

- run_sieve_test() runs the real `sieve-test` (dovecot-sieve 0.5.19) in a private
  temporary directory (as `nobody` when we are root) and parses its dry-run report
  ("Performed actions:" / "Implicit keep:").
- normalize_ours() turns the dict of `fetchdeliver.sieve.tool.test_json()` (the
  `fetchdeliver sieve test --json` shape) into the same form.

Normalized result: a list of tuples sorted by repr(), one per action.

    ("store", mailbox, flags)                 fileinto / explicit keep (keep == "INBOX")
    ("store", mailbox, flags, "implicit")     the implicit keep
    ("create", mailbox)                       fileinto :create (mailbox extension)
    ("redirect", address)                     bare addr-spec, angle brackets removed
    ("discard",)
    ("reject", reason)                        control characters shown as "?", as Pigeonhole prints them
    ("vacation", subject|None, seconds, from|None, reason)
    ("notify", scheme, importance, subject|None, from|None, recipients)
    ("pipe", program)                         vnd.dovecot.pipe; filter/execute are not actions
    ("compile-error",)                        the script does not compile (sieve-test exit 89)
    ("runtime-error",)                        execution failed (sieve-test exit 1)

flags is a tuple of the distinct flags, lower-cased and sorted (a set, but sortable and
JSON-friendly). recipients is a sorted tuple of "to:addr"/"cc:addr" strings. Reasons keep
their text; vacation reasons have LF line ends and no trailing newline. Not represented:
:copy (its effect is the implicit keep entry), duplicate's "track duplicate" bookkeeping,
filter/execute (they run during evaluation), editheader changes (seen by later tests only).

Absent env_options keys mean Pigeonhole's defaults: e.g. without "extensions" editheader,
spamtest, virustest, vacation-seconds and the vnd.dovecot.* extensions are unavailable.

env_options: the run's environment, the same dict for both sides. Keys (all optional):

    extensions         list of str   Pigeonhole `sieve_extensions` syntax, e.g. ["+editheader"];
                                     -> `sieve-test -x "..."`. Without "+"/"-" the list is exclusive.
    pipe_bin_dir       path          the directory vnd.dovecot.pipe/filter/execute run programs
                                     from -> plugin/sieve_{pipe,filter,execute}_bin_dir, and
                                     loads the sieve_extprograms plugin.
    personal_dir       path          where include :personal looks -> plugin/sieve_dir
    global_dir         path          where include :global looks   -> plugin/sieve_global_dir
    spamtest_header    str           header spamtest reads -> plugin/sieve_spamtest_status_header
    spamtest_type      str           "score" (default) | "strlen" | "text" -> ..._status_type
    spamtest_max       number        the value that counts as 10 -> plugin/sieve_spamtest_max_value
    spamtest_text_values {str: str}  for type "text": {"1": "No", "10": "Yes"} -> ..._text_valueN
    virustest_header / virustest_type / virustest_max / virustest_text_values
                                     the same for virustest (values 1..5)
    vacation_min_period int seconds  shortest vacation period -> plugin/sieve_vacation_min_period
                                     (Pigeonhole's default is one day: shorter :days/:seconds
                                     are raised to 86400 at compile time)
    mailboxes          list of str   mailboxes that exist (mailboxexists); INBOX always exists.
                                     The oracle creates them in a scratch Maildir (flat names).
    timezone           str           local zone for date/currentdate without :zone -> TZ

Paths in cases.toml are relative to this directory; load_cases() makes them absolute.
The sender and recipient are passed as `-f SENDER -r RCPT -a RCPT` (a null sender cannot be
expressed with sieve-test).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS_DIR = HERE / "scripts"
MESSAGES_DIR = HERE / "messages"
EXPECTED_DIR = HERE / "expected"
CASES_FILE = HERE / "cases.toml"

SIEVE_TEST = "/usr/bin/sieve-test"
ORACLE_NAME = "sieve-test (Pigeonhole 0.5.19, dovecot-sieve Debian)"
EXIT_COMPILE = 89
EXIT_RUNTIME = 1
PATH_KEYS = ("pipe_bin_dir", "personal_dir", "global_dir")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class OracleError(Exception):
    """sieve-test failed for a reason other than the script, or printed something unknown."""


# ----------------------------------------------------------------------------- running

def sieve_test_path() -> str | None:
    """The sieve-test binary, or None when dovecot-sieve is not installed."""
    found = shutil.which("sieve-test") or (SIEVE_TEST if os.path.exists(SIEVE_TEST) else None)
    return found


def unavailable_reason() -> str | None:
    """Why the live oracle cannot run here, or None when it can."""
    if sieve_test_path() is None:
        return "sieve-test (dovecot-sieve) is not installed"
    if os.geteuid() == 0 and not (shutil.which("runuser") or shutil.which("setpriv")):
        return "running as root without runuser/setpriv: sieve-test refuses uid 0"
    return None


def _as_nobody(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--", *argv]
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *argv]


def _open_up(root: Path) -> None:
    """Let `nobody` read everything and write the directories (for .svbin and the Maildir)."""
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o777)
        for name in filenames:
            path = os.path.join(dirpath, name)
            mode = os.stat(path).st_mode & 0o777
            os.chmod(path, mode | 0o644 | (0o111 if mode & 0o100 else 0))


def _make_maildir(root: Path, mailboxes: list[str]) -> None:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name in mailboxes:
        if name.upper() == "INBOX":
            continue
        for sub in ("cur", "new", "tmp"):
            (root / ("." + name) / sub).mkdir(parents=True, exist_ok=True)


def _setting_args(env: dict, tmp: Path) -> tuple[list[str], dict]:
    """The -o/-x arguments for env_options (copying the directories it names into tmp)."""
    args: list[str] = []
    settings: dict[str, str] = {}
    exts = list(env.get("extensions") or [])
    if env.get("pipe_bin_dir") or any("vnd.dovecot." in e and e.rsplit(".", 1)[-1] in
                                      ("pipe", "filter", "execute") for e in exts):
        settings["sieve_plugins"] = "sieve_extprograms"
    if env.get("pipe_bin_dir"):
        bindir = tmp / "bin"
        shutil.copytree(env["pipe_bin_dir"], bindir)
        for kind in ("pipe", "filter", "execute"):
            settings[f"sieve_{kind}_bin_dir"] = str(bindir)
    if env.get("personal_dir"):
        shutil.copytree(env["personal_dir"], tmp / "personal")
        settings["sieve_dir"] = str(tmp / "personal")
    if env.get("global_dir"):
        shutil.copytree(env["global_dir"], tmp / "global")
        settings["sieve_global_dir"] = str(tmp / "global")
    for test in ("spamtest", "virustest"):
        if not env.get(f"{test}_header"):
            continue
        settings[f"sieve_{test}_status_header"] = str(env[f"{test}_header"])
        settings[f"sieve_{test}_status_type"] = str(env.get(f"{test}_type", "score"))
        if env.get(f"{test}_max") is not None:
            settings[f"sieve_{test}_max_value"] = str(env[f"{test}_max"])
        for key, value in (env.get(f"{test}_text_values") or {}).items():
            settings[f"sieve_{test}_text_value{key}"] = str(value)
    if env.get("vacation_min_period") is not None:
        settings["sieve_vacation_min_period"] = f"{int(env['vacation_min_period'])}s"
    for key, value in settings.items():
        args += ["-o", f"plugin/{key}={value}"]
    if exts:
        args += ["-x", " ".join(exts)]
    proc_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                "TZ": env.get("timezone") or "UTC", "HOME": str(tmp)}
    return args, proc_env


class RawRun:
    """One sieve-test run: argv, exit code and output, plus its normalized result."""

    __slots__ = ("argv", "returncode", "stdout", "stderr", "result")

    def __init__(self, argv, returncode, stdout, stderr, result):
        self.argv, self.returncode, self.stdout, self.stderr, self.result = (
            argv, returncode, stdout, stderr, result)

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if ": error: " in line]


def run_sieve_test_raw(script: str | os.PathLike, message: str | os.PathLike | bytes,
                       sender: str, recipient: str, options: dict | None = None,
                       *, timeout: float = 30) -> RawRun:
    """Run sieve-test once; see run_sieve_test()."""
    binary = sieve_test_path()
    if binary is None:
        raise OracleError("sieve-test is not installed (Debian package dovecot-sieve)")
    env = dict(options or {})
    tmp = Path(tempfile.mkdtemp(prefix="sieve-oracle-"))
    try:
        script_path = tmp / Path(script).name
        shutil.copyfile(script, script_path)
        msg_path = tmp / "message.eml"
        if isinstance(message, bytes):
            msg_path.write_bytes(message)
        else:
            shutil.copyfile(message, msg_path)
        _make_maildir(tmp / "Maildir", list(env.get("mailboxes") or []))
        args, proc_env = _setting_args(env, tmp)
        _open_up(tmp)
        argv = _as_nobody([binary, "-C", "-c", "/dev/null",
                           "-o", f"mail_location=maildir:{tmp / 'Maildir'}", *args,
                           "-f", sender, "-r", recipient, "-a", recipient,
                           str(script_path), str(msg_path)])
        proc = subprocess.run(argv, cwd=tmp, env=proc_env, capture_output=True, timeout=timeout)
        stdout = proc.stdout.decode("utf-8", "replace")
        stderr = proc.stderr.decode("utf-8", "replace")
        if proc.returncode == 0:
            result = parse_report(stdout)
        elif proc.returncode == EXIT_COMPILE and "failed to compile sieve script" in stderr:
            result = [("compile-error",)]
        elif proc.returncode == EXIT_RUNTIME and "final result: failed" in stderr:
            result = [("runtime-error",)]
        else:
            raise OracleError(f"sieve-test exited {proc.returncode}: {stderr.strip()[-2000:]}\n"
                              f"argv: {argv}")
        return RawRun(argv, proc.returncode, stdout, stderr, result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_sieve_test(script: str | os.PathLike, message: str | os.PathLike | bytes,
                   sender: str, recipient: str, options: dict | None = None) -> list[tuple]:
    """Run the real sieve-test on SCRIPT and MESSAGE (a path or bytes); return its normalized result.

    options is the env_options dict described in the module docstring (absolute paths).
    Raises OracleError when sieve-test is missing or fails for a reason that is not the script.
    """
    return run_sieve_test_raw(script, message, sender, recipient, options).result


# ----------------------------------------------------------------------------- parsing

def _flags(words) -> tuple:
    return tuple(sorted({w.lower() for w in words if w}))


def _sorted(actions: list[tuple]) -> list[tuple]:
    return sorted(actions, key=repr)


def parse_report(text: str) -> list[tuple]:
    """Normalize sieve-test's dry-run report (its stdout when it exits 0)."""
    # split("\n"), not splitlines(): a folder name or reason may hold U+0085 or U+2028.
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    actions: list[tuple] = []
    section = None
    cur: dict | None = None
    pipe_cancels_keep = False
    i = 0

    def finish():
        nonlocal cur, pipe_cancels_keep
        if cur is None:
            return
        kind = cur["kind"]
        if kind == "store":
            tup = ("store", cur["mailbox"], _flags(cur["flags"]))
            actions.append(tup + ("implicit",) if section == "implicit" else tup)
            if cur["create"]:
                actions.append(("create", cur["mailbox"]))
        elif kind == "vacation":
            actions.append(("vacation", cur.get("subject"), int(cur["seconds"]), cur.get("from"),
                            _text(cur["reason"])))
        elif kind == "notify":
            actions.append(("notify", cur["scheme"], int(cur.get("importance", 2)),
                            cur.get("subject"), cur.get("from"),
                            tuple(sorted(set(cur["recipients"])))))
        elif kind == "pipe":
            actions.append(("pipe", cur["program"]))
            if not cur["copy"]:
                pipe_cancels_keep = True
        else:
            actions.append(cur["tuple"])
        cur = None

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        i += 1
        if line == "Performed actions:":
            finish()
            section = "performed"
            continue
        if line == "Implicit keep:":
            finish()
            section = "implicit"
            continue
        if not stripped:
            continue
        if section is None:
            raise OracleError(f"unexpected sieve-test output before the report: {line!r}")
        if stripped == "(none)":
            finish()
            continue
        if line.startswith(" * "):
            finish()
            body = line[3:]
            if body.startswith("store message in folder: "):
                cur = {"kind": "store", "mailbox": body[len("store message in folder: "):],
                       "flags": [], "create": False}
            elif body.startswith("redirect message to: "):
                addr = body[len("redirect message to: "):]
                cur = {"kind": "other", "tuple": ("redirect", addr.strip().strip("<>"))}
            elif body == "discard":
                cur = {"kind": "other", "tuple": ("discard",)}
            elif body.startswith("reject message with reason: "):
                cur = {"kind": "other", "tuple": ("reject", body[len("reject message with reason: "):])}
            elif body == "send vacation message:":
                cur = {"kind": "vacation", "reason": ""}
            elif body.startswith("send notification with method '"):
                scheme = body[len("send notification with method '"):].split(":", 1)[0]
                cur = {"kind": "notify", "scheme": scheme.lower(), "recipients": []}
            elif body.startswith("track ") and "duplicate" in body:
                # duplicate: "track [last] duplicate [with handle: H]" is bookkeeping (the ID is
                # remembered when the run commits), not a delivery; it is left out.
                cur = None
            elif body.startswith("pipe message to external program '"):
                cur = {"kind": "pipe", "program": body.split("'")[1], "copy": False}
            else:
                raise OracleError(f"unknown sieve-test action line: {line!r}")
            continue
        if cur is None:
            raise OracleError(f"unexpected sieve-test line outside an action: {line!r}")
        if stripped.startswith("+ "):
            detail = stripped[2:]
            if cur["kind"] == "notify" and ":" in detail and stripped.split(":")[0][2:] in ("To", "Cc"):
                field, addr = detail.split(":", 1)
                cur["recipients"].append(f"{field.lower()}:{addr.strip()}")
            elif detail.startswith("add IMAP flags:"):
                cur["flags"] += detail[len("add IMAP flags:"):].split()
            elif detail == "create mailbox if it does not exist":
                cur["create"] = True
            elif detail == "preserve implicit keep":
                cur["copy"] = True
            else:
                raise OracleError(f"unknown sieve-test action detail: {line!r}")
            continue
        if stripped.startswith("=> "):
            key, _, value = stripped[3:].partition(":")
            key, value = key.strip(), value[1:] if value.startswith(" ") else value
            if cur["kind"] == "vacation":
                if key == "handle":
                    # The handle may span lines (it embeds the reason); skip to the message.
                    while i < len(lines) and lines[i] != "START MESSAGE":
                        i += 1
                    i += 1
                    body_lines = []
                    while i < len(lines) and lines[i] != "END MESSAGE":
                        body_lines.append(lines[i])
                        i += 1
                    i += 1
                    cur["reason"] = "\n".join(body_lines)
                elif key in ("seconds", "subject", "from"):
                    cur[key] = value
                else:
                    raise OracleError(f"unknown vacation detail: {line!r}")
            elif cur["kind"] == "notify":
                if key in ("importance", "subject", "from"):
                    cur[key] = value
                elif key == "recipients":
                    pass
                elif key == "body":
                    # A "--" fenced block follows.
                    while i < len(lines) and lines[i].strip() != "--":
                        i += 1
                    i += 1
                    while i < len(lines) and lines[i].strip() != "--":
                        i += 1
                    i += 1
                else:
                    raise OracleError(f"unknown notify detail: {line!r}")
            elif cur["kind"] == "pipe":
                if key != "try":
                    raise OracleError(f"unknown pipe detail: {line!r}")
            else:
                raise OracleError(f"unexpected detail line: {line!r}")
            continue
        if cur["kind"] == "notify" and stripped == "NONE, action has no effect":
            continue
        raise OracleError(f"unknown sieve-test output line: {line!r}")
    finish()
    if section is None:
        raise OracleError("sieve-test printed no 'Performed actions:' report")
    if pipe_cancels_keep:
        # The dry run still lists the implicit keep after a pipe without :copy, but executing
        # the script (-e) does not store the message: the pipe cancels it at commit time.
        actions = [a for a in actions if not (a[0] == "store" and a[-1] == "implicit")]
    return _sorted(actions)


def _text(reason: str) -> str:
    """Vacation reasons: line ends as LF, no trailing blank lines."""
    return reason.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")


# ----------------------------------------------------------------------------- ours

def _printable(text: str) -> str:
    """Pigeonhole prints each control character of a reason or folder name as "?"."""
    return _CONTROL.sub("?", text)


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def _addr(address: str) -> str:
    address = address.strip()
    if address.endswith(">") and "<" in address:
        address = address[address.rindex("<") + 1:-1]
    return address.strip()


def _mailto(uri: str) -> list[str]:
    """To/Cc recipients of a mailto: URI as "to:addr"/"cc:addr" (bcc is not sent by Pigeonhole)."""
    rest = uri.split(":", 1)[1] if ":" in uri else ""
    path, _, query = rest.partition("?")
    out = []
    for addr in urllib.parse.unquote(path).split(","):
        if addr.strip():
            out.append("to:" + addr.strip())
    for pair in query.split("&") if query else []:
        name, _, value = pair.partition("=")
        name = urllib.parse.unquote(name).lower()
        if name in ("to", "cc"):
            for addr in urllib.parse.unquote(value).split(","):
                if addr.strip():
                    out.append(f"{name}:{addr.strip()}")
    return out


def _mailto_param(uri: str, param: str) -> str | None:
    query = uri.partition("?")[2]
    for pair in query.split("&") if query else []:
        name, _, value = pair.partition("=")
        if urllib.parse.unquote(name).lower() == param:
            return urllib.parse.unquote(value)
    return None


def normalize_ours(result: dict) -> list[tuple]:
    """Normalize fetchdeliver's `sieve test --json` dict (see the module docstring).

    Success: {"actions": [...], "errors": []}. A runtime error: a non-empty "errors" list
    (the actions then only say what the fallback keep does), or {"error": "runtime"}.
    A compile error: {"error": "compile"} (test_json may instead raise SieveSyntaxError;
    the test maps that to ("compile-error",)).
    Duplicates are NOT merged here: the action list is what the engine carries out, so the
    interpreter itself must merge them like Pigeonhole does.
    """
    error = result.get("error")
    if error:
        kind = error.get("kind") if isinstance(error, dict) else error
        if kind not in ("compile", "runtime"):
            raise ValueError(f"unknown error kind in test_json result: {error!r}")
        return [(f"{kind}-error",)]
    if result.get("errors"):
        return [("runtime-error",)]
    actions: list[tuple] = []
    for act in result.get("actions", []):
        kind = act["type"]
        if kind in ("keep", "fileinto"):
            mailbox = _printable(act.get("mailbox") or "INBOX")
            tup = ("store", mailbox, _flags(act.get("flags") or []))
            actions.append(tup + ("implicit",) if act.get("implicit") else tup)
            if act.get("create"):
                actions.append(("create", mailbox))
        elif kind == "redirect":
            actions.append(("redirect", _addr(act["address"])))
        elif kind == "discard":
            actions.append(("discard",))
        elif kind in ("reject", "ereject"):
            actions.append((kind, _printable(_crlf(act.get("reason") or ""))))
        elif kind == "vacation":
            actions.append(("vacation", act.get("subject"), int(act["seconds"]), act.get("from"),
                            _text(act.get("reason") or "")))
        elif kind == "notify":
            method = act["method"]
            subject = act.get("message")
            if subject is None:
                subject = _mailto_param(method, "subject")
            importance = act.get("importance")
            actions.append(("notify", method.split(":", 1)[0].lower(),
                            int(importance) if importance not in (None, "") else 2,
                            subject, act.get("from"), tuple(sorted(set(_mailto(method))))))
        elif kind == "pipe":
            actions.append(("pipe", act["program"]))
        elif kind in ("filter", "execute"):
            continue  # run during evaluation; sieve-test lists no action for them
        else:
            raise ValueError(f"unknown action type in test_json result: {kind!r}")
    return _sorted(actions)


# ----------------------------------------------------------------------------- corpus

class Case:
    """One run: script x message x envelope x env_options."""

    __slots__ = ("id", "script", "message", "sender", "recipient", "env_options", "note",
                 "compare_ours")

    def __init__(self, id, script, message, sender, recipient, env_options, note="",
                 compare_ours=True):
        self.id, self.script, self.message = id, script, message
        self.sender, self.recipient, self.env_options, self.note = sender, recipient, env_options, note
        self.compare_ours = compare_ours

    @property
    def script_path(self) -> Path:
        return SCRIPTS_DIR / self.script

    @property
    def message_path(self) -> Path:
        return MESSAGES_DIR / self.message

    def resolved_options(self) -> dict:
        """env_options with the directory keys made absolute."""
        env = json.loads(json.dumps(self.env_options))
        for key in PATH_KEYS:
            if env.get(key):
                env[key] = str((HERE / env[key]).resolve())
        return env

    def env_fingerprint(self) -> str:
        """sha1 (12 hex digits) of the env_options as written in cases.toml, key order ignored."""
        import hashlib
        canon = json.dumps(self.env_options, sort_keys=True, ensure_ascii=False)
        return hashlib.sha1(canon.encode("utf-8")).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"Case({self.id})"


def _merge(base: dict, over: dict | None) -> dict:
    out = dict(base)
    for key, value in (over or {}).items():
        if value is False or value is None:
            out.pop(key, None)  # `key = false` in cases.toml removes a default
        else:
            out[key] = value
    return out


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def load_cases(path: Path = CASES_FILE) -> list[Case]:
    """Expand cases.toml: every [[script]] against its messages, plus the [[case]] extras."""
    with open(path, "rb") as f:
        spec = tomllib.load(f)
    defaults = spec.get("defaults", {})
    base_env = defaults.get("env_options", {})
    messages = {m["file"]: m for m in spec["message"]}
    cases: list[Case] = []

    def make(script: dict, msg_file: str, env_over: dict | None, suffix: str = "", note: str = ""):
        msg = messages[msg_file]
        env = _merge(_merge(base_env, script.get("env_options")), env_over)
        case_id = f"{_stem(script['file'])}__{_stem(msg_file)}{suffix}"
        cases.append(Case(case_id, script["file"], msg_file,
                          msg.get("sender", defaults.get("sender")),
                          msg.get("recipient", defaults.get("recipient")), env,
                          note or script.get("note", ""), script.get("compare_ours", True)))

    for script in spec["script"]:
        wanted = script.get("messages", "all")
        for msg_file in (list(messages) if wanted == "all" else wanted):
            make(script, msg_file, None)
    for extra in spec.get("case", []):
        parent = next((s for s in spec["script"] if s["file"] == extra["script"]), {})
        make({"file": extra["script"], "env_options": parent.get("env_options"),
              "compare_ours": extra.get("compare_ours", parent.get("compare_ours", True))},
             extra["message"], extra.get("env_options"), "__" + extra["variant"],
             extra.get("note", ""))
    seen = set()
    for case in cases:
        if case.id in seen:
            raise ValueError(f"{path}: duplicate case id {case.id}")
        seen.add(case.id)
    return cases


def result_to_json(result: list[tuple]) -> list:
    return [list(a) for a in result]


def result_from_json(data: list) -> list[tuple]:
    def tup(x):
        return tuple(tup(y) for y in x) if isinstance(x, list) else x
    return _sorted([tup(a) for a in data])


def load_expected() -> dict[str, dict]:
    """All recordings: case id -> {"result": [...], ...} (see record.py)."""
    out: dict[str, dict] = {}
    for path in sorted(EXPECTED_DIR.glob("*.json")):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        for case_id, entry in data["cases"].items():
            entry = dict(entry)
            entry["result"] = result_from_json(entry["result"])
            out[case_id] = entry
    return out


def run_case(case: Case) -> RawRun:
    return run_sieve_test_raw(case.script_path, case.message_path, case.sender, case.recipient,
                              case.resolved_options())


def run_cases(cases: list[Case], workers: int = 4) -> dict[str, RawRun]:
    """Run many cases through the live oracle in a thread pool (each run is its own process)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=workers) as pool:
        runs = list(pool.map(run_case, cases))
    return {case.id: run for case, run in zip(cases, runs)}
