"""A raw ManageSieve client for tests, and a Dovecot with Pigeonhole's managesieve to compare against.

    c = SieveClient(port); c.greeting  -> Reply
    r = c.cmd(b'PUTSCRIPT "a" {5+}\\r\\nkeep;')  -> Reply(kind="OK", code=None, text=..., lines=[...])
"""

from __future__ import annotations

import base64
import os
import re
import socket

from dovecot import Dovecot, free_ports

_FINAL = re.compile(rb"^(OK|NO|BYE)(?: \(([^)]*)\))?(?: (.*))?$", re.S)


class Reply:
    def __init__(self, kind: str, code: str | None, text: bytes, lines: list[bytes]) -> None:
        self.kind = kind
        self.code = code           # the response code, e.g. "QUOTA/MAXSIZE" or 'TAG "x"'
        self.text = text           # the human-readable string (unquoted)
        self.lines = lines         # data lines before the final one (literals inlined)

    @property
    def code_name(self) -> str | None:
        """The code's first word, upper-cased ("TAG", "QUOTA/MAXSIZE", ...)."""
        return self.code.split()[0].upper() if self.code else None

    def __repr__(self) -> str:
        return f"Reply({self.kind} ({self.code}) {self.text!r} lines={self.lines!r})"


class SieveClient:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30) -> None:
        self.sock = socket.create_connection((host, port), timeout)
        self.buf = b""
        self.greeting = self.read_reply()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; unread: {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed inside a literal")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _full_line(self) -> bytes:
        """One logical line with any literal in it read in."""
        line = self._line()
        m = re.search(rb"\{(\d+)\}$", line)
        while m:
            data = self._exact(int(m.group(1)))
            rest = self._line()
            line = line[:m.start()] + b"{" + data + b"}" + rest
            m = re.search(rb"\{(\d+)\}$", rest)
        return line

    def read_reply(self) -> Reply:
        lines = []
        while True:
            line = self._full_line()
            m = _FINAL.match(line)
            if m:
                text = (m.group(3) or b"")
                if text.startswith(b'"') and text.endswith(b'"'):
                    text = text[1:-1]
                elif text.startswith(b"{") and text.endswith(b"}"):
                    text = text[1:-1]
                return Reply(m.group(1).decode(), m.group(2).decode() if m.group(2) else None, text, lines)
            lines.append(line)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, data: bytes) -> Reply:
        self.sock.sendall(data + b"\r\n")
        return self.read_reply()

    def login(self, user: str, password: str) -> Reply:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return self.cmd(f'AUTHENTICATE "PLAIN" "{token}"'.encode())

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def literal(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


class SieveDovecot(Dovecot):
    """Dovecot with Pigeonhole's managesieve on its own ephemeral 127.0.0.1 port (`port("sieve")`)."""

    def __init__(self, users=None, *, max_scripts: int = 0, max_script_size: str = "1M", **kwargs) -> None:
        if not os.path.exists("/usr/lib/dovecot/managesieve"):
            from dovecot import DovecotUnavailable

            raise DovecotUnavailable("dovecot-managesieved is not installed (/usr/lib/dovecot/managesieve)")
        self.max_scripts = max_scripts
        self.max_script_size = max_script_size
        super().__init__(users, protocols=("imap", "pop3", "sieve"), **kwargs)

    def _config_text(self) -> str:
        self.ports["sieve"] = free_ports(1)[0]
        login = "  chroot =\n" if os.geteuid() != 0 else ""
        return super()._config_text() + f"""
service managesieve-login {{
{login}  inet_listener sieve {{
    address = 127.0.0.1
    port = {self.ports['sieve']}
  }}
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
  sieve_quota_max_scripts = {self.max_scripts}
  sieve_max_script_size = {self.max_script_size}
}}
"""
