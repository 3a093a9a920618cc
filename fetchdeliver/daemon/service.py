"""The daemon: every account on its schedule, the listeners, the spool, reload and shutdown.

Everything runs in one asyncio loop; blocking work (fetch passes, IDLE, the spool,
the outbound queue, watch commands) runs in threads of its own. Shutdown (SIGTERM,
SIGINT): no new pass, connection or file is started; a fetch pass stops between two
messages (what was delivered is recorded; nothing undelivered is acknowledged); the
LMTP listener stops accepting and its running deliveries finish; then the process
exits 0, at the latest after GRACE seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time

from fetchdeliver.errors import EX_CONFIG, EX_OK, EX_SOFTWARE, ConfigError

log = logging.getLogger("fetchdeliver.daemon")

# Shutdown waits this long for deliveries in flight (the promise is an exit within 10 s).
GRACE = 7.0


def _account_key(gen, account) -> tuple:
    """What decides whether a running account task can stay as it is across a reload."""
    from fetchdeliver.daemon.settings import daemon_options

    return (json.dumps(account._table, sort_keys=True), account.rules, account.default_mailbox,
            json.dumps(gen.settings.delivery, sort_keys=True), json.dumps(daemon_options(gen.settings),
                                                                         sort_keys=True))


def _tables(gen, names: tuple[str, ...]) -> str:
    return json.dumps({n: gen.settings.data.get(n) for n in names}, sort_keys=True)


LMTP_TABLES = ("lmtp", "recipient", "delivery", "sieve", "relay", "queue")
IMAP_TABLES = ("imap", "delivery")
MANAGESIEVE_TABLES = ("managesieve", "imap", "sieve")
WEB_TABLES = ("web", "managesieve", "imap", "sieve", "log")
POP3_TABLES = ("pop3", "imap", "delivery")
SUBMISSION_TABLES = ("submission", "imap", "recipient", "delivery", "sieve", "relay", "queue")
QUEUE_TABLES = ("relay", "queue")


class Daemon:
    """`fetchdeliver daemon`."""

    def __init__(self, config_path: str) -> None:
        self.path = config_path
        self.gen = None
        self.tasks: dict[str, object] = {}
        self.stop_event: asyncio.Event | None = None
        self.outbound = None
        self.queue_runner = None
        self.notifier = None
        self.status = None
        self.servers = None     # ServerBackoff: servers that asked to be left alone (throttling, outages)
        self.spool = None
        self.lmtp = None
        self.imap = None
        self.managesieve = None
        self.web = None
        self.pop3 = None
        self.submission = None
        self.listeners: list[dict] = []
        self.file_watcher = None
        self._reload_lock: asyncio.Lock | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def options(self) -> dict:
        from fetchdeliver.daemon.settings import daemon_options

        return daemon_options(self.gen.settings)

    # -- start ------------------------------------------------------------------------------
    async def run(self) -> int:
        from fetchdeliver.daemon.reload import load_generation
        from fetchdeliver.daemon.status import StatusWriter
        from fetchdeliver.daemon.watch import Notifier
        from fetchdeliver.state import State, StateError

        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        # Installed first: a SIGTERM during start-up still gets the orderly shutdown.
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._on_stop_signal, sig)
        self.loop.add_signal_handler(signal.SIGHUP, lambda: self._schedule_reload("SIGHUP"))
        try:
            self.gen = load_generation(self.path, keep_broken_scripts=True)
        except ConfigError as e:
            from fetchdeliver.config import config_error_lines

            for line in config_error_lines(e):
                log.error("%s", line)
            return EX_CONFIG
        for rules, why in self.gen.script_errors.items():
            # Loud, but not fatal: a restart loop would deliver nothing; implicit keep delivers all.
            for line in why.splitlines():
                log.error("STARTED WITHOUT A SIEVE SCRIPT: %s", line)
        try:
            self.status = StatusWriter(State(self.gen.settings.state_dir))
            self.status.started(self.path)
        except StateError as e:
            log.error("%s", e)
            return EX_SOFTWARE
        self._start_servers()
        self._start_queue()
        from fetchdeliver.daemon.watch import limiter_for

        self.notifier = Notifier(self.outbound, limiter_for(self.gen.settings))   # shared with [storage] url
        self.notifier.start()
        try:
            await self._start_listeners()
        except (ConfigError, OSError) as e:
            log.error("%s", e)
            await self._stop_listeners()
            return EX_CONFIG
        if self.gen.table("spool"):
            self._start_spool()
        self._start_accounts()
        self._record_listeners()
        if self.options["reload"]:
            from fetchdeliver.daemon.reload import FileWatcher

            self.file_watcher = FileWatcher(lambda: self._threadsafe_reload("file changed"))
            self.file_watcher.watch(self.gen)
        n = len(self.gen.accounts)
        log.info("ready: %d account%s, config %s", n, "" if n == 1 else "s", self.path)
        await self.stop_event.wait()
        await self.shutdown()
        return EX_OK

    def _on_stop_signal(self, sig) -> None:
        if self.stop_event.is_set():
            return
        log.info("%s: stopping (deliveries in flight finish first)", signal.Signals(sig).name)
        self.stop_event.set()

    def _start_servers(self) -> None:
        from fetchdeliver.sources.throttle import ServerBackoff

        def changed(server, state) -> None:  # from any thread
            try:
                self.loop.call_soon_threadsafe(self._record_server, server, state)
            except RuntimeError:
                pass  # the loop has ended

        self.servers = ServerBackoff(cap=float(self.options["backoff_max"]), on_change=changed)

    def _record_server(self, server: str, state) -> None:
        try:
            self.status.server(server, None if state is None else
                               {"until": state.until, "reason": state.reason, "hits": state.hits})
        except Exception as e:  # status is for people; it must never stop the daemon
            log.warning("cannot record the back-off of %s: %s", server, e)
        if state is None:
            log.info("%s answers normally again: back-off over", server)

    def _start_queue(self) -> None:
        from fetchdeliver.outbound.queue import OutboundQueue, QueueRunner

        try:
            self.outbound = OutboundQueue.from_settings(self.gen.settings)
        except Exception as e:  # mail still gets delivered; only redirect/notify wait
            log.error("the outbound queue is not available: %s", e)
            self.outbound = None
            return
        self.queue_runner = QueueRunner(self.outbound)
        self.queue_runner.start()

    def _start_accounts(self) -> None:
        from fetchdeliver.daemon.scheduler import AccountTask

        for a in self.gen.accounts:
            t = AccountTask(self, a)
            t.key = _account_key(self.gen, a)
            self.tasks[a.name] = t
            t.start()
        self.status.accounts([a.name for a in self.gen.accounts])

    def _start_spool(self) -> None:
        from fetchdeliver.daemon.spool import Spool

        self.spool = Spool(self)
        where = self.spool.start()
        log.info("spool: watching %s", where, extra={"listener": "spool"})

    async def _start_listeners(self) -> None:
        data = self.gen.settings.data
        lmtp = data.get("lmtp") or {}
        if lmtp.get("listen") or lmtp.get("socket"):
            await self._start_lmtp(lmtp)
        if "imap" in data:
            await self._start_imap()
        if "managesieve" in data:
            await self._start_managesieve()
        if "web" in data:
            await self._start_web()
        if "pop3" in data:
            await self._start_pop3()
        if "submission" in data:
            await self._start_submission()

    async def _start_lmtp(self, table: dict) -> None:
        from fetchdeliver.recipients import parse_listen

        svc = _WatchedLMTP(self.gen.settings, outbound=self.outbound, daemon=self)
        svc.check()
        if table.get("socket"):
            where = await svc.listen_unix(table["socket"])
        else:
            host, port = parse_listen(table["listen"])
            h, p = await svc.listen_tcp(host, port)
            where = f"{h}:{p}"
        self.lmtp = (svc, where)
        log.info("lmtp: listening on %s", where, extra={"listener": "lmtp"})

    async def _start_imap(self) -> None:
        import argparse

        from fetchdeliver.imapserver.command import build_config
        from fetchdeliver.imapserver.server import Server

        cfg = build_config(argparse.Namespace(), self.gen.settings.data)
        server = Server(cfg)
        addrs = await server.start()
        serving = asyncio.ensure_future(server.serve_forever())
        wheres = [f"{h}:{p}{' (TLS)' if tls else ''}" for h, p, tls in addrs]
        self.imap = (server, serving, wheres)
        for w in wheres:
            log.info("imap: listening on %s", w, extra={"listener": "imap"})

    async def _start_server(self, name: str, package: str) -> tuple:
        """Start a listener whose package has `command.build_config` and `server.Server` (ManageSieve,
        POP3): (server, its serving task, the addresses it listens on)."""
        import argparse
        import importlib

        build_config = importlib.import_module(f"{package}.command").build_config
        server = importlib.import_module(f"{package}.server").Server(
            build_config(argparse.Namespace(), self.gen.settings.data))
        addrs = await server.start()
        serving = asyncio.ensure_future(server.serve_forever())
        wheres = [f"{h}:{p}{' (TLS)' if tls else ''}" for h, p, tls in addrs]
        for w in wheres:
            log.info("%s: listening on %s", name, w, extra={"listener": name})
        return server, serving, wheres

    async def _start_managesieve(self) -> None:
        self.managesieve = await self._start_server("managesieve", "fetchdeliver.managesieve")

    async def _start_pop3(self) -> None:
        self.pop3 = await self._start_server("pop3", "fetchdeliver.pop3server")

    async def _start_web(self) -> None:
        import argparse

        from fetchdeliver.web.command import build_web_config
        from fetchdeliver.web.server import WebServer

        server = WebServer(build_web_config(argparse.Namespace(), self.gen.settings.data, self.path), daemon=self)
        addrs = await server.start()
        wheres = [f"{'https' if tls else 'http'}://{h}:{p}/" for h, p, tls in addrs]
        self.web = (server, wheres)
        for w in wheres:
            log.info("web: listening on %s", w, extra={"listener": "web"})

    async def _start_submission(self) -> None:
        import argparse

        from fetchdeliver.submission.command import build_config
        from fetchdeliver.submission.server import Server

        server = Server(build_config(argparse.Namespace(), self.gen.settings.data, self.path), self.outbound)
        addrs = await server.start()
        serving = asyncio.ensure_future(server.serve_forever())
        wheres = [f"{h}:{p}{' (TLS)' if tls else ''}" for h, p, tls in addrs]
        self.submission = (server, serving, wheres)
        for w in wheres:
            log.info("submission: listening on %s", w, extra={"listener": "submission"})

    def _record_listeners(self) -> None:
        items = []
        if self.lmtp:
            items.append({"kind": "lmtp", "where": self.lmtp[1]})
        if self.imap:
            items.extend({"kind": "imap", "where": w} for w in self.imap[2])
        if self.managesieve:
            items.extend({"kind": "managesieve", "where": w} for w in self.managesieve[2])
        if self.web:
            items.extend({"kind": "web", "where": w} for w in self.web[1])
        if self.pop3:
            items.extend({"kind": "pop3", "where": w} for w in self.pop3[2])
        if self.submission:
            items.extend({"kind": "submission", "where": w} for w in self.submission[2])
        if self.spool:
            items.append({"kind": "spool", "where": self.spool.dir})
        self.listeners = items
        self.status.listeners(items)

    # -- the watch hook (called from fetch/spool/LMTP threads) -------------------------------
    def on_delivered(self, parsed, outcome, account: str, *, sender: str = "", recipient: str = "") -> None:
        """A message was delivered durably: offer it to the watch rules (never blocks)."""
        gen = self.gen
        if not gen.watch or self.notifier is None:
            return
        from fetchdeliver.message import Message

        if not recipient:
            acc = next((a for a in gen.accounts if a.name == account), None)
            recipient = acc.recipient if acc is not None else ""
        msg = Message(parsed.raw, sender=sender or _sender(parsed), recipients=[recipient] if recipient else [],
                      origin=account)
        folders = [r.mailbox for r in outcome.receipts if getattr(r, "mailbox", None)]
        self.notifier.submit(gen.watch, msg, folders, account)

    # -- reload -------------------------------------------------------------------------------
    def _threadsafe_reload(self, reason: str) -> None:
        try:
            self.loop.call_soon_threadsafe(self._schedule_reload, reason)
        except RuntimeError:
            pass  # the loop has ended

    def _schedule_reload(self, reason: str) -> None:
        if self.gen is not None and self.status is not None and not self.stop_event.is_set():
            asyncio.ensure_future(self.reload(reason))

    async def reload(self, reason: str) -> bool:
        """Load and validate the config and scripts again; switch to them only if all is well."""
        from fetchdeliver.daemon.reload import load_generation
        from fetchdeliver.daemon.scheduler import in_thread

        async with self._reload_lock:
            try:
                try:
                    gen = await in_thread(load_generation, self.path, name="reload")
                except ConfigError:
                    raise
                except Exception as e:  # never a "Task exception was never retrieved"
                    raise ConfigError(f"{type(e).__name__}: {e}") from None
            except ConfigError as e:
                log.error("reload (%s): the new configuration is refused, the running one stays: %s", reason,
                          str(e).replace("\n", "; "))
                self.status.set_info("reload", json.dumps({"at": time.time(), "ok": False, "error": str(e)}))
                return False
            if gen.fingerprint == self.gen.fingerprint:
                log.debug("reload (%s): nothing changed", reason)
                return True
            old, self.gen = self.gen, gen
            log.info("reload (%s): configuration and scripts reloaded", reason)
            self.status.set_info("reload", json.dumps({"at": time.time(), "ok": True}))
            if gen.settings.state_dir != old.settings.state_dir:
                log.warning("reload: a new state_dir takes effect only when the daemon is restarted")
            await self._apply(old, gen)
            if self.file_watcher is not None:
                self.file_watcher.watch(gen)
            return True

    async def _apply(self, old, gen) -> None:
        from fetchdeliver.daemon.scheduler import AccountTask

        if _tables(old, QUEUE_TABLES) != _tables(gen, QUEUE_TABLES):
            if self.queue_runner is not None:
                self.queue_runner.stop(timeout=5)
            self._start_queue()
            self.notifier.outbound = self.outbound
        wanted = {a.name: a for a in gen.accounts}
        replaced = []
        for name, task in list(self.tasks.items()):
            a = wanted.get(name)
            if a is None or task.key != _account_key(gen, a):
                task.retire()
                replaced.append(task)
                del self.tasks[name]
        # A replaced account's new task starts only after the old pass is over (one pass at a time).
        if replaced:
            await asyncio.wait([t.task for t in replaced if t.task is not None], timeout=None)
        for name, a in wanted.items():
            if name not in self.tasks:
                t = AccountTask(self, a)
                t.key = _account_key(gen, a)
                self.tasks[name] = t
                t.start()
        self.status.accounts(list(wanted))
        if _tables(old, LMTP_TABLES) != _tables(gen, LMTP_TABLES) or \
                _tables(old, IMAP_TABLES) != _tables(gen, IMAP_TABLES) or \
                _tables(old, MANAGESIEVE_TABLES) != _tables(gen, MANAGESIEVE_TABLES) or \
                _tables(old, WEB_TABLES) != _tables(gen, WEB_TABLES) or \
                _tables(old, POP3_TABLES) != _tables(gen, POP3_TABLES) or \
                _tables(old, SUBMISSION_TABLES) != _tables(gen, SUBMISSION_TABLES):
            await self._stop_listeners()
            try:
                await self._start_listeners()
            except (ConfigError, OSError) as e:
                log.error("reload: cannot start the listeners: %s", e)
        if _tables(old, ("spool",)) != _tables(gen, ("spool",)):
            if self.spool is not None:
                self.spool.stop()
                self.spool = None
            if gen.table("spool"):
                self._start_spool()
        self._record_listeners()

    # -- stop -----------------------------------------------------------------------------------
    async def _stop_listeners(self) -> None:
        from fetchdeliver.daemon.scheduler import in_thread

        if self.lmtp is not None:
            svc, _ = self.lmtp
            self.lmtp = None
            await svc.close()
            try:
                await asyncio.wait_for(in_thread(svc.shutdown, name="lmtp-shutdown"), GRACE)
            except asyncio.TimeoutError:
                log.warning("lmtp: deliveries still running at the shutdown deadline")
        for attr in ("imap", "managesieve", "pop3"):
            running = getattr(self, attr)
            if running is None:
                continue
            server, serving, _ = running
            setattr(self, attr, None)
            serving.cancel()
            try:
                await asyncio.wait_for(server.stop(), 3)
            except asyncio.TimeoutError:
                pass
        if self.web is not None:
            server, _ = self.web
            self.web = None
            try:
                await asyncio.wait_for(server.stop(), 6)
            except asyncio.TimeoutError:
                pass
        if self.submission is not None:
            server, serving, _ = self.submission
            self.submission = None
            serving.cancel()
            try:  # accepted messages being queued finish first
                await asyncio.wait_for(server.stop(), GRACE)
            except asyncio.TimeoutError:
                log.warning("submission: messages still being queued at the shutdown deadline")

    async def shutdown(self) -> None:
        deadline = time.monotonic() + GRACE
        if self.file_watcher is not None:
            self.file_watcher.stop()
        tasks = list(self.tasks.values())
        for t in tasks:
            t.retire(interrupt=True)
        if self.spool is not None:
            self.spool.stop_event.set()
            self.spool.wake.set()
        await self._stop_listeners()
        running = [t.task for t in tasks if t.task is not None and not t.task.done()]
        if running:
            left = max(0.1, deadline - time.monotonic())
            done, pending = await asyncio.wait(running, timeout=left)
            if pending:
                log.warning("%d fetch passes did not stop in time; their undelivered messages stay on the "
                            "server", len(pending))
        if self.spool is not None:
            self.spool.stop(timeout=max(0.1, deadline - time.monotonic()))
        if self.notifier is not None:
            self.notifier.stop(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
        if self.queue_runner is not None:
            self.queue_runner.stop(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
        try:
            for t in tasks:
                t._record()
            self.status.stopped()
            self.status.state.close()
        except Exception as e:
            log.warning("cannot record the shutdown in the state database: %s", e)
        log.info("stopped")


def _sender(parsed) -> str:
    from fetchdeliver.message import envelope_sender

    return envelope_sender(parsed)


def _WatchedLMTP(settings, *, outbound=None, daemon=None):
    """An LMTPService whose deliveries are also offered to the watch rules (built on first use:
    importing the LMTP server pulls in aiosmtpd)."""
    from fetchdeliver.sources.lmtp import LMTPService

    class WatchedLMTP(LMTPService):
        def deliver(self, body, sender, rcpt, target, helo, peer):
            reply = super().deliver(body, sender, rcpt, target, helo, peer)
            if str(reply).startswith("250"):
                from fetchdeliver.engine import DELIVERED, Outcome
                from fetchdeliver.message import Message

                daemon.on_delivered(Message(body), Outcome(DELIVERED), "lmtp", sender=sender, recipient=rcpt)
            return reply

    return WatchedLMTP(settings, outbound=outbound)


def run(config_path: str) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the exit status."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    daemon = Daemon(config_path)
    try:
        code = loop.run_until_complete(daemon.run())
    finally:
        # Not asyncio.run(): it would join the default executor without a deadline.
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
    return code


def exit_now(code: int) -> None:
    """Exit without waiting for threads that are only blocked on the network (all durable work is done)."""
    import sys
    import threading

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        os._exit(code)
    sys.exit(code)
