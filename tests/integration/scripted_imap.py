"""A scripted IMAP responder on 127.0.0.1 for provider behaviour no server here can reproduce.

Only for what Dovecot cannot be made to do: Microsoft 365's "Request is throttled. Suggested
Backoff Time" replies, Gmail's "Too many simultaneous connections" refusals (and, later, Gmail's
X-GM-* items). It speaks just enough IMAP4rev1 for fetchdeliver's fetch pass over one INBOX:
CAPABILITY, LOGIN, SELECT/EXAMINE, UID SEARCH, UID FETCH, NOOP, LOGOUT. Each behaviour is a
subclass named after the provider behaviour it reproduces; `connections` records when each
connection arrived and what it was told, for the test to check.

    with MicrosoftThrottlesWithSuggestedBackoff(messages=[raw], backoff_ms=5000) as srv:
        srv.port, srv.connections
"""

from __future__ import annotations

import re
import socket
import socketserver
import threading
import time


class Refuse(Exception):
    """Raised by a behaviour hook: send these lines, then close the connection."""

    def __init__(self, *lines: str) -> None:
        self.lines = lines


class ScriptedIMAP:
    """The plain behaviour (every command succeeds); subclasses override the hooks."""

    capabilities = "IMAP4rev1 IDLE UIDPLUS"

    def __init__(self, messages: list[bytes] | None = None, **kwargs) -> None:
        self.messages = list(messages or [])
        self.options = kwargs
        self.connections: list[dict] = []   # {"at": time.time(), "refused": text or None}
        self.lock = threading.Lock()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    # -- hooks: raise Refuse(...) to answer with those lines and hang up ------------------------
    def on_login(self, n: int, tag: str) -> None:
        """Called for LOGIN on connection number `n` (1-based)."""

    def on_select(self, n: int, tag: str) -> None:
        """Called for SELECT/EXAMINE on connection number `n`."""

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> "ScriptedIMAP":
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                owner._serve(self.rfile, self.wfile)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "ScriptedIMAP":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    # -- the session --------------------------------------------------------------------------
    def _serve(self, rfile, wfile) -> None:
        with self.lock:
            self.connections.append({"at": time.time(), "refused": None})
            n = len(self.connections)

        def send(*lines: str | bytes) -> None:
            for line in lines:
                wfile.write(line if isinstance(line, bytes) else line.encode() + b"\r\n")
            wfile.flush()

        send(f"* OK [CAPABILITY {self.capabilities}] scripted responder ready")
        try:
            while True:
                line = rfile.readline()
                if not line:
                    return
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                tag, _, rest = text.partition(" ")
                cmd, _, args = rest.partition(" ")
                cmd = cmd.upper()
                try:
                    if not self._command(n, tag, cmd, args, send):
                        return
                except Refuse as r:
                    with self.lock:
                        self.connections[n - 1]["refused"] = " / ".join(r.lines)
                    send(*r.lines)
                    return
        except (ConnectionError, socket.timeout, OSError):
            return

    def _command(self, n: int, tag: str, cmd: str, args: str, send) -> bool:
        if cmd == "CAPABILITY":
            send(f"* CAPABILITY {self.capabilities}", f"{tag} OK CAPABILITY completed")
        elif cmd == "LOGIN":
            self.on_login(n, tag)
            send(f"{tag} OK [CAPABILITY {self.capabilities}] LOGIN completed")
        elif cmd in ("SELECT", "EXAMINE"):
            self.on_select(n, tag)
            k = len(self.messages)
            send(f"* {k} EXISTS", "* 0 RECENT", "* OK [UIDVALIDITY 42] UIDs valid",
                 f"* OK [UIDNEXT {k + 1}] next", "* FLAGS (\\Seen \\Deleted)",
                 f"{tag} OK [{'READ-ONLY' if cmd == 'EXAMINE' else 'READ-WRITE'}] {cmd} completed")
        elif cmd == "UID":
            self._uid(tag, args, send)
        elif cmd == "NOOP":
            send(f"{tag} OK NOOP completed")
        elif cmd == "LOGOUT":
            send("* BYE logging out", f"{tag} OK LOGOUT completed")
            return False
        else:
            send(f"{tag} BAD unknown command {cmd}")
        return True

    def _uid(self, tag: str, args: str, send) -> None:
        sub, _, rest = args.partition(" ")
        sub = sub.upper()
        uids = list(range(1, len(self.messages) + 1))
        if sub == "SEARCH":
            send("* SEARCH " + " ".join(map(str, uids)) if uids else "* SEARCH", f"{tag} OK SEARCH completed")
        elif sub == "FETCH":
            wanted = _uid_set(rest.split(" ", 1)[0], len(self.messages))
            for uid in wanted:
                raw = self.messages[uid - 1]
                if "BODY" in rest.upper():
                    send(f"* {uid} FETCH (UID {uid} BODY[] {{{len(raw)}}}".encode() + b"\r\n" + raw + b")\r\n")
                else:
                    send(f"* {uid} FETCH (UID {uid} RFC822.SIZE {len(raw)})")
            send(f"{tag} OK FETCH completed")
        elif sub in ("STORE", "EXPUNGE"):
            send(f"{tag} OK {sub} completed")
        else:
            send(f"{tag} BAD unknown UID command {sub}")


def _uid_set(text: str, top: int) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if ":" in part:
            a, b = part.split(":")
            lo = int(a)
            hi = top if b == "*" else int(b)
            out.extend(range(lo, min(hi, top) + 1))
        elif re.fullmatch(r"\d+", part):
            if int(part) <= top:
                out.append(int(part))
    return out


class MicrosoftThrottlesWithSuggestedBackoff(ScriptedIMAP):
    """Microsoft 365 (outlook.office365.com) under load: the first `throttled` connections are told
    `NO Request is throttled. Suggested Backoff Time: N milliseconds` at SELECT, then
    `* BYE Connection closed. 14`, and the connection is closed."""

    capabilities = "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE " \
                   "NAMESPACE LITERAL+"

    def on_select(self, n: int, tag: str) -> None:
        if n <= self.options.get("throttled", 1):
            ms = self.options.get("backoff_ms", 5000)
            raise Refuse(f"{tag} NO Request is throttled. Suggested Backoff Time: {ms} milliseconds",
                         "* BYE Connection closed. 14")


class GmailTooManySimultaneousConnections(ScriptedIMAP):
    """Gmail when an account already has 15 connections: LOGIN answers
    `NO [ALERT] Too many simultaneous connections. (Failure)` for the first `refused` connections."""

    capabilities = "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 UIDPLUS MOVE"

    def on_login(self, n: int, tag: str) -> None:
        if n <= self.options.get("refused", 1):
            raise Refuse(f"{tag} NO [ALERT] Too many simultaneous connections. (Failure)")
