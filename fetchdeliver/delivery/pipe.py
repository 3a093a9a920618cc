"""Deliver by running a program with the message on its standard input.

Exit status, as MTAs read sysexits.h:
- 0: delivered.
- 75 EX_TEMPFAIL, 71 EX_OSERR, 73 EX_CANTCREAT, 74 EX_IOERR, death by a signal,
  and running past the timeout: TemporaryDeliveryError (retry later).
- anything else, including 69 EX_UNAVAILABLE (Postfix bounces it too), and a
  program that cannot be run (missing, not executable): PermanentDeliveryError.

The program gets this process's environment plus `env` (SENDER, RECIPIENT,
ORIGINAL_RECIPIENT), like procmail and fetchmail's MDA do. It runs in its own
process group so a timeout kills whatever it started as well.
"""

from __future__ import annotations

import os

from fetchdeliver.storage.base import Receipt
from fetchdeliver.errors import (EX_CANTCREAT, EX_IOERR, EX_OSERR, EX_TEMPFAIL,
                                 PermanentDeliveryError, TemporaryDeliveryError)

TEMPORARY_EXITS = frozenset({EX_OSERR, EX_CANTCREAT, EX_IOERR, EX_TEMPFAIL})
_STDERR_KEEP = 64 * 1024  # only the tail of stderr matters for the message


def run_program(argv: list[str], raw: bytes, *, env: dict, timeout: float = 600) -> Receipt:
    """Pipe `raw` into `argv`; durable when the program says so by exiting 0."""
    _run(argv, raw, env, timeout, want_stdout=False)
    return Receipt("pipe")


def filter_program(argv: list[str], raw: bytes, *, env: dict, timeout: float = 600) -> bytes:
    """Pipe `raw` through `argv` and return what it wrote on stdout (Sieve's vnd.dovecot.filter)."""
    return _run(argv, raw, env, timeout, want_stdout=True)


def _run(argv: list[str], raw: bytes, env: dict, timeout: float, want_stdout: bool) -> bytes:
    import signal
    import subprocess

    if not argv or not argv[0]:
        raise PermanentDeliveryError("pipe: no program given")
    prog = argv[0]
    full_env = dict(os.environ)
    full_env.update({k: "" if v is None else str(v) for k, v in env.items()})
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE if want_stdout else subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=full_env, close_fds=True,
                                start_new_session=True)
    except FileNotFoundError as e:
        raise PermanentDeliveryError(f"pipe to {prog}: program not found "
                                     f"({e.filename or prog}: {e.strerror})") from e
    except PermissionError as e:
        raise PermanentDeliveryError(f"pipe to {prog}: cannot run it: {e.strerror}") from e
    except OSError as e:
        # EAGAIN (process limit), ENOMEM, ...: the machine may be fine again later.
        raise TemporaryDeliveryError(f"pipe to {prog}: cannot start it: {e.strerror}") from e
    try:
        out, err = proc.communicate(raw, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            # Something that left our process group still holds the pipes: stop reading.
            err = b""
            for f in (proc.stdout, proc.stderr):
                if f is not None:
                    f.close()
            proc.wait()
        raise TemporaryDeliveryError(f"pipe to {prog}: killed after the {timeout:g} s timeout"
                                     f"{_last_line(err)}") from None
    except BaseException:
        _kill_group(proc, signal.SIGKILL)
        proc.wait()
        raise
    code = proc.returncode
    if code == 0:
        return out or b""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        raise TemporaryDeliveryError(f"pipe to {prog}: killed by {name}{_last_line(err)}")
    if code in TEMPORARY_EXITS:
        raise TemporaryDeliveryError(f"pipe to {prog}: exit code {code} (temporary failure)"
                                     f"{_last_line(err)}")
    raise PermanentDeliveryError(f"pipe to {prog}: exit code {code}{_last_line(err)}")


def _kill_group(proc, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


def _last_line(err: bytes | None) -> str:
    """': <last non-empty stderr line>' or ''."""
    if not err:
        return ""
    for line in reversed(err[-_STDERR_KEEP:].splitlines()):
        line = line.strip()
        if line:
            text = line.decode("utf-8", "replace")
            if len(text) > 300:
                text = text[:300] + "..."
            return f": {text}"
    return ""
