"""File-system change notification for IDLE: one watchdog observer, many subscribers per folder.

watchdog's unschedule() drops every handler of a path at once, so the
subscriptions are counted here: a path is watched while anyone listens to it.
Callbacks run in the observer's thread; sessions pass a function that hands
the news to their event loop (loop.call_soon_threadsafe).
"""

from __future__ import annotations

import os
import threading


def _log():
    import logging

    return logging.getLogger(__name__)


class Watcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._observer = None
        self._watches: dict[str, tuple[object, set]] = {}
        self.available = True

    def _start(self):
        if self._observer is None:
            try:
                from watchdog.observers import Observer
            except ImportError:
                self.available = False
                _log().warning("watchdog is not installed: IDLE falls back to polling")
                return None
            self._observer = Observer()
            self._observer.daemon = True
            self._observer.start()
        return self._observer

    def subscribe(self, paths: list[str], callback) -> list[tuple[str, object]]:
        """Call `callback()` on any change in `paths`; returns a token for unsubscribe()."""
        tokens = []
        with self._lock:
            obs = self._start()
            if obs is None:
                return tokens
            for path in paths:
                path = os.path.abspath(path)
                entry = self._watches.get(path)
                if entry is None:
                    from watchdog.events import FileSystemEventHandler

                    subs: set = set()

                    class Handler(FileSystemEventHandler):
                        def on_any_event(self, event, subs=subs):
                            if event.event_type in ("opened", "closed", "closed_no_write"):
                                return
                            for cb in list(subs):
                                try:
                                    cb()
                                except Exception:  # a dead loop must not stop the others
                                    pass

                    try:
                        watch = obs.schedule(Handler(), path, recursive=False)
                    except OSError as e:
                        _log().warning("cannot watch %s: %s", path, e)
                        continue
                    entry = (watch, subs)
                    self._watches[path] = entry
                entry[1].add(callback)
                tokens.append((path, callback))
        return tokens

    def unsubscribe(self, tokens) -> None:
        with self._lock:
            for path, callback in tokens:
                entry = self._watches.get(path)
                if entry is None:
                    continue
                entry[1].discard(callback)
                if not entry[1]:
                    del self._watches[path]
                    try:
                        self._observer.unschedule(entry[0])
                    except (KeyError, OSError):
                        pass

    def stop(self) -> None:
        with self._lock:
            obs, self._observer = self._observer, None
            self._watches.clear()
        if obs is not None:
            obs.stop()
            obs.join(5)
