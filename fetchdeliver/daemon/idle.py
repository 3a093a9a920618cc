"""IMAP IDLE for `idle = true` accounts: a connection of its own that only listens.

The watcher thread logs in, EXAMINEs the account's first folder and stays in IDLE,
calling `on_mail()` whenever the server announces EXISTS/RECENT; the scheduler then
runs a normal fetch pass on a separate connection, so the safety order of fetch.py
applies unchanged. IDLE is re-issued every `renew` seconds (servers may drop it at
30 minutes). A lost connection is re-established with exponential back-off, and each
(re)connect also calls `on_mail()`, since mail may have arrived while it was down.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("fetchdeliver.daemon.idle")

# How often the IDLE loop looks at its stop flag (the wait for server data is sliced by this).
TICK = 0.5


def backoff(failures: int, base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds to wait after `failures` consecutive failures: 1, 2, 4, ... up to `cap`."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2 ** (failures - 1))


class IdleWatcher:
    """One thread holding an IDLE connection for one account."""

    def __init__(self, account, *, on_mail, on_state, renew: float, reconnect_cap: float = 300.0) -> None:
        self.account = account
        self.on_mail = on_mail        # called (from this thread) when new mail may be there
        self.on_state = on_state      # on_state(error text or None) when the connection state changes
        self.renew = renew
        self.reconnect_cap = reconnect_cap
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"idle-{self.account.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        from fetchdeliver.sources.base import SourceError

        failures = 0
        while not self.stop_event.is_set():
            try:
                self._session()
                failures = 0
            except SourceError as e:
                if self.stop_event.is_set():
                    break
                failures += 1
                text = str(e)
                self.on_state(text if text.startswith("IDLE") else f"IDLE: {text}")
                if not e.temporary and failures > 3:
                    delay = self.reconnect_cap  # a refused login will not heal by hammering the server
                else:
                    delay = backoff(failures, cap=self.reconnect_cap)
                log.debug("%s: IDLE reconnect in %.0fs", self.account.name, delay)
                self.stop_event.wait(delay)
            except Exception as e:  # a bug here must not end push for good
                log.exception("%s: IDLE watcher failed", self.account.name)
                failures += 1
                self.on_state(f"IDLE: internal error: {type(e).__name__}: {e}")
                self.stop_event.wait(backoff(failures, cap=self.reconnect_cap))

    def _session(self) -> None:
        from fetchdeliver.sources.base import SourceError
        from fetchdeliver.sources.imap import ImapSource, _command

        src = ImapSource(self.account)
        try:
            src.connect()
            if not src.has("IDLE"):
                raise SourceError("IDLE", "the server does not support IDLE; set idle = false", temporary=False)
            src.select(self.account.folders[0], readonly=True)
            self.on_state(None)
            self.on_mail()
            client = src.client
            where = self.account.address
            rounds = 0
            while not self.stop_event.is_set():
                started = time.monotonic()
                if rounds:
                    log.debug("%s: IDLE re-issued (round %d)", self.account.name, rounds + 1,
                              extra={"account": self.account.name})
                rounds += 1
                with _command("IDLE", where):
                    client.idle()
                    try:
                        while not self.stop_event.is_set() and time.monotonic() - started < self.renew:
                            responses = client.idle_check(timeout=TICK)
                            if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                                self.on_mail()
                            elif any(r and r[0] == b"BYE" for r in responses):
                                raise SourceError("IDLE", "the server ended the session (BYE)")
                    finally:
                        client.idle_done()
        finally:
            src.close()
