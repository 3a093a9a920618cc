"""Push for `idle = true` JMAP accounts in the daemon: the session's EventSource (RFC 8620 7.3).

One thread per account holds `GET eventSourceUrl?types=Email&closeafter=no&ping=N` open and reads
the `text/event-stream`. A `state` event whose Email state differs from the last one seen calls
`on_mail(None)` (the next fetch pass covers every folder of the account: one Email state covers
them all); so does every (re)connect, as mail may have arrived while it was down. `ping` events
only prove the connection alive: when neither arrives within two ping intervals (plus slack) the
connection is dropped and made again, with exponential back-off on failures.

A server without push (no eventSourceUrl, or 204 No Content as Cyrus answers when its httpd was
built without push) is reported in `fetchdeliver status` ("polled: ...") and polled every `poll`;
the watcher asks again after the back-off cap.

It is a drop-in for daemon/idle.py's AccountPush (same constructor and callbacks), so the
scheduler only picks the class by protocol.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from fetchdeliver.daemon.idle import POLLED, PUSHED, AccountPush, FolderPlan, backoff, server_throttled, \
    wait_for_server
from fetchdeliver.sources.base import SourceError, describe_os_error

log = logging.getLogger("fetchdeliver.sources.jmap_push")

LABEL = "EventSource"
PING = 30            # seconds between the server's keep-alive pings we ask for
SLACK = 15           # extra seconds before a silent connection counts as dead


class NoPush(SourceError):
    """The server offers no EventSource (the account is polled)."""


class JmapPush(AccountPush):
    """The EventSource connection of one JMAP account (the interface of daemon.idle.AccountPush)."""

    ping = PING

    def __init__(self, account, **kwargs) -> None:
        super().__init__(account, **kwargs)
        self._conn: Any = None   # the EventSource's http.client connection, while one is open
        self._lock = threading.Lock()
        self._last_state: str | None = None
        self._streamed = False   # the current connection got as far as the event stream

    def start(self) -> None:
        self.on_plan("none", self._plans(POLLED, f"EventSource is connecting; polled every {self.poll} until then"))
        self._thread = threading.Thread(target=self._run, name=f"push-{self.account.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        with self._lock:
            conn = self._conn
        if conn is not None and conn.sock is not None:
            import socket

            try:
                conn.sock.shutdown(socket.SHUT_RDWR)   # wakes the reading thread
            except OSError:
                pass

    def _plans(self, state: str, why: str) -> list[FolderPlan]:
        return [FolderPlan(f, state, why) for f in self.account.folders]

    def _run(self) -> None:
        failures = 0
        while not self.stop_event.is_set():
            if wait_for_server(self.servers, self.account.address, self.stop_event):
                break
            self._streamed = False
            try:
                self._session()
                failures = 0
            except NoPush as e:
                if self.stop_event.is_set():
                    break
                self.on_plan("none", self._plans(POLLED, f"{e.detail}; polled every {self.poll}"))
                self.on_state(LABEL, None)
                self.stop_event.wait(self.reconnect_cap)
            except SourceError as e:
                if self.stop_event.is_set():
                    break
                if self._streamed:
                    # The stream was up: servers end long streams now and then. Not an error unless
                    # connecting again fails (that is reported).
                    log.info("%s: %s; connecting again", self.account.name, e)
                    self.stop_event.wait(1.0)
                    failures = 0
                    continue
                failures += 1
                self.on_state(LABEL, f"{LABEL}: {e}")
                delay = self.reconnect_cap if (not e.temporary and failures > 3) else \
                    backoff(failures, cap=self.reconnect_cap)
                delay = max(delay, server_throttled(self.servers, self.account.address, str(e)))
                self.stop_event.wait(delay)
            except Exception as e:  # a bug here must not end push for good
                log.exception("%s: EventSource watcher failed", self.account.name)
                failures += 1
                self.on_state(LABEL, f"{LABEL}: internal error: {type(e).__name__}: {e}")
                self.stop_event.wait(backoff(failures, cap=self.reconnect_cap))

    def _session(self) -> None:
        import http.client
        from urllib.parse import urlsplit

        from fetchdeliver.sources.jmap import JmapSource, expand, http_error

        src = JmapSource(self.account)
        try:
            src.connect()
            assert src.session is not None
            template = src.session.event_source_url
            if not template:
                raise NoPush(LABEL, "the JMAP server offers no eventSourceUrl")
            url = expand(template, {"types": "Email", "closeafter": "no", "ping": str(self.ping)})
            parts = urlsplit(url)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                conn = src.http.connection(parts.scheme, parts.hostname or "", port, fresh=True,
                                            timeout=2 * self.ping + SLACK)
            except OSError as e:
                raise SourceError(LABEL, f"{describe_os_error(e)} ({parts.hostname}:{port})") from None
            with self._lock:
                self._conn = conn
            try:
                if self.stop_event.is_set():
                    return
                conn.request("GET", path, headers={"Accept": "text/event-stream", "Cache-Control": "no-cache",
                                                   "Authorization": src.http.authorization(),
                                                   "User-Agent": "fetchdeliver"})
                resp = conn.getresponse()
                ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
                if resp.status == 204 or (resp.status == 200 and ctype != "text/event-stream"):
                    raise NoPush(LABEL, f"the JMAP server does not push (EventSource answered HTTP {resp.status}"
                                 f"{' ' + ctype if ctype else ''})")
                if resp.status >= 300:
                    raise http_error(LABEL, resp.status, resp.read(4096), resp.headers)
                if self.servers is not None:
                    self.servers.clear(self.account.address)
                self._streamed = True
                self.on_plan("eventsource", self._plans(PUSHED, "JMAP EventSource (RFC 8620 7.3), one connection "
                                                                "for every folder"))
                self.on_state(LABEL, None)
                self.on_mail(None)
                self._read(resp, src.account_id)
            except (OSError, http.client.HTTPException) as e:
                if self.stop_event.is_set():
                    return
                raise SourceError(LABEL, f"connection lost: {describe_os_error(e) if isinstance(e, OSError) else e}"
                                  ) from None
            finally:
                with self._lock:
                    self._conn = None
                conn.close()
        finally:
            src.close()

    def _read(self, resp, account_id: str) -> None:
        """Read events until the stream ends or the watcher stops."""
        event = ""
        data: list[str] = []
        while not self.stop_event.is_set():
            line = resp.readline()
            if not line:
                if self.stop_event.is_set():
                    return
                raise SourceError(LABEL, "the server ended the event stream")
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text == "":
                if data or event:
                    self._event(event or "message", "\n".join(data), account_id)
                event, data = "", []
                continue
            if text.startswith(":"):
                continue   # a comment (some servers' keep-alive)
            field, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)

    def _event(self, event: str, data: str, account_id: str) -> None:
        if event == "ping":
            return
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        changed = doc.get("changed") if isinstance(doc, dict) else None
        if not isinstance(changed, dict):
            log.debug("%s: EventSource %s event without a StateChange: %r", self.account.name, event, data[:200])
            return
        types = changed.get(account_id)
        if not isinstance(types, dict):
            return
        email = types.get("Email")
        if email is None or email == self._last_state:
            return
        self._last_state = email
        log.debug("%s: EventSource: Email state %s", self.account.name, email)
        self.on_mail(None)
