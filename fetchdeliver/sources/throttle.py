"""Servers that ask to be left alone: throttling and outage replies, and the per-server back-off.

What counts as "back off" (searched in the one-line error text of a SourceError, which quotes
the server):

- `[UNAVAILABLE]` (RFC 5530: the server or its backend is down for now; Dovecot says it when its
  auth backend fails), `[LIMIT]` (RFC 5530: a server limit was hit), `[THROTTLED]` (Gmail, Yahoo);
- Microsoft 365's `Request is throttled. Suggested Backoff Time: N milliseconds` (waited exactly);
- Gmail's `Too many simultaneous connections`;
- a BYE with a reason before the session ended (not a plain dropped connection).

One ServerBackoff is shared by everything in a process that talks to servers (the daemon's fetch
passes and push connections): while a server's back-off runs, nobody connects to it. Each further
throttling reply doubles the wait (a suggested time is used as given); success resets it.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Callable, NamedTuple

# First wait for each kind of reply (doubled per further reply in a row, up to the cap).
BASE = {"UNAVAILABLE": 30.0, "LIMIT": 60.0, "THROTTLED": 60.0, "CONNECTIONS": 60.0, "BYE": 30.0}

_SUGGESTED = re.compile(r"Suggested Backoff Time:\s*(\d+)\s*(milliseconds|ms|seconds|s)\b", re.I)
_CODE = re.compile(r"\[(UNAVAILABLE|LIMIT|THROTTLED)\b[^\]]*\]", re.I)
_CONNECTIONS = re.compile(r"too many (?:simultaneous |concurrent )?connections", re.I)
# imaplib reports a BYE as "command: NAME => reason"; the IDLE watcher as "... (BYE reason)".
_BYE = re.compile(r"(?:connection lost: command: [^=]+ => |\bBYE\b:? ?)(?!socket error)(?P<why>[^()]+?)\s*"
                  r"(?:\)|\(\d|$|\([^)]*:\d+\))", re.I)


class Throttle(NamedTuple):
    """Why a server wants us to wait, and for how long if it said so."""

    kind: str                   # UNAVAILABLE, LIMIT, THROTTLED, CONNECTIONS, BYE, SUGGESTED
    reason: str                 # the server's words, for status and logs
    suggested: float | None     # seconds the server asked for (Microsoft), else None


def classify(text: str) -> Throttle | None:
    """The throttling/outage signal in an error line, or None for an ordinary error."""
    if not text:
        return None
    m = _SUGGESTED.search(text)
    if m:
        n = float(m.group(1))
        seconds = n / 1000.0 if m.group(2).lower() in ("milliseconds", "ms") else n
        return Throttle("SUGGESTED", f"Suggested Backoff Time: {m.group(1)} {m.group(2)}", seconds)
    m = _CODE.search(text)
    if m:
        return Throttle(m.group(1).upper(), _words_around(text, m), None)
    m = _CONNECTIONS.search(text)
    if m:
        return Throttle("CONNECTIONS", _words_around(text, m), None)
    m = _BYE.search(text)
    if m and m.group("why").strip() and "LOGOUT" not in text.upper():
        return Throttle("BYE", "BYE " + m.group("why").strip(), None)
    return None


def _words_around(text: str, m: re.Match) -> str:
    """The server's sentence holding the match (without our 'COMMAND: server said:' prefix)."""
    start = text.rfind("said: ", 0, m.start())
    start = start + 6 if start >= 0 else max(0, m.start())
    return text[start:].split(" (", 1)[0].strip()[:200]


class ServerState(NamedTuple):
    until: float        # time.time() before which nobody connects
    reason: str
    hits: int           # throttling replies in a row


class ServerBackoff:
    """Per-server back-off shared by every connection of a process (thread-safe)."""

    def __init__(self, cap: float = 3600.0, on_change: Callable[[str, ServerState | None], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cap = cap
        self.on_change = on_change
        self.clock = clock
        self._lock = threading.Lock()
        self._servers: dict[str, ServerState] = {}

    def hit(self, server: str, throttle: Throttle) -> float:
        """Record a throttling reply; returns the seconds to wait."""
        with self._lock:
            before = self._servers.get(server)
            hits = (before.hits if before else 0) + 1
            if throttle.suggested is not None:
                delay = max(1.0, throttle.suggested)
            else:
                delay = BASE.get(throttle.kind, 60.0) * 2 ** min(hits - 1, 20)
            delay = min(delay, self.cap)
            now = self.clock()
            until = max(now + delay, before.until if before else 0.0)
            state = self._servers[server] = ServerState(until, throttle.reason, hits)
        self._changed(server, state)
        return until - now

    def clear(self, server: str) -> None:
        """The server answered normally: forget its back-off."""
        with self._lock:
            had = self._servers.pop(server, None)
        if had is not None:
            self._changed(server, None)

    def left(self, server: str) -> float:
        """Seconds until `server` may be contacted again (0: now)."""
        with self._lock:
            st = self._servers.get(server)
        return max(0.0, st.until - self.clock()) if st else 0.0

    def state(self, server: str) -> ServerState | None:
        with self._lock:
            return self._servers.get(server)

    def _changed(self, server: str, state: ServerState | None) -> None:
        if self.on_change is not None:
            try:
                self.on_change(server, state)
            except Exception:  # reporting must never break connecting
                pass
