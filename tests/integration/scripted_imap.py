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
        # folder -> [{"raw": bytes, "msgid": int, "labels": [str]}]; INBOX holds `messages` by default.
        self.folders: dict[str, list[dict]] = {"INBOX": [{"raw": m} for m in self.messages]}
        self.commands: list[str] = []       # every command line received, in order
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
                with self.lock:
                    self.commands.append(text.split(" ", 1)[1] if " " in text else text)
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
            name = args.strip()
            if name.startswith('"'):
                name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            if name not in self.folders:
                send(f"{tag} NO Mailbox doesn't exist: {name}")
                return True
            self.selected = name
            k = len(self.folders[name])
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

    selected = "INBOX"

    def _uid(self, tag: str, args: str, send) -> None:
        sub, _, rest = args.partition(" ")
        sub = sub.upper()
        box = self.folders[self.selected]
        uids = list(range(1, len(box) + 1))
        if sub == "SEARCH":
            send("* SEARCH " + " ".join(map(str, uids)) if uids else "* SEARCH", f"{tag} OK SEARCH completed")
        elif sub == "FETCH":
            wanted = _uid_set(rest.split(" ", 1)[0], len(box))
            items = rest.upper()
            for uid in wanted:
                m = box[uid - 1]
                raw = m["raw"]
                if "BODY" in items:
                    send(f"* {uid} FETCH (UID {uid} BODY[] {{{len(raw)}}}".encode() + b"\r\n" + raw + b")\r\n")
                    continue
                parts = [f"UID {uid}", f"RFC822.SIZE {len(raw)}"]
                if "X-GM-MSGID" in items:
                    parts.append(f"X-GM-MSGID {m.get('msgid', uid)}")
                if "X-GM-LABELS" in items:
                    parts.append("X-GM-LABELS (" + " ".join(_astring(x) for x in m.get("labels", [])) + ")")
                send(f"* {uid} FETCH ({' '.join(parts)})")
            send(f"{tag} OK FETCH completed")
        elif sub in ("STORE", "EXPUNGE"):
            send(f"{tag} OK {sub} completed")
        else:
            send(f"{tag} BAD unknown UID command {sub}")


def _astring(label: str) -> str:
    """A Gmail label on the wire: modified UTF-7, quoted (system labels like \\Inbox unquoted)."""
    from imapclient import imap_utf7

    enc = imap_utf7.encode(label)
    enc = enc.decode() if isinstance(enc, bytes) else enc
    if enc.startswith("\\") and enc[1:].isalnum():
        return enc
    return '"' + enc.replace("\\", "\\\\").replace('"', '\\"') + '"'


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


class GmailLabelsAcrossFolders(ScriptedIMAP):
    """Gmail (X-GM-EXT-1): one message is in every folder that shows one of its labels and in
    "[Gmail]/All Mail", with the same X-GM-MSGID everywhere; UID FETCH returns X-GM-MSGID and
    X-GM-LABELS (system labels such as \\Inbox and \\Important unquoted, others quoted, in modified
    UTF-7). `folders` maps a folder to its messages: {"raw": bytes, "msgid": int, "labels": [str]}."""

    capabilities = "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 UIDPLUS MOVE"

    def __init__(self, folders: dict[str, list[dict]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.folders = folders
