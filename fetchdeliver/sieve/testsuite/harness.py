"""Run one Pigeonhole `.svtest` file with the project's interpreter.

The model follows Pigeonhole's own `testsuite` tool (src/testsuite in
Pigeonhole), re-implemented here:

- The file is one Sieve script that requires "vnd.dovecot.testsuite". Each
  top-level ``test "name" { ... }`` is one test; ``test_fail`` ends the current
  test as failed; a run-time error of the file itself aborts the file.
- One *result* (the actions decided so far) is shared by the file's own
  commands and the scripts it runs with ``test_script_run``; it is reset by
  ``test_result_reset`` and by ``test_script_run`` without ``:append_result``.
  Header edits belong to the result (as in Pigeonhole, where the result owns
  the message context).
- ``test_result_execute`` carries the result out into an in-memory mail store
  (folders of messages) and a captured outgoing-mail box (redirect, vacation,
  reject, notify), which ``test_message :folder`` / ``:smtp`` read back.
- The error log holds the messages of the last sub-script compile, run or
  execution, which ``test_error`` matches.
"""

from __future__ import annotations

import os

from fetchdeliver.message import Message
from fetchdeliver.sieve import SieveEnv
from fetchdeliver.sieve.errors import SieveCompileError, SieveRuntimeError
from fetchdeliver.sieve.interpreter import Context
from fetchdeliver.sieve.registry import HARNESS
from fetchdeliver.sieve.runtime import Break, Return, Stop

DEFAULT_MESSAGE = (b"From: sender@example.com\nTo: recipient@example.org\nSubject: Frop!\n\nFriep!\n")
DEFAULT_SENDER = "sender@example.com"
DEFAULT_RECIPIENT = "recipient@example.com"

# Pigeonhole setting -> the [sieve] option of the same meaning here.
SETTING_OPTIONS = {
    "sieve_extensions": "extensions",
    "sieve_spamtest_status_header": "spamtest_header",
    "sieve_spamtest_status_type": "spamtest_status_type",
    "sieve_spamtest_max_value": "spamtest_max",
    "sieve_spamtest_max_header": "spamtest_max_header",
    "sieve_virustest_status_header": "virustest_header",
    "sieve_virustest_status_type": "virustest_status_type",
    "sieve_virustest_max_value": "virustest_max",
    "sieve_virustest_max_header": "virustest_max_header",
    "sieve_vacation_min_period": "vacation_min_period",
    "sieve_vacation_max_period": "vacation_max_period",
    "sieve_vacation_default_period": "vacation_default_period",
    "sieve_pipe_bin_dir": "pipe_bin_dir",
    "sieve_filter_bin_dir": "pipe_bin_dir",
    "sieve_execute_bin_dir": "pipe_bin_dir",
    "recipient_delimiter": "recipient_delimiter",
    "sieve_pipe_exec_timeout": "pipe_timeout",
    "sieve_filter_exec_timeout": "pipe_timeout",
    "sieve_execute_exec_timeout": "pipe_timeout",
}
BOOL_OPTIONS = {"vacation_use_original_recipient", "vacation_dont_check_recipient",
                "vacation_to_header_ignore_envelope", "vacation_send_from_recipient"}
PERIOD_OPTIONS = {"vacation_min_period", "vacation_max_period", "vacation_default_period", "pipe_timeout"}
_UNITS = {"s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60, "h": 3600, "hour": 3600,
          "hours": 3600, "d": 86400, "day": 86400, "days": 86400, "w": 604800, "week": 604800,
          "weeks": 604800}


PLUGIN_EXTENSIONS = {"vnd.dovecot.pipe", "vnd.dovecot.filter", "vnd.dovecot.execute"}


def all_extensions(plugins: bool = False) -> str:
    """Pigeonhole's testsuite enables every extension (no config); the extprograms plugin only with -P."""
    from fetchdeliver.sieve.registry import HARNESS_ONLY, capabilities

    names = set(capabilities()) - HARNESS_ONLY - (set() if plugins else PLUGIN_EXTENSIONS)
    return " ".join(sorted(names))


