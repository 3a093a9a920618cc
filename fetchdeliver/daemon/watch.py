"""[[watch]] rules: "tell me when mail from X (or with subject Y) arrives".

A delivered message is offered to `Notifier.submit()`, which only puts it on a
queue: matching and notifying happen in the notifier's own thread, so a slow or
failing command never delays a delivery. Per rule, a rate limit (`rate_limit`,
default 10 per minute) caps how often it fires; what is over the limit is
counted and logged once per window.

A command runs through the shell with the message on stdin and, in its
environment: SENDER (the From address), SUBJECT (decoded), FOLDER (where the
message was stored, comma-separated), ACCOUNT, MESSAGE_ID and WATCH (the rule's
name). `mailto` queues an RFC 5436-style notification mail (as Sieve's enotify
`notify "mailto:..."` does) through the outbound SMTP queue.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import queue
import re
import subprocess
import threading
import time
from collections import deque

log = logging.getLogger("fetchdeliver.daemon.watch")

COMMAND_TIMEOUT = 60.0
DEFAULT_RATE = "10/1m"


class WatchRule:
    """One [[watch]] entry."""

    def __init__(self, table: dict, index: int) -> None:
        from fetchdeliver.daemon.settings import parse_rate

        self.name: str = table.get("name") or f"watch[{index}]"
        self.senders = [s.lower() for s in table.get("from", [])]
        self.subject = re.compile(table["subject"]) if "subject" in table else None
        self.accounts = set(table.get("accounts", []))
        self.command: str | None = table.get("command")
        self.mailto: list[str] = list(table.get("mailto", []))
        self.rate_text = table.get("rate_limit", DEFAULT_RATE)
        self.limit, self.window = parse_rate(self.rate_text)

    def matches(self, senders: list[str], subject: str, account: str) -> bool:
        """Every condition given must hold (from AND subject AND account)."""
        if self.accounts and account not in self.accounts:
            return False
        if self.senders and not any(fnmatch.fnmatchcase(s, pat) for s in senders for pat in self.senders):
            return False
        if self.subject is not None and not self.subject.search(subject):
            return False
        return True


class WatchRules:
    """Every [[watch]] rule of one configuration."""

    def __init__(self, rules: list[WatchRule]) -> None:
        self.rules = rules

    @classmethod
    def from_settings(cls, settings) -> "WatchRules":
        return cls([WatchRule(t, i) for i, t in enumerate(settings.data.get("watch") or [])])

    def __bool__(self) -> bool:
        return bool(self.rules)

    def matching(self, message, account: str) -> list[WatchRule]:
        senders = message_senders(message)
        subject = message.get("Subject") or ""
        return [r for r in self.rules if r.matches(senders, subject, account)]


def message_senders(message) -> list[str]:
    """The From: addresses, lower-case (the envelope sender when there is no From:)."""
    from email.utils import getaddresses

    values = message.get_all("From", decode=True) or []
    out = [a.strip().lower() for _n, a in getaddresses(values) if a.strip()]
    if not out and message.sender:
        out = [message.sender.strip().lower()]
    return out


class _Limiter:
    """At most `limit` events per `window` seconds, per rule."""

    def __init__(self) -> None:
        self.times: dict[tuple, deque] = {}
        self.suppressed: dict[tuple, int] = {}

    def allow(self, rule: WatchRule, now: float) -> bool:
        key = (rule.name, rule.limit, rule.window)
        q = self.times.setdefault(key, deque())
        while q and q[0] <= now - rule.window:
            q.popleft()
        if len(q) < rule.limit:
            if self.suppressed.get(key):
                log.warning("watch %s: %d notifications were suppressed by the rate limit %s",
                            rule.name, self.suppressed.pop(key), rule.rate_text, extra={"watch": rule.name})
            q.append(now)
            return True
        n = self.suppressed.get(key, 0)
        if n == 0:
            log.warning("watch %s: rate limit %s reached; further matches are not notified until it clears",
                        rule.name, rule.rate_text, extra={"watch": rule.name})
        self.suppressed[key] = n + 1
        return False


class SharedLimiter(_Limiter):
    """The rate limit counted in PostgreSQL ([storage] url): at most `limit` notifications per
    `window` for a rule across every node. Database time; one transaction per event under a
    transaction advisory lock on the rule. When the database is away, this node counts alone."""

    def __init__(self, url: str) -> None:
        super().__init__()
        from fetchdeliver.storage.postgres import PostgresStore

        self._store = PostgresStore(url, user="-")

    def allow(self, rule: WatchRule, now: float) -> bool:
        from fetchdeliver.errors import TemporaryDeliveryError
        from fetchdeliver.storage.pgstate import Transaction

        key = f"{rule.name}|{rule.limit}|{rule.window}"
        try:
            with Transaction(self._store) as c:
                c.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("fd_watch:" + key,))
                c.execute("DELETE FROM fd_watch_event WHERE rule = %s AND "
                          "at <= clock_timestamp() - %s * interval '1 second'", (key, rule.window))
                n = c.execute("SELECT count(*) FROM fd_watch_event WHERE rule = %s", (key,)).fetchone()[0]
                ok = n < rule.limit
                if ok:
                    c.execute("INSERT INTO fd_watch_event (rule) VALUES (%s)", (key,))
        except TemporaryDeliveryError as e:
            log.warning("watch %s: the shared rate limit is not available (%s); counting on this node", rule.name, e)
            return super().allow(rule, now)
        lkey = (rule.name, rule.limit, rule.window)
        if ok:
            if self.suppressed.get(lkey):
                log.warning("watch %s: %d notifications were suppressed by the rate limit %s",
                            rule.name, self.suppressed.pop(lkey), rule.rate_text, extra={"watch": rule.name})
            return True
        if not self.suppressed.get(lkey):
            log.warning("watch %s: rate limit %s reached (all nodes); further matches are not notified until "
                        "it clears", rule.name, rule.rate_text, extra={"watch": rule.name})
        self.suppressed[lkey] = self.suppressed.get(lkey, 0) + 1
        return False


def limiter_for(settings) -> _Limiter:
    """The shared limiter with [storage] url, else this process's own."""
    url = (settings.data.get("storage") or {}).get("url")
    return SharedLimiter(url) if url else _Limiter()


