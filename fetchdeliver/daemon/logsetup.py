"""Logging for a long-running process: journald-friendly text, or JSON lines.

Under systemd (JOURNAL_STREAM set) the journal adds its own timestamps, so lines carry
none; the level goes first as a `<N>` syslog prefix, which journald turns into the
entry's priority. On a terminal lines get a timestamp. `--log-format json` writes one
JSON object per line (time, level, logger, message, and extra fields such as account).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

# syslog priorities for sd-daemon(3) prefixes.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def under_systemd() -> bool:
    """True when stderr is connected to the journal."""
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


class JournalFormatter(logging.Formatter):
    """`<6>fetchdeliver.daemon: message` (no timestamp: the journal has one)."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        # One journal entry per line: every continuation line gets the prefix too.
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


class TextFormatter(logging.Formatter):
    """`2026-12-01 16:05:00 INFO message` for a terminal or a log file."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    EXTRA = ("account", "listener", "watch", "event")

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        for key in self.EXTRA:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(fmt: str = "text", verbose: int = 0, stream=None) -> None:
    """Replace the root handlers with one for the daemon (`fmt`: text or json)."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif under_systemd():
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    # The fetch engine logs each message at INFO; only show that with -v.
    logging.getLogger("fetchdeliver").setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    # Libraries that log every protocol line at INFO.
    for name in ("imapclient", "mail.log", "watchdog"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose >= 3 else logging.WARNING)
