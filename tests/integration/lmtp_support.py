"""Helpers for the LMTP tests: a server in a thread, a raw LMTP client, Maildir readers."""

from __future__ import annotations

import os
import socket
import textwrap

from fetchdeliver.config import Settings, parse_file
from fetchdeliver.sources.lmtp import LMTPService, ServerThread


def write_config(tmp_path, text: str) -> str:
    path = tmp_path / "config.toml"
    state = tmp_path / "state"
    body = textwrap.dedent(text)
    if "[delivery]" not in body:
        body += f'\n[delivery]\nstate_dir = "{state}"\n'
    path.write_text(body)
    return str(path)


class Server:
    """An LMTPService listening on 127.0.0.1 (ephemeral port) in a background thread."""

    def __init__(self, config_path: str, *, outbound=None, unix: str | None = None) -> None:
        self.settings = Settings(parse_file(config_path), config_path)
        self.service = LMTPService(self.settings, outbound=outbound)
        self.service.check()
        self.thread = ServerThread(self.service)
        if unix:
            self.path = self.thread.listen_unix(unix)
            self.host, self.port = None, None
        else:
            self.host, self.port = self.thread.listen_tcp("127.0.0.1", 0)

    def stop(self) -> None:
        self.thread.stop()


class RawClient:
    """A line-level LMTP client that sends exactly the bytes it is given."""

    def __init__(self, host: str, port: int, timeout: float = 60) -> None:
        self.sock = socket.create_connection((host, port), timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, list[str]]:
        """One (possibly multi-line) reply: (code, [text lines])."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"connection closed; got so far: {self.buf!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text[4:])
            if text[3:4] != "-":
                return int(text[:3]), lines

    def cmd(self, line: str | bytes) -> tuple[int, list[str]]:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def dot_stuff(payload: bytes) -> bytes:
    """The DATA body for `payload` (which must end in CRLF): leading dots doubled, then CRLF.CRLF."""
    lines = payload.split(b"\r\n")
    out = b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in lines)
    return out + b".\r\n"


def to_wire(raw: bytes) -> bytes:
    """What an MTA puts on the wire for a stored message: LF -> CRLF, ending in CRLF."""
    import re

    wire = re.sub(rb"(?<!\r)\n", b"\r\n", raw)
    if not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    return wire


def maildir_messages(root) -> list[bytes]:
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(root, sub)
        if os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                with open(os.path.join(d, name), "rb") as f:
                    out.append(f.read())
    return out


def split_trace(stored: bytes) -> tuple[bytes, bytes]:
    """(the Return-Path, Delivered-To and Received headers a final delivery put on top, the rest)."""
    pos = 0
    for name in (b"return-path:", b"delivered-to:", b"received:"):
        nl = stored.find(b"\n", pos)
        assert stored[pos:pos + len(name)].lower() == name, stored[:300]
        pos = nl + 1
        while stored[pos:pos + 1] in (b" ", b"\t"):  # continuation lines
            pos = stored.find(b"\n", pos) + 1
    return stored[:pos], stored[pos:]
