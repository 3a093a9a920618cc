"""Differential test: fetchmail / getmail with the original rc vs `fetchdeliver fetch` with the converted
[[account]] TOML, against a real Dovecot. alice's and bob's mailboxes start identical; the original tool
reads alice's, fetchdeliver bob's. Both must deliver the same messages and leave the same on the server.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

FD = str(Path(sys.executable).with_name("fetchdeliver"))
FETCHMAIL = shutil.which("fetchmail")
GETMAIL = shutil.which("getmail")


def _msg(n: int, subject: str) -> bytes:
    return (f"From: sender{n}@example.org\nTo: alice@example.org\nSubject: {subject}\n"
            f"Message-ID: <fetch{n}@test>\nDate: Tue, 01 Dec 2026 10:00:{n:02d} +0000\n\n"
            f"body {n}\n").encode()


def _populate(dovecot, *, seen_one: bool = False) -> None:
    for user in ("alice", "bob"):
        for n in range(1, 5):
            dovecot.append(user, _msg(n, f"inbox {n}"), flags="S" if (seen_one and n == 4) else "")
        for n in range(5, 7):
            dovecot.append(user, _msg(n, f"lists {n}"), folder="Lists")


def _delivered(maildir: Path) -> list[str]:
    out = []
    for sub in ("new", "cur"):
        d = maildir / sub
        if d.is_dir():
            out += [email.message_from_bytes(p.read_bytes())["Message-ID"] for p in d.iterdir()]
    return sorted(out)


def _server(dovecot, user: str) -> dict[str, list[tuple[str, bool]]]:
    """folder -> sorted (Message-ID, seen) of what is still there (not \\Deleted)."""
    out = {}
    for folder in ("INBOX", "Lists"):
        rows = []
        for flags, raw in dovecot.contents(user, folder).values():
            if b"\\Deleted" in flags:
                continue
            rows.append((email.message_from_bytes(raw)["Message-ID"], b"\\Seen" in flags))
        out[folder] = sorted(rows)
    return out


def _run_fetchdeliver(tmp: Path, toml: str) -> None:
    cfg = tmp / "fd.toml"
    cfg.write_text(f'[delivery]\nmaildir = "{tmp / "unused"}"\nstate_dir = "{tmp / "state"}"\n'
                   f'cache_dir = "{tmp / "cache"}"\nfsync = false\n\n' + toml)
    r = subprocess.run([FD, "config", "check", "-c", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr + toml
    r = subprocess.run([FD, "fetch", "-c", str(cfg)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def _convert(kind: str, rc: Path) -> str:
    r = subprocess.run([FD, "convert", kind, str(rc), "--copy-password"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, f"{r.stderr}\n{r.stdout}"
    return r.stdout


FETCHMAIL_CASES = {
    # name: (rc body after the poll line, seen_one, expected server state for a fresh mailbox)
    "imap-ssl-keep": ("proto imap port {imaps}\n  user \"{user}\" password \"{password}\"\n"
                      "  options ssl sslcertck sslcertfile \"{ca}\" keep folder INBOX,Lists\n"
                      "  mda \"{mda}\"\n", False),
    "imap-plain-keep-fetchall": ("proto imap port {imap}\n  user \"{user}\" password \"{password}\"\n"
                                 "  options sslproto '' keep fetchall folder INBOX\n  mda \"{mda}\"\n", True),
    "pop3-ssl-delete": ("proto pop3 port {pop3s}\n  user \"{user}\" password \"{password}\"\n"
                        "  options ssl sslcertck sslcertfile \"{ca}\"\n  mda \"{mda}\"\n", False),
    # issue 17: `via` (the poll name is a label) and `uidl` with `keep` (fetchdeliver remembers UIDLs)
    "pop3-via-uidl-keep": ("via 127.0.0.1 proto pop3 port {pop3} uidl\n  user \"{user}\" password \"{password}\"\n"
                           "  options sslproto '' keep\n  mda \"{mda}\"\n", False),
}


@pytest.mark.skipif(not FETCHMAIL, reason="fetchmail not installed")
@pytest.mark.parametrize("case", sorted(FETCHMAIL_CASES))
def test_fetchmailrc_fetches_what_fetchmail_fetches(tmp_path, dovecot, case):
    body, seen_one = FETCHMAIL_CASES[case]
    _populate(dovecot, seen_one=seen_one)
    ports = {p: dovecot.port(p) for p in ("imap", "imaps", "pop3", "pop3s")}

    def rc(user: str, out: Path) -> Path:
        out.mkdir(parents=True)
        for sub in ("new", "cur", "tmp"):
            (out / sub).mkdir()
        path = tmp_path / f"fetchmailrc-{user}"
        # "localhost": fetchmail checks the certificate's DNS names, not its IP address.
        path.write_text("set no syslog\npoll localhost " + body.format(
            user=user, password=dovecot.users[user], ca=dovecot.ca_file, mda=f"{FD} deliver --maildir {out}",
            **ports))
        path.chmod(0o600)
        return path

    fm_out = tmp_path / "fetchmail-out"
    rc_alice = rc("alice", fm_out)
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    r = subprocess.run([FETCHMAIL, "-f", str(rc_alice), "--nodetach", "--idfile", str(tmp_path / "ids"),
                        "--pidfile", str(tmp_path / "fetchmail.pid")],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr

    fd_out = tmp_path / "fd-out"
    toml = _convert("fetchmailrc", rc("bob", fd_out))
    _run_fetchdeliver(tmp_path, toml)

    want, got = _delivered(fm_out), _delivered(fd_out)
    assert want, "fetchmail fetched nothing: the comparison would be vacuous"
    assert got == want, toml
    if case == "pop3-via-uidl-keep":
        # fetchmail reads a kept POP3 message with TOP, fetchdeliver with RETR, after which Dovecot
        # sets \Seen (seen from IMAP); which messages stay on the server must agree.
        strip = lambda s: {f: sorted(m for m, _ in rows) for f, rows in s.items()}  # noqa: E731
        assert strip(_server(dovecot, "bob")) == strip(_server(dovecot, "alice")), toml
        assert "uidl: fetchdeliver always remembers" in toml
        return
    assert _server(dovecot, "bob") == _server(dovecot, "alice"), toml


GETMAIL_CASES = {
    "imap-ssl-keep": ("SimpleIMAPSSLRetriever", "imaps", 'mailboxes = ("INBOX", "Lists")\n'
                      "ca_certs = {ca}\n", "delete = false\n"),
    "pop3-ssl-delete": ("SimplePOP3SSLRetriever", "pop3s", "ca_certs = {ca}\n", "delete = true\n"),
    "imap-plain-delete": ("SimpleIMAPRetriever", "imap", 'mailboxes = ("INBOX",)\n', "delete = true\n"),
    # issue 17: a MultiDestination whose store is a [section]
    "pop3-ssl-multidestination": ("SimplePOP3SSLRetriever", "pop3s", "ca_certs = {ca}\n", "delete = true\n"),
}


@pytest.mark.skipif(not GETMAIL, reason="getmail not installed")
@pytest.mark.parametrize("case", sorted(GETMAIL_CASES))
def test_getmailrc_fetches_what_getmail_fetches(tmp_path, dovecot, case, request):
    rtype, listener, extra, options = GETMAIL_CASES[case]
    _populate(dovecot)
    # getmail refuses to deliver as root and delivers as nobody, who cannot enter pytest's 0700 tmp_path.
    shared = Path(tempfile.mkdtemp(prefix="fd-getmail-", dir="/tmp"))
    shared.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))

    def rc(user: str, out: Path) -> Path:
        for sub in ("", "new", "cur", "tmp"):
            (out / sub).mkdir(parents=True, exist_ok=True)
            (out / sub).chmod(0o777)
        path = tmp_path / f"getmailrc-{user}"
        path.write_text(
            f"[retriever]\ntype = {rtype}\nserver = 127.0.0.1\nport = {dovecot.port(listener)}\n"
            f"username = {user}\npassword = {dovecot.users[user]}\n" + extra.format(ca=dovecot.ca_file) +
            ("\n[destination]\ntype = MultiDestination\ndestinations = ('[store]',)\n\n[store]\n"
               if "multidestination" in case else "\n[destination]\n")
            + f"type = Maildir\npath = {out}/\n"
            + ("user = nobody\n" if os.geteuid() == 0 else "") + "\n[options]\nread_all = true\n" + options)
        return path

    gm_out = shared / "getmail-out"
    rc_alice = rc("alice", gm_out)
    gm_dir = tmp_path / "getmail-state"
    gm_dir.mkdir()
    r = subprocess.run([GETMAIL, "--getmaildir", str(gm_dir), "--rcfile", str(rc_alice), "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr

    fd_out = tmp_path / "fd-out"
    toml = _convert("getmailrc", rc("bob", fd_out))
    assert f'maildir = "{fd_out}"' in toml
    _run_fetchdeliver(tmp_path, toml)

    want, got = _delivered(gm_out), _delivered(fd_out)
    assert want, "getmail fetched nothing: the comparison would be vacuous"
    assert got == want, toml
    # getmail may set \Seen when it reads over IMAP; what must agree is which messages are left.
    strip = lambda s: {f: sorted(m for m, _ in rows) for f, rows in s.items()}  # noqa: E731
    assert strip(_server(dovecot, "bob")) == strip(_server(dovecot, "alice")), toml
