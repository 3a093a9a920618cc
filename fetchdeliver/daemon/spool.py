"""The daemon's spool thread: drop a message file into [spool] dir, it is delivered and removed.

The directory itself is a Source (fetchdeliver/sources/spool.py: which files are
taken, the crash memory, the durable removal on `ack`); this thread runs it
through the pipeline. watchdog tells the thread that something changed; a scan
every 30 seconds catches what an event missed (and retries temporary failures).
"""

from __future__ import annotations

from typing import Any

import logging
import os
import threading

from fetchdeliver.sources.spool import SETTLE

log = logging.getLogger("fetchdeliver.daemon.spool")

RESCAN = 30.0


class Spool:
    """One thread delivering the files of the spool directory."""

    def __init__(self, daemon) -> None:
        self.daemon = daemon
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Any = None   # a watchdog Observer while watching
        self.delivered = 0

    @property
    def table(self) -> dict:
        return self.daemon.gen.table("spool") or {}

    @property
    def dir(self) -> str:
        return self.table["dir"]

    def start(self) -> str:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer

            wake = self.wake

            class Handler(FileSystemEventHandler):
                def on_any_event(self, event):
                    wake.set()

            obs = Observer()
            obs.schedule(Handler(), self.dir, recursive=False)
            obs.daemon = True
            obs.start()
            self._observer = obs
        except ImportError:
            log.warning("watchdog is not installed: the spool directory is scanned every %.0fs", RESCAN)
        self._thread = threading.Thread(target=self._run, name="spool", daemon=True)
        self._thread.start()
        return self.dir

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        self.wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer = None
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        from fetchdeliver.state import State

        state = None
        try:
            state = State(self.daemon.gen.settings.state_dir)
            while not self.stop_event.is_set():
                self.wake.clear()
                again = self.scan(state)
                self.wake.wait(SETTLE if again else RESCAN)
        except Exception:
            log.exception("the spool directory source failed")
        finally:
            if state is not None:
                state.close()

    def source(self, state):
        from fetchdeliver.sources.spool import SpoolSource

        rcpt = self.table.get("recipient") or f"{os.environ.get('USER', 'user')}@{os.uname().nodename}"
        return SpoolSource(self.dir, recipient=rcpt, state=state)

    def scan(self, state) -> bool:
        """Deliver every settled file; True when a file was too new and a rescan is due soon."""
        source = self.source(state)
        ctx = None
        batches = source.batches()
        try:
            for batch in batches:
                for f in batch:
                    if self.stop_event.is_set():
                        source.release([f.handle])
                        continue
                    if ctx is None:
                        ctx = self._context(state)
                    self.deliver(f, ctx, source)
                if self.stop_event.is_set():
                    break
        finally:
            batches.close()
            source.close()
        return source.young

    def _context(self, state):
        from fetchdeliver.pipeline import build_context

        gen = self.daemon.gen
        t = self.table
        ctx = build_context(gen.settings, maildir=t.get("maildir"), mbox=t.get("mbox"), rules="",
                            default_mailbox=t.get("default_mailbox"), state=state)
        ctx.script = gen.script(t.get("rules") or gen.settings.delivery.get("rules"))
        ctx.script_error = gen.script_error(t.get("rules") or gen.settings.delivery.get("rules"))
        ctx.outbound = self.daemon.outbound
        return ctx

    def deliver(self, f, ctx, source) -> bool:
        """One file through the pipeline; acked (removed) only once its delivery is durable."""
        from fetchdeliver import engine
        from fetchdeliver.message import Message

        name = f.uid
        env = f.envelope
        msg = Message(f.raw, sender=env.sender, recipients=env.recipients, origin=f"spool:{name}")
        try:
            outcome = engine.process(msg, ctx)
        except Exception:
            log.exception("spool: %s: internal error; the file stays for the next scan", name)
            source.release([f.handle])
            return False
        if not outcome.ok:
            log.error("spool: %s: not delivered, the file stays for the next scan: %s", name,
                      "; ".join(outcome.errors) or "temporary failure")
            source.release([f.handle])
            return False
        source.ack([f.handle])   # delivered durably: only now may the file go
        self.delivered += 1
        log.info("spool: %s -> %s", name, ", ".join(outcome.where()) or outcome.status)
        self.daemon.on_delivered(Message(f.raw), outcome, "spool", sender=env.sender, recipient=env.recipients[0])
        return True
