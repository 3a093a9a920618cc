"""The spool directory source: drop a message file into [spool] dir, it is delivered and removed.

watchdog tells the spool thread that something changed; a scan every 30 seconds
catches what an event missed (and retries temporary failures). A file is removed
only after its delivery is durable; a temporary failure leaves it for the next
scan. Names starting with "." and ending in ".tmp" are ignored (write there, then
rename), and a file is taken only once it has not changed for half a second.
"""

from __future__ import annotations

from typing import Any

import logging
import os
import threading
import time

log = logging.getLogger("fetchdeliver.daemon.spool")

RESCAN = 30.0
SPOOL_MEMORY = 30 * 86400  # upper bound for a delivered-but-not-yet-removed file's memory
SETTLE = 0.5


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

    def _candidates(self) -> tuple[list[str], bool]:
        try:
            names = sorted(os.listdir(self.dir))
        except OSError as e:
            log.error("cannot read the spool directory %s: %s", self.dir, e.strerror)
            return [], False
        out, young = [], False
        now = time.time()
        for n in names:
            if n.startswith(".") or n.endswith(".tmp"):
                continue
            path = os.path.join(self.dir, n)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if not os.path.isfile(path):
                continue
            if now - st.st_mtime < SETTLE:
                young = True  # still being written, perhaps: look again shortly
                continue
            out.append(path)
        return out, young

    def scan(self, state) -> bool:
        """Deliver every settled file; True when a file was too new and a rescan is due soon."""
        paths, young = self._candidates()
        ctx = None
        for path in paths:
            if self.stop_event.is_set():
                break
            if ctx is None:
                ctx = self._context(state)
            self.deliver_file(path, ctx, state)
        return young

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

    def deliver_file(self, path: str, ctx, state=None) -> bool:
        from fetchdeliver import engine
        from fetchdeliver.message import Message, envelope_sender

        name = os.path.basename(path)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return False  # taken by someone else meanwhile
        except OSError as e:
            log.error("spool: cannot read %s: %s", path, e.strerror)
            return False
        import hashlib

        # The memory holds a file only between its durable delivery and its removal: a crash in
        # that window leaves the row, and the file is then removed, not delivered again. Once
        # removed it is forgotten, so the same bytes dropped in later are delivered as new mail.
        digest = f"{hashlib.sha256(raw).hexdigest()}:{name}"
        if state is not None and _remembered(state, digest):
            # Delivered before a crash (or a failed unlink) kept the file: do not deliver it twice.
            log.info("spool: %s was already delivered; removing it", name)
            if self._remove(path, name):
                state.forget("spool", digest)
            return True
        parsed = Message(raw)
        rcpt = self.table.get("recipient") or f"{os.environ.get('USER', 'user')}@{os.uname().nodename}"
        msg = Message(raw, sender=envelope_sender(parsed), recipients=[rcpt], origin=f"spool:{name}")
        try:
            outcome = engine.process(msg, ctx)
        except Exception:
            log.exception("spool: %s: internal error; the file stays for the next scan", name)
            return False
        if not outcome.ok:
            log.error("spool: %s: not delivered, the file stays for the next scan: %s", name,
                      "; ".join(outcome.errors) or "temporary failure")
            return False
        # Delivered durably: remember it, and only now may the file go.
        if state is not None:
            state.remember("spool", digest, SPOOL_MEMORY)
        if self._remove(path, name) and state is not None:
            state.forget("spool", digest)
        self.delivered += 1
        log.info("spool: %s -> %s", name, ", ".join(outcome.where()) or outcome.status)
        self.daemon.on_delivered(parsed, outcome, "spool", sender=msg.sender, recipient=rcpt)
        return True

    def _remove(self, path: str, name: str) -> bool:
        """Remove a delivered file durably; False (logged) when it could not be."""
        try:
            os.unlink(path)
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            log.error("spool: %s delivered but could not be removed: %s", name, e.strerror)
            return False
        return True


def _remembered(state, digest: str) -> bool:
    row = state.db.execute("SELECT expires FROM memory WHERE kind='spool' AND key=?", (digest,)).fetchone()
    return row is not None and row[0] > time.time()