class Notifier:
    """The thread that matches delivered messages against the watch rules and notifies."""

    def __init__(self, outbound=None, limiter: _Limiter | None = None) -> None:
        self.outbound = outbound
        self._queue: queue.Queue = queue.Queue()
        self._limiter = limiter if limiter is not None else _Limiter()
        self._thread: threading.Thread | None = None
        self.fired = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="watch-notifier", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish what is queued (within `timeout`), then end the thread."""
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, rules: WatchRules, message, folders: list[str], account: str) -> None:
        """Offer a delivered message (never blocks)."""
        if rules:
            self._queue.put((rules, message, list(folders), account))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            rules, message, folders, account = item
            try:
                for rule in rules.matching(message, account):
                    if self._limiter.allow(rule, time.monotonic()):
                        self.fired += 1
                        self._notify(rule, message, folders, account)
            except Exception:
                log.exception("watch rules failed for a message from %s", account)

    def _notify(self, rule: WatchRule, message, folders: list[str], account: str) -> None:
        senders = message_senders(message)
        subject = message.get("Subject") or ""
        log.info("watch %s: %s from %s: %s", rule.name, account, ", ".join(senders) or "?", subject,
                 extra={"watch": rule.name, "account": account})
        if rule.command:
            run_command(rule, message, folders, account)
        if rule.mailto:
            self._mail(rule, message, account)

    def _mail(self, rule: WatchRule, message, account: str) -> None:
        from fetchdeliver.actions import Notify

        if self.outbound is None:
            log.warning("watch %s: mailto needs the outbound queue, which is not available", rule.name)
            return
        for to in rule.mailto:
            action = Notify(f"mailto:{to}", message=f"[{rule.name}] New mail in {account}")
            try:
                self.outbound.submit_action(action, message)
            except Exception as e:
                log.error("watch %s: could not queue the notification to %s: %s", rule.name, to, e,
                          extra={"watch": rule.name})


def command_env(rule: WatchRule, message, folders: list[str], account: str) -> dict:
    """The environment of a watch command."""
    env = dict(os.environ)
    env.update({"SENDER": ", ".join(message_senders(message)),
                "SUBJECT": message.get("Subject") or "",
                "FOLDER": ",".join(folders),
                "ACCOUNT": account,
                "MESSAGE_ID": (message.get("Message-ID", "") or "").strip(),
                "WATCH": rule.name})
    # Header values can hold anything; the environment cannot hold NUL.
    return {k: v.replace("\0", "") for k, v in env.items()}


def run_command(rule: WatchRule, message, folders: list[str], account: str) -> bool:
    """Run the rule's command; a failure is logged, never raised."""
    cmd = os.path.expanduser(rule.command or "")
    try:
        r = subprocess.run(cmd, shell=True, input=message.raw, env=command_env(rule, message, folders, account),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.error("watch %s: command `%s` did not finish within %.0fs", rule.name, rule.command,
                  COMMAND_TIMEOUT, extra={"watch": rule.name})
        return False
    except OSError as e:
        log.error("watch %s: command `%s` could not run: %s", rule.name, rule.command, e.strerror or e,
                  extra={"watch": rule.name})
        return False
    if r.returncode != 0:
        tail = r.stderr.decode("utf-8", "replace").strip().splitlines()
        log.error("watch %s: command `%s` failed with exit status %d%s", rule.name, rule.command, r.returncode,
                  f": {tail[-1]}" if tail else "", extra={"watch": rule.name})
        return False
    return True