class TestFail(Exception):
    """test_fail (or a failing testsuite command): end the current test."""


def _period(value: str) -> int:
    v = value.strip().lower()
    digits = v.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = v[len(digits):].strip() or "s"
    return int(digits or 0) * _UNITS.get(unit, 1)


def _first_address(message: Message, *names: str) -> str | None:
    from fetchdeliver.sieve.addresses import parse_address_list

    for name in names:
        values = message.get_all(name, decode=False)
        if not values:
            continue
        for a in parse_address_list(values[0]):
            if a is not None and a.raw is None and a.local:
                return a.all()
    return None


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# Lenient as Dovecot's SMTP parser: dots anywhere in a local part (seen in Japanese mobile
# mail), "_" in domain labels.
_LOCAL = rf'(?:\.*{_ATOM}(?:\.+{_ATOM})*\.*|"(?:[^"\\\r\n]|\\.)*")'
_LABEL = r"[A-Za-z0-9_-]+"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[^\[\]\\]*\])"
_ROUTE = rf"@{_DOMAIN}(?:,@{_DOMAIN})*:"


def smtp_path(value: str, localpart_only: bool) -> str:
    """A test_set envelope value read as an SMTP path (RFC 5321): the address without brackets
    and source route, or "" when it does not parse (the testsuite then has no address: null)."""
    import re

    v = value.strip()
    if v.startswith("<") and v.endswith(">"):
        v = v[1:-1]
    if not v:
        return ""
    m = re.fullmatch(rf"(?:{_ROUTE})?({_LOCAL})(?:@({_DOMAIN}))?", v)
    if m is None or (m.group(2) is None and not localpart_only):
        return ""
    return m.group(1) + ("@" + m.group(2) if m.group(2) else "")


class FileResult:
    """The outcome of one file: tests run and passed, the first failure, the log lines."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0
        self.passed = 0
        self.failures: list[str] = []
        self.aborted: str | None = None
        self.ok = False
        self.lines: list[str] = []

    @property
    def first_failure(self) -> str:
        if self.failures:
            return self.failures[0]
        return self.aborted or "no test failed"


class Harness:
    """The state of one file's run (see the module docstring)."""

    def __init__(self, path: str, expect_failure: bool = False, plugins: bool = False) -> None:
        self.path = os.path.abspath(path)
        self.dir = os.path.dirname(self.path)
        self.expect_failure = expect_failure
        self.settings: dict[str, str] = {}
        self.options: dict = {"personal_dir": os.path.join(self.dir, "included"),
                              "global_dir": os.path.join(self.dir, "included-global"),
                              "testsuite_harness": HARNESS, "vacation_min_period": 86400,
                              "max_compile_errors": 0,  # Pigeonhole's testsuite reports them all
                              "extensions": all_extensions(plugins)}
        self.plugins = plugins
        self.errors: list[str] = []
        self.compiled = None
        self.binaries: dict = {}
        self.mailboxes: dict[str, list] = {"INBOX": []}
        self.smtp: list[tuple[str, str, bytes]] = []
        self.metadata: dict = {}
        self.duplicates: dict = {}
        self.main: Context | None = None
        self.current: str | None = None
        self.index = 0
        self.executed = 0
        self.keep_done = False
        self.keep_flags: list[str] | None = None
        self.env = SieveEnv(None, envelope_from=DEFAULT_SENDER, envelope_to=DEFAULT_RECIPIENT,
                            options=self.options, mailbox_exists=self._mailbox_exists,
                            metadata=self._metadata,
                            duplicate_seen=self._duplicate_seen, hostname="example.com")
        self.env.auth_user = None
        self.options = self.env.options  # SieveEnv copies the dict: settings must change its copy
        self.base = self._message(DEFAULT_MESSAGE)
        self.env.message = self.base
        self.result = FileResult(path)

    # -- environment -----------------------------------------------------------
    def _mailbox_exists(self, name: str) -> bool:
        return self._folder_key(name) in self.mailboxes

    @staticmethod
    def _folder_key(name: str) -> str:
        # INBOX is case-insensitive, also as the first level of a hierarchy ("Inbox.Junk").
        if name.upper() == "INBOX":
            return "INBOX"
        if name[:6].upper() in ("INBOX.", "INBOX/"):
            return "INBOX" + name[5:]
        return name

    def _duplicate_seen(self, key: str, seconds: int) -> bool:
        if key in self.duplicates:
            return True
        self.duplicates[key] = seconds
        return False

    def _message(self, raw: bytes, sender: str | None = None, recipient: str | None = None) -> Message:
        """A new current message; the envelope comes from its headers like Pigeonhole's."""
        probe = Message(raw)
        if recipient is None:
            recipient = _first_address(probe, "Envelope-To", "To") or DEFAULT_RECIPIENT
        if sender is None:
            sender = _first_address(probe, "Return-Path", "Sender", "From") or DEFAULT_SENDER
        self.env.envelope_from = sender
        self.env.envelope_to = recipient
        self.env.original_to = recipient
        return Message(raw, sender, [recipient], original_recipient=recipient, origin="testsuite")

    def _new_context(self, script, message: Message) -> Context:
        ctx = Context(script, message, self.env)
        ctx.ext_state["testsuite"] = self
        ctx.ext_state["namespace.tst"] = self._tst_variable
        return ctx

    def _tst_variable(self, ctx, name: str) -> str:
        return self.dir if name == "path" else ""

    def _compile(self, path: str):
        from fetchdeliver.sieve.compiler import compile_bytes

        with open(path, "rb") as f:
            raw = f.read()
        return compile_bytes(raw, path, options=self.options)

    # -- the file ----------------------------------------------------------------
    def run(self) -> FileResult:
        res = self.result
        try:
            script = self._compile(self.path)
        except SieveCompileError as e:
            res.aborted = "failed to compile testcase script: " + "; ".join(x.message for x in e.errors[:3])
            res.lines.append(str(e))
            return self._finish()
        except OSError as e:
            res.aborted = f"cannot read the file: {e.strerror}"
            return self._finish()
        res.total = sum(1 for node in script.code if node[0] == "test")
        self.main = self._new_context(script, self.base)
        try:
            self.main.run_block(script.code)
        except (Stop, Return, Break):
            pass
        except TestFail as e:  # test_fail outside a test
            res.failures.append(f"FAILED: {e}")
        except SieveRuntimeError as e:
            where = f"test '{self.current}': " if self.current is not None else ""
            res.aborted = f"{where}test script execution aborted due to error: {e.message} (line {e.line})"
            if self.current is not None:
                res.failures.append(res.aborted)
        except RecursionError:
            res.aborted = "test script execution aborted: nesting too deep"
        except Exception as e:  # noqa: BLE001 - a harness or interpreter bug must not stop the other files
            import traceback

            res.aborted = f"internal error: {type(e).__name__}: {e}"
            res.lines.append(traceback.format_exc())
            if self.current is not None:
                res.failures.append(f"test '{self.current}': {res.aborted}")
        return self._finish()

    def _finish(self) -> FileResult:
        res = self.result
        res.total = max(res.total, self.index)
        if self.expect_failure:
            # -F: every test must fail (a file that does not compile or aborts counts as failed).
            failed = len(res.failures)
            res.ok = res.aborted is not None or failed >= self.index
            res.passed = failed if res.aborted is None else res.total
            if not res.ok:
                res.failures = [f"only {failed} of {self.index} tests failed (all expected to fail)"]
        else:
            res.passed = self.index - len(res.failures)
            res.ok = not res.failures and res.aborted is None
        return res

    def run_test(self, ctx, node) -> None:
        if self.current is not None:
            ctx.fail("already inside test block")
        self.current = ctx.expand(node[3][0])
        self.index += 1
        try:
            ctx.run_block(node[5])
        except TestFail as e:
            reason = str(e)
            self.result.failures.append(f"test '{self.current}' FAILED" + (f": {reason}" if reason else ""))
            self.result.lines.append(f"{self.index:2d}: Test '{self.current}' FAILED: {reason}")
        else:
            self.result.lines.append(f"{self.index:2d}: Test '{self.current}' SUCCEEDED")
        self.current = None

    def fail(self, reason: str):
        raise TestFail(reason)

    # -- test_set / test_message -------------------------------------------------
    def set_object(self, ctx, name: str, value: str) -> None:
        main = self.main
        if name == "message":
            self.base = self._message(value.encode("utf-8", "surrogateescape"))
            self._set_current(self.base)
            if main is not None:
                main.flags = []  # a new message starts without flags (imap4flags)
        elif name == "envelope.from":
            self.env.envelope_from = smtp_path(value, localpart_only=False)
        elif name == "envelope.to":
            self.env.envelope_to = self.env.original_to = smtp_path(value, localpart_only=True)
        elif name == "envelope.orig_to":
            self.env.original_to = smtp_path(value, localpart_only=True)
        elif name == "envelope.auth":
            self.env.auth_user = value
        self._sync_envelope()
        if main is not None:
            main.message = self._with_envelope(main.message)

    def _with_envelope(self, message: Message) -> Message:
        message.sender = self.env.envelope_from
        message.recipients = [self.env.envelope_to]
        message.original_recipient = self.env.original_to
        return message

    def _sync_envelope(self) -> None:
        self._with_envelope(self.base)

    def _set_current(self, message: Message) -> None:
        self.env.message = message
        if self.main is not None:
            self.main.message = message
            self.main.edited = False

    def select_message(self, ctx, node) -> bool:
        tags = node[2]
        index = node[3][0]
        if "smtp" in tags:
            if not 0 <= index < len(self.smtp):
                return False
            env_from, env_to, raw = self.smtp[index]
            self.base = self._message(raw, env_from, env_to)
        else:
            folder = self.mailboxes.get(self._folder_key(ctx.expand(tags["folder"])))
            if folder is None or not 0 <= index < len(folder):
                return False
            self.base = self._message(folder[index][0])
            if self.main is not None:
                # imap4flags starts from the stored message's flags (as in Pigeonhole)
                from fetchdeliver.sieve.extensions.imap4flags import parse_flags

                self.main.flags = parse_flags([" ".join(folder[index][1])])
        self._set_current(self.base)
        return True

    def message_missing(self, ctx, node) -> str:
        tags = node[2]
        if "smtp" in tags:
            return f"no outgoing SMTP message with index {node[3][0]}"
        return f"no message in folder '{ctx.expand(tags['folder'])}' with index {node[3][0]}"

    def print_message(self, ctx) -> None:
        self.result.lines.append("--MESSAGE:\n" + ctx.message.raw.decode("utf-8", "replace") + "\n--MESSAGE--")

    # -- configuration -------------------------------------------------------------
    def config_set(self, name: str, value: str) -> None:
        self.settings[name] = value
        self._apply_setting(name, value)

    def config_unset(self, name: str) -> None:
        self.settings.pop(name, None)
        key = self._option_key(name)
        if key is not None:
            self.options.pop(key, None)
            if key == "vacation_min_period":
                self.options[key] = 86400
            elif key == "extensions":
                self.options[key] = all_extensions(self.plugins)

    @staticmethod
    def _option_key(name: str) -> str | None:
        if name in SETTING_OPTIONS:
            return SETTING_OPTIONS[name]
        for kind in ("spamtest", "virustest"):
            if name.startswith(f"sieve_{kind}_text_value"):
                return None
        return name[6:] if name.startswith("sieve_") else name

    def _apply_setting(self, name: str, value: str) -> None:
        for kind in ("spamtest", "virustest"):
            prefix = f"sieve_{kind}_text_value"
            if name.startswith(prefix):
                texts = self.options.setdefault(f"{kind}_text_values", {})
                texts[name[len(prefix):]] = value
                return
        key = self._option_key(name)
        if key is None:
            return
        if key in BOOL_OPTIONS:  # Dovecot's booleans: yes / no
            self.options[key] = value.strip().lower() in ("yes", "y", "true", "1")
        elif key in PERIOD_OPTIONS:
            self.options[key] = _period(value)
            if key == "pipe_timeout" and self.options[key] == 0:
                self.options[key] = 86400  # Pigeonhole's 0: no time limit
        elif key == "spamtest_max" or key == "virustest_max":
            try:
                self.options[key] = float(value)
            except ValueError:
                self.options[key] = value
        else:
            self.options[key] = value

    def config_reload(self, ctx, extension: str | None) -> None:
        from fetchdeliver.sieve.registry import capabilities

        if extension is not None and extension not in capabilities():
            self.fail(f"test_config_reload: unknown extension '{extension}'")

    # -- mailboxes, binaries, metadata -------------------------------------------
    def mailbox_create(self, name: str) -> None:
        self.mailboxes.setdefault(self._folder_key(name), [])

    def mailbox_delete(self, name: str) -> None:
        self.mailboxes.pop(self._folder_key(name), None)

    def binary_save(self, name: str) -> None:
        if self.compiled is None:
            self.fail("test_binary_save: no compiled script to save")
        self.binaries[name] = self.compiled

    def binary_load(self, name: str) -> None:
        script = self.binaries.get(name)
        if script is None:
            self.fail(f"failed to load binary {name}")
        self.compiled = script

    def _metadata(self, mailbox: str | None, name: str) -> str | None:
        key = None if mailbox is None else self._folder_key(mailbox)
        return self.metadata.get((key, name.lower()))

    def metadata_set(self, mailbox: str | None, name: str, value: str) -> None:
        mailbox = None if mailbox is None else self._folder_key(mailbox)
        self.metadata[(mailbox, name.lower())] = value

    # -- scripts -------------------------------------------------------------------
    def script_compile(self, name: str) -> bool:
        self.errors = []
        try:
            self.compiled = self._compile(os.path.join(self.dir, name))
        except SieveCompileError as e:
            # Pigeonhole logs each problem, then one line for the failed phase; the testsuite's
            # error counts include that line.
            phase = {"generation": "code generation failed", "validation": "validation failed"}.get(
                getattr(e, "phase", None) or "") or self._failed_phase(name)
            self.errors = [x.message for x in e.errors] + [phase]
            return False
        except OSError as e:
            self.errors = [f"failed to open sieve script: {e.strerror}"]
            return False
        return True

    def script_run(self, ctx, append: bool) -> bool:
        self.errors = []
        if self.compiled is None:
            ctx.fail("testsuite: trying to run script, but no script compiled yet")
        main = self.main
        if not append:
            self.result_reset(ctx)
        sub = self._new_context(self.compiled, main.message)
        sub.actions = main.actions
        sub.snapshots = main.snapshots
        sub.executed = self.executed
        sub.implicit_keep = main.implicit_keep
        sub.redirects = main.redirects
        sub.vacation_done = main.vacation_done
        sub.edited = main.edited
        ok = self._run_context(sub)
        main.actions = sub.actions
        main.implicit_keep = sub.implicit_keep
        main.redirects = sub.redirects
        main.vacation_done = sub.vacation_done
        main.message = sub.message
        main.edited = sub.edited
        self.keep_flags = list(sub.flags)
        return ok or "vnd.dovecot.testsuite" in self.compiled.requires

    def _failed_phase(self, name: str) -> str:
        from fetchdeliver.sieve.parser import parse

        try:
            with open(os.path.join(self.dir, name), "rb") as f:
                parse(f.read().decode("utf-8", "replace"), name)
        except SieveCompileError:
            return "parse failed"
        return "validation failed"

    def _run_context(self, ctx) -> bool:
        try:
            ctx.run_block(ctx.script.code)
        except (Stop, Return, Break):
            pass
        except SieveRuntimeError as e:
            self.errors.extend(ctx.logged)
            self.errors.append(e.message)
            return False
        self.errors.extend(ctx.logged)
        return True

    def multiscript(self, ctx, names: list[str]) -> bool:
        """Run scripts one after another on one result (as sieve_before/sieve_after), then execute it."""
        self.errors = []
        actions: list = []
        snapshots: dict = {}
        message = self.base
        keep = True
        flags: list[str] = []
        ok = True
        for name in names:
            try:
                script = self._compile(os.path.join(self.dir, name))
            except (SieveCompileError, OSError) as e:
                self.errors.extend(x.message for x in getattr(e, "errors", [e]))
                ok = False
                break
            sub = self._new_context(script, message)
            sub.actions = actions
            sub.snapshots = snapshots
            sub.flags = flags  # imap4flags' internal variable belongs to the message, across scripts
            if not self._run_context(sub):
                ok = False
                keep = True
                break
            actions = sub.actions
            message = sub.message
            flags = list(sub.flags)
            keep = sub.implicit_keep
            if not keep and not any(getattr(a, "type", "") == "keep" for a in actions):
                break
        for a in actions:
            if not self._perform(a, snapshots.get(id(a), message)):
                ok = False
        if keep or not ok:
            self._store("INBOX", message, flags)
        return ok

    # -- the result ----------------------------------------------------------------
    def result_reset(self, ctx) -> None:
        main = self.main
        main.actions = []
        main.snapshots = {}
        main.implicit_keep = True
        main.redirects = []
        main.vacation_done = False
        main.message = self.base
        main.edited = False
        self.executed = 0
        self.keep_done = False
        self.keep_flags = None

    def command_result_reset(self, ctx) -> None:
        """test_result_reset: the result, and the captured outgoing mail too (as Pigeonhole's)."""
        self.result_reset(ctx)
        self.smtp = []

    def action_names(self, ctx) -> list[str]:
        names = []
        for a in self.main.actions:
            t = a.type
            if t == "fileinto":
                t = "store"
            elif t == "ereject":
                t = "reject"
            names.append(t)
        return names

    def match_list(self, ctx, node, values: list[str]) -> bool:
        from fetchdeliver.sieve.matching import match

        tags = node[2]
        if "index" in tags:
            i = tags["index"]
            values = [values[i - 1]] if 0 < i <= len(values) else []
        return match(ctx, tags, values, ctx.expand_list(node[3][0]))

    def result_print(self, ctx) -> None:
        from fetchdeliver.sieve.tool import describe

        lines = ["--"]
        for a in self.main.actions:
            lines.extend(describe(a))
        self.result.lines.append("\n".join(lines + ["--"]))

    def result_execute(self, ctx) -> bool:
        self.errors = []
        main = self.main
        ok = True
        for a in main.actions[self.executed:]:
            if not self._perform(a, main.snapshots.get(id(a), main.message)):
                ok = False
        self.executed = len(main.actions)
        if (main.implicit_keep or not ok) and not self.keep_done:
            flags = self.keep_flags if self.keep_flags is not None else main.flags
            # After a failed action the fallback keep stores the message as received (no header
            # edits), as Pigeonhole's result execution does.
            self._store("INBOX", main.message if ok else self.base, list(flags))
            self.keep_done = True
        return ok

    def _store(self, mailbox: str, message: Message, flags: list[str]) -> bool:
        from fetchdeliver.delivery.names import split_name
        from fetchdeliver.errors import InvalidMailboxName

        try:
            split_name(mailbox)  # the names the project's mail stores accept
        except InvalidMailboxName as e:
            self.errors.append(f"failed to store into mailbox: {e}")
            return False
        key = self._folder_key(mailbox)
        if key not in self.mailboxes:
            self.errors.append(f"failed to store into mailbox '{mailbox}': Mailbox doesn't exist: {mailbox}")
            return False
        self.mailboxes[key].append((message.raw, list(flags)))
        return True

    def _perform(self, action, message: Message) -> bool:
        from fetchdeliver.outbound import compose

        t = action.type
        local = compose.local_address(message, "example.com")  # as the outbound queue
        if t in ("keep", "fileinto"):
            if action.create:
                self.mailbox_create(action.mailbox)
            return self._store(action.mailbox, message, action.flags)
        if t == "redirect":
            final = (message.recipients or [local])[0]
            user_email = self.options.get("user_email")
            sender = compose.redirect_envelope_from(
                self.options.get("redirect_envelope_from"), self.env.envelope_from, final=final,
                original=message.original_recipient or final, user_email=user_email)
            user = user_email or final
            if compose.redirected_from_loop(message, user_email, final):
                # Pigeonhole sends nothing and counts the action done (the outbound queue refuses it
                # instead, and the message is kept)
                self.errors.append(f"not forwarding message to <{compose.bare(action.address)}> "
                                   "(X-Sieve-Redirected-From header indicates mail loop)")
                return True
            why = compose.redirect_loop(message, action.address, local)  # as the outbound queue
            if why:
                self.errors.append(f"redirect to <{compose.bare(action.address)}> refused: {why}")
                return False
            self.smtp.append((sender, compose.bare(action.address),
                              compose.redirect_raw(message, local, redirected_from=compose.bare(user))))
            return True
        if t == "vacation":
            if compose.vacation_refusal(action, message, local, self.options) is None:
                raw = compose.vacation_reply(action, message, local, "example.com", self.options)
                rcpt = compose.vacation_recipient(message, self.options)[0]
                self.smtp.append((compose.vacation_envelope_from(message, self.options), rcpt, raw))
                self._fcc(action, raw)
            return True
        if t in ("reject", "ereject"):
            if compose.bare(message.sender):
                self.smtp.append(("", compose.bare(message.sender), self._rejection(action, message, local)))
            return True
        if t == "notify":
            if not action.method.lower().startswith("mailto:") or compose.notify_refusal(message):
                return True
            try:
                to, fields = compose.parse_mailto(action.method)
            except ValueError as e:
                self.errors.append(str(e))
                return False
            raw = compose.notify_mail(action, message, local, "example.com", to, fields)
            final = (message.recipients or [local])[0]
            env_from = compose.notify_envelope_from(
                self.options.get("notify_mailto_envelope_from"), action.from_, self.env.envelope_from,
                final=final, original=message.original_recipient or final,
                user_email=self.options.get("user_email"), hostname="example.com")
            for rcpt in to:
                self.smtp.append((env_from, rcpt, raw))
            self._fcc(action, raw)
            return True
        if t == "report":
            raw = compose.feedback_report(action, message, local, "example.com")
            self.smtp.append(("", compose.bare(action.address), raw))
            return True
        if t in ("pipe", "filter", "execute"):
            try:
                self.env.run_program(action.program, action.args, message.raw)
            except Exception as e:  # noqa: BLE001 - any failure of the program is a failed action
                if "timeout" in str(e):  # as Pigeonhole: the time-out, then the failed action
                    self.errors.append(f"program '{action.program}' execution timed out: {e}")
                self.errors.append(f"failed to {t} message to program '{action.program}': {e}")
                return False
            return True
        return True

    def _fcc(self, action, raw: bytes) -> None:
        fcc = getattr(action, "fcc", None)
        if fcc:
            if fcc["create"]:
                self.mailbox_create(fcc["mailbox"])
            self._store(fcc["mailbox"], Message(raw), fcc["flags"])

    @staticmethod
    def _rejection(action, message: Message, local: str) -> bytes:
        subject = message.get("Subject") or ""
        reason = action.reason.replace("\r\n", "\n")
        text = (f"From: Mail Delivery Subsystem <postmaster@example.com>\nTo: <{message.sender}>\n"
                f"Subject: Automatically rejected mail\nAuto-Submitted: auto-replied (rejected)\n"
                f"Precedence: bulk\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
                f"Your message to <{local}> was automatically rejected:\n{reason}\n"
                f"\n(original subject: {subject})\n")
        return text.encode("utf-8", "surrogateescape")
