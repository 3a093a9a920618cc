"""Helpers for the POP3 server tests: our server on an ephemeral port over a Maildir, a Dovecot whose
pop3d serves a copy of the same Maildir, a raw line client, and a corpus of awkward messages."""

from __future__ import annotations

import os
import shutil
import socket

from dovecot import Dovecot

from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password
from fetchdeliver.pop3server.server import ServerConfig, ThreadedServer

# Messages where a POP3 server's wire form differs from the stored bytes: LF line ends, no final
# newline, lines starting with a dot, a header without a body, a body without a header, long lines.
AWKWARD = [
    b"From: a@example.org\nSubject: lf only\n\nline one\nline two\n",
    b"From: a@example.org\r\nSubject: crlf\r\n\r\nline one\r\nline two\r\n",
    b"From: a@example.org\nSubject: no final newline\n\nlast line",
    b"From: a@example.org\nSubject: dots\n\n.\n..\n.leading dot\nmiddle . dot\n.\n",
    b"From: a@example.org\nSubject: header only\n",
    b"From: a@example.org\nSubject: header and blank line\n\n",
    b"\nbody without a header\n.dot\n",
    b"From: a@example.org\nSubject: long line\n\n" + b"x" * 5000 + b"\n",
    b"From: a@example.org\nSubject: mixed\r\n\nline\r\nline\n\r\n",
    b"From: a@example.org\nSubject: many lines\n\n" + b"".join(b"line %d\n" % i for i in range(40)),
    "From: a@example.org\nSubject: 8bit Grüße\n\nKöln\n".encode(),
    b"From: a@example.org\nSubject: bare CR\n\nold\rmac\rline ends\r\nand a NUL \0 byte\n",
    b"From: a@example.org\nSubject: folded\n  header line\nX-Dot: .\n\n\n\ntwo blank lines above\n",
]


def plain(i: int, tag: str = "m") -> bytes:
    return (f"From: Sender {i} <sender{i}@example.org>\nTo: alice@example.com\nSubject: {tag} number {i}\n"
            f"Message-ID: <{tag}.{i}@example.org>\nDate: Mon, 24 Nov 2025 10:00:00 +0000\n\n"
            f"body of {tag} {i}\n.dotted\n").encode()


def make_pop3_server(tmp_path, maildir: str, users=None, **cfg_kwargs) -> ThreadedServer:
    """Our POP3 server over `maildir` (every user sees it); users: {name: password}, alice/secret by default."""
    passwd = str(tmp_path / "pop3.passwd")
    for user, pw in (users or {"alice": "secret"}).items():
        set_password(passwd, user, pw, "SHA256-CRYPT")
    cfg_kwargs.setdefault("login_failure_delay", 0)
    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                       default_mail="maildir:" + maildir, **cfg_kwargs)
    server = ThreadedServer(cfg).start()
    server.passwd = passwd
    return server


class Pop3Dovecot(Dovecot):
    """Dovecot with pop3_lock_session (one POP3 session per mailbox, as ours) and helpers to serve
    a copy of a Maildir and to fetch its Maildir back."""

    def __init__(self, users=None, **kwargs) -> None:
        kwargs.setdefault("extra_config", "pop3_lock_session = yes\n")
        super().__init__(users, **kwargs)

    def user_maildir(self, user: str) -> str:
        return os.path.join(self.home(user), "Maildir")

    def copy_maildir_to(self, user: str, dest: str) -> str:
        """Copy the user's Maildir (dovecot-uidlist included, Dovecot's own index files left out)."""
        shutil.copytree(self.user_maildir(user), dest,
                        ignore=shutil.ignore_patterns("dovecot.index*", "dovecot.list.index*"))
        return dest


class LineClient:
    """A raw POP3 client: commands and the answers' exact bytes (multi-line ones undotted not)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.f = self.sock.makefile("rb")
        self.greeting = self.f.readline()

    def line(self) -> bytes:
        return self.f.readline()

    def cmd(self, text: str, multi: bool = False) -> tuple[bytes, bytes]:
        """(status line, the multi-line body as sent, terminator included) for one command."""
        self.sock.sendall(text.encode() + b"\r\n")
        status = self.line()
        body = b""
        if multi and status.startswith(b"+OK"):
            body = self.rest()
        return status, body

    def rest(self) -> bytes:
        chunks = []
        while True:
            line = self.line()
            if not line:
                raise EOFError("connection closed in a multi-line answer")
            chunks.append(line)
            if line == b".\r\n":
                return b"".join(chunks)

    def login(self, user: str, password: str) -> bytes:
        assert self.cmd(f"USER {user}")[0].startswith(b"+OK")
        return self.cmd(f"PASS {password}")[0]

    def close(self) -> None:
        """Close at once (the file object holds the socket open too)."""
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass
