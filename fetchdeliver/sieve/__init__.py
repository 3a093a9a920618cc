"""Sieve (RFC 5228 and extensions), compatible with Dovecot Pigeonhole.

    script = compile_file("rules.sieve")          # cached on disk (marshal)
    result = run(script, message, SieveEnv(message))
    result.actions   # fetchdeliver.actions objects, implicit keep included

Loading a cached script and running it imports neither Lark nor `re`,
`email`, `typing`, `dataclasses` or `logging` (the MDA's start-up budget);
the compiler and the extension modules are imported only when needed.
"""

from __future__ import annotations

import os

FORMAT = 5  # bump when the compiled form or the validation changes (5: issue #16's Pigeonhole checks)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.message import Message
    from fetchdeliver.sieve.imapsieve import ImapEvent
    from fetchdeliver.sieve.interpreter import SieveResult


class Script:
    """A compiled script: plain data (marshal-able) plus its name."""

    __slots__ = ("name", "path", "code", "requires", "includes", "data")

    def __init__(self, data: dict) -> None:
        self.data = data
        self.name = data["name"]
        self.path = data.get("path")
        self.code = data["code"]
        self.requires = data["requires"]      # every extension needed, included scripts' too
        self.includes = data.get("includes", {})

    def __repr__(self) -> str:
        return f"Script({self.name!r}, requires={self.requires!r})"


class SieveEnv:
    """Everything a script run may look at besides the message. Plain data and callbacks.

    options (the [sieve] config table, Pigeonhole-style): extensions,
    spamtest_header, spamtest_max, spamtest_status_type ("score", "strlen" or
    "text"), spamtest_text_values, virustest_header, virustest_max,
    virustest_status_type, virustest_text_values, vacation_min_period,
    vacation_max_period, vacation_default_period, pipe_bin_dir, personal_dir,
    global_dir, environment (dict of extra environment items), max_redirects,
    max_actions, max_run_time (CPU seconds per run); the compile-time limits
    max_script_size, max_block_nesting and max_test_nesting go to compile_*().
    """

    __slots__ = ("message", "envelope_from", "envelope_to", "original_to", "auth_user", "options",
                 "duplicate_seen", "mailbox_exists", "now", "timezone", "trace", "hostname",
                 "default_mailbox", "run_program", "metadata", "event")

    def __init__(self, message: "Message | None" = None, *, envelope_from: str | None = None,
                 envelope_to: str | None = None, original_to: str | None = None,
                 auth_user: str | None = None, options: dict | None = None, duplicate_seen=None,
                 mailbox_exists=None, now: float | None = None, timezone: int | None = None,
                 trace: bool = False, hostname: str | None = None, run_program=None,
                 metadata=None) -> None:
        self.message = message
        if envelope_from is None:
            envelope_from = message.sender if message is not None else ""
        if envelope_to is None:
            recipients = message.recipients if message is not None else []
            envelope_to = recipients[0] if recipients else ""
        if original_to is None:
            original_to = (message.original_recipient if message is not None else None) or envelope_to
        self.envelope_from = envelope_from
        self.envelope_to = envelope_to
        self.original_to = original_to
        self.auth_user = auth_user
        self.options = dict(options or {})
        self.duplicate_seen = duplicate_seen      # (key: str, seconds: int) -> bool, records the key
        self.mailbox_exists = mailbox_exists      # (name: str) -> bool
        self.metadata = metadata                  # (mailbox or None for the server, entry) -> value or None
        # The IMAP event a script runs for (fetchdeliver.sieve.imapsieve.ImapEvent, RFC 6785);
        # None in delivery.
        self.event: "ImapEvent | None" = None
        # (program: str, args: list[str], stdin: bytes) -> stdout bytes, raising DeliveryError:
        # vnd.dovecot.execute/filter run while the script runs (their output steers it).
        # Default: the programs of options["pipe_bin_dir"], as Pigeonhole's sieve_pipe_bin_dir.
        self.run_program = run_program if run_program is not None else self._bin_dir_program
        if now is None:
            import time

            now = time.time()
        self.now = now
        self.timezone = timezone                  # offset from UTC in seconds; None = the process's TZ
        self.trace = trace
        self.hostname = hostname
        self.default_mailbox = "INBOX"

    def _bin_dir_program(self, program: str, args: list[str], stdin: bytes) -> bytes:
        from fetchdeliver.delivery.pipe import filter_program
        from fetchdeliver.errors import PermanentDeliveryError

        bin_dir = self.options.get("pipe_bin_dir")
        if not bin_dir:
            raise PermanentDeliveryError(f"program {program!r}: no [sieve] pipe_bin_dir configured")
        if "/" in program or program in ("", ".", ".."):
            raise PermanentDeliveryError(f"program name {program!r} must be a plain name")
        env = program_environment(self.envelope_from, self.envelope_to, self.original_to,
                                  self.hostname, self.options.get("username") or self.auth_user)
        return filter_program([os.path.join(bin_dir, program), *args], stdin, env=env,
                              timeout=float(self.options.get("pipe_timeout", 10)))

    def local_offset(self, when: float | None = None) -> int:
        """The local time zone's offset from UTC in seconds at `when` (default: now)."""
        if self.timezone is not None:
            return self.timezone
        import time

        t = time.localtime(self.now if when is None else when)
        return t.tm_gmtoff


def program_environment(sender: str | None, recipient: str | None, original: str | None,
                        hostname: str | None = None, user: str | None = None) -> dict:
    """The environment vnd.dovecot.pipe/filter/execute programs get (as Pigeonhole's extprograms):
    SENDER, RECIPIENT, ORIG_RECIPIENT, HOST (as the environment extension's "host"), HOME, USER."""
    if not user:
        import getpass

        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = ""
    return {"SENDER": sender or "", "RECIPIENT": recipient or "", "ORIG_RECIPIENT": original or "",
            "HOST": hostname or os.uname().nodename, "HOME": os.path.expanduser("~"), "USER": user}


def compile_text(text: str, name: str = "script", *, options: dict | None = None) -> Script:
    """Compile Sieve source text (raises SieveCompileError with every problem found)."""
    from fetchdeliver.sieve.compiler import compile_source

    return compile_source(text, name, options=options)


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fetchdeliver", "sieve")


def compile_file(path: str, *, cache_dir: str | None = None, use_cache: bool = True,
                 options: dict | None = None) -> Script:
    """Compile a script file, or load it from the on-disk cache keyed by its content's SHA-256."""
    from fetchdeliver.sieve import cache

    with open(path, "rb") as f:
        raw = f.read()
    if cache_dir is None:
        cache_dir = default_cache_dir()
    key = cache.key(raw, options)
    if use_cache:
        script = cache.load(cache_dir, key, path)
        if script is not None:
            return script
    from fetchdeliver.sieve.compiler import compile_bytes

    script = compile_bytes(raw, path, options=options)
    if use_cache:
        cache.store(cache_dir, key, script)
    return script


def run(script: Script, message: "Message", env: SieveEnv | None = None) -> "SieveResult":
    """Decide what to do with `message`; never performs I/O, never raises on script errors."""
    from fetchdeliver.sieve.interpreter import run as _run

    if env is None:
        env = SieveEnv(message)
    return _run(script, message, env)


def __getattr__(name: str):
    # The error classes without importing them on the hot path.
    if name in ("SieveSyntaxError", "SieveCompileError", "SieveRuntimeError"):
        from fetchdeliver.sieve import errors

        return getattr(errors, name)
    if name == "SieveResult":
        from fetchdeliver.sieve.interpreter import SieveResult

        return SieveResult
    raise AttributeError(name)
