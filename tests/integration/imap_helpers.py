"""Helpers for the IMAP server tests: a Maildir with mail, a passwd-file, our server on an ephemeral port."""

from __future__ import annotations


from fetchdeliver.delivery.maildir import MaildirStore
from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password
from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer

MULTIPART = (
    b"From: \"Ann Example\" <ann@example.org>\n"
    b"To: Team: bob@example.com, carol@example.com;, dave@example.net\n"
    b"Cc: =?UTF-8?Q?J=C3=BCrgen?= <juergen@example.de>\n"
    b"Subject: =?UTF-8?B?w4RyZ2Vy?= report\n"
    b"Date: Tue, 02 Dec 2025 09:30:00 +0100\n"
    b"Message-ID: <multi.1@example.org>\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=\"XX\"\n"
    b"\n"
    b"preamble\n"
    b"--XX\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln, the zebra report\n"
    b"--XX\n"
    b"Content-Type: message/rfc822\n"
    b"\n"
    b"From: inner@example.org\n"
    b"Subject: inner message\n"
    b"\n"
    b"inner body\n"
    b"--XX\n"
    b"Content-Type: application/pdf; name=\"r.pdf\"\n"
    b"Content-Disposition: attachment; filename=\"r.pdf\"\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"JVBERi0xLjQK\n"
    b"--XX--\n"
    b"epilogue\n")


def plain(i: int, tag: str = "m") -> bytes:
    return (f"From: Sender {i} <sender{i}@example.org>\nTo: alice@example.com\nSubject: {tag} number {i}\n"
            f"Message-ID: <{tag}.{i}@example.org>\nDate: Mon, 24 Nov 2025 10:00:00 +0000\n\n"
            f"body of {tag} {i}\n").encode()


def make_server(tmp_path, users=None, n_plain: int = 3, extra=(), **cfg_kwargs):
    """(ThreadedServer, maildir path, passwd path); users: {name: password}, alice/secret by default."""
    maildir = str(tmp_path / "Maildir")
    store = MaildirStore(maildir)
    for i in range(1, n_plain + 1):
        store.deliver(plain(i))
    for raw in extra:
        store.deliver(raw)
    passwd = str(tmp_path / "passwd")
    for user, pw in (users or {"alice": "secret"}).items():
        set_password(passwd, user, pw, "SHA256-CRYPT")
    cfg_kwargs.setdefault("login_failure_delay", 0)
    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                       default_mail="maildir:" + maildir, **cfg_kwargs)
    server = ThreadedServer(cfg).start()
    return server, maildir, passwd


class RawClient:
    """A line-level IMAP client for what imapclient cannot send (bad input, literals, IDLE)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        import socket

        self.sock = socket.create_connection((host, port), timeout=30)
        self.f = self.sock.makefile("rb")
        self.greeting = self.f.readline()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.f.readline()

    def command(self, tag: str, text: bytes) -> list[bytes]:
        """Send `tag text`, return every line up to and including the tagged answer."""
        self.send(tag.encode() + b" " + text + b"\r\n")
        return self.until(tag)

    def until(self, tag: str) -> list[bytes]:
        lines = []
        while True:
            ln = self.f.readline()
            if not ln:
                raise EOFError(f"connection closed; got {lines!r}")
            lines.append(ln)
            if ln.startswith(tag.encode() + b" ") or ln.startswith(b"* BYE"):
                return lines

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
