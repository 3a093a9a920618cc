"""A validated configuration (a "generation") and the watcher that notices edits on disk.

`load_generation()` reads the config file without the marshal cache, builds the
accounts and compiles every Sieve script the config names. Anything wrong raises
ConfigError, and the daemon keeps the generation it has. The compiled scripts are
held by the generation, so deliveries keep using the old, good script even after
a broken one has been saved over it.
"""

from __future__ import annotations

from typing import Any

import hashlib
import logging
import os
import threading

from fetchdeliver.errors import ConfigError, FetchdeliverError

log = logging.getLogger("fetchdeliver.daemon.reload")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.sources.accounts import Account
    from fetchdeliver.config import Settings


class Generation:
    """One loaded, validated configuration: settings, accounts, compiled scripts, watch rules."""

    def __init__(self, path: str, settings: "Settings", accounts: list["Account"], scripts: dict,
                 fingerprint: str, watch_paths: set[str], watch_dirs: set[str]) -> None:
        self.path = path
        self.settings = settings
        self.accounts = accounts
        self.scripts = scripts            # rules path -> compiled Script
        self.script_errors: dict[str, str] = {}   # rules path -> why it is not used (start-up only)
        self.fingerprint = fingerprint    # digest of the config and every script (unchanged: no reload)
        self.watch_paths = watch_paths    # files whose change means "reload"
        self.watch_dirs = watch_dirs      # directories whose every file counts (include :personal)
        from fetchdeliver.daemon.watch import WatchRules

        self.watch = WatchRules.from_settings(settings)

    def script(self, path: str | None):
        return self.scripts.get(path) if path else None

    def script_error(self, path: str | None) -> str | None:
        """Why the script at `path` is not used (messages then take implicit keep), or None."""
        return self.script_errors.get(path) if path else None

    def table(self, name: str):
        return self.settings.data.get(name)


def _digest(paths: list[str], dirs: list[str]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.encode() + b"\0")
        try:
            with open(p, "rb") as f:
                h.update(f.read())
        except OSError:
            h.update(b"<missing>")
    for d in sorted(dirs):
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for n in names:
            full = os.path.join(d, n)
            if os.path.isfile(full):
                h.update(full.encode() + b"\0")
                try:
                    with open(full, "rb") as f:
                        h.update(f.read())
                except OSError:
                    pass
    return h.hexdigest()


def rules_paths(settings: "Settings", accounts: list["Account"]) -> list[str]:
    """Every Sieve script the configuration uses."""
    paths = [settings.delivery.get("rules")]
    paths += [a.rules for a in accounts]
    spool = settings.data.get("spool") or {}
    paths.append(spool.get("rules"))
    paths += [r.get("rules") for r in settings.data.get("recipient") or []]  # the LMTP recipients' own
    return list(dict.fromkeys(p for p in paths if p))


def load_generation(path: str, *, keep_broken_scripts: bool = False) -> Generation:
    """Read and validate the config and compile its scripts; ConfigError says what is wrong.

    keep_broken_scripts (the daemon's start): a script that does not compile is not fatal; the
    generation records why (`script_error()`), and its messages take implicit keep, as the MDA's.
    """
    from fetchdeliver import sieve
    from fetchdeliver.sources.accounts import from_settings
    from fetchdeliver.config import load_settings
    from fetchdeliver.pipeline import sieve_options

    settings = load_settings(path, cache=False)
    accounts = from_settings(settings)
    scripts = {}
    broken: dict[str, str] = {}
    opts = sieve_options(settings)
    cache = os.path.join(settings.cache_dir, "sieve")
    from fetchdeliver.pipeline import no_active_script

    for rules in rules_paths(settings, accounts):
        if no_active_script(rules):
            continue   # a user without an active ManageSieve script: mail goes to INBOX
        try:
            try:
                scripts[rules] = sieve.compile_file(rules, cache_dir=cache, options=opts)
            except FetchdeliverError as e:
                raise ConfigError(f"Sieve script does not compile: {e}", file=rules) from None
            except OSError as e:
                raise ConfigError(f"cannot read the Sieve script: {e.strerror}", file=rules) from None
            except Exception as e:  # a compiler bug: this script's error, not the daemon's end
                raise ConfigError(f"Sieve script does not compile: internal error: {type(e).__name__}: {e}",
                                  file=rules) from None
        except ConfigError as e:
            if not keep_broken_scripts:
                raise
            broken[rules] = f"rules not used, message kept in INBOX: {e}"
    dirs = [d for d in (settings.sieve.get("personal_dir"), settings.sieve.get("global_dir")) if d]
    files = [path, *scripts, *broken]
    gen = Generation(path, settings, accounts, scripts, _digest(files, dirs), set(files), set(dirs))
    gen.script_errors = broken
    return gen


def current_fingerprint(gen: Generation) -> str:
    return _digest(sorted(gen.watch_paths), sorted(gen.watch_dirs))


class FileWatcher:
    """watchdog on the directories of the config and the scripts; calls `on_change()` (debounced)."""

    DEBOUNCE = 0.3

    def __init__(self, on_change) -> None:
        self.on_change = on_change
        self.observer: Any = None   # a watchdog Observer while watching
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._paths: set[str] = set()
        self._dirs: set[str] = set()

    def watch(self, gen: Generation) -> None:
        """(Re)point the watcher at what `gen` uses."""
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            log.warning("watchdog is not installed: reload only on SIGHUP")
            return
        self.stop()
        self._paths = {os.path.realpath(p) for p in gen.watch_paths} | set(gen.watch_paths)
        self._dirs = {os.path.realpath(d) for d in gen.watch_dirs}
        parents = {os.path.dirname(p) for p in self._paths} | self._dirs
        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.event_type in ("opened", "closed_no_write"):
                    return
                for p in (getattr(event, "src_path", ""), getattr(event, "dest_path", "")):
                    if p and watcher._relevant(os.fsdecode(p)):
                        watcher._poke()
                        return

        obs = Observer()
        handler = Handler()
        for d in parents:
            if os.path.isdir(d):
                obs.schedule(handler, d, recursive=False)
        obs.daemon = True
        obs.start()
        self.observer = obs

    def _relevant(self, p: str) -> bool:
        return p in self._paths or os.path.dirname(p) in self._dirs or os.path.realpath(p) in self._paths

    def _poke(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.DEBOUNCE, self.on_change)
            self._timer.daemon = True
            self._timer.start()

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(5)
            self.observer = None
