"""Shared by the JMAP tests: a module-wide real Cyrus, a fresh user per test, a config with one JMAP
account, and reading what was delivered."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest
from fetchsetup import split_received, toml_value

from cyrus import Cyrus, CyrusUnavailable


@pytest.fixture(scope="module")
def cyrus():
    try:
        cy = Cyrus()
    except CyrusUnavailable as e:
        pytest.skip(str(e))
    try:
        cy.start()
    except BaseException:
        cy.cleanup()
        raise
    yield cy
    cy.cleanup()


_n = [0]


@pytest.fixture
def user(cyrus):
    """A fresh Cyrus user (one per test: the server is shared by the module)."""
    _n[0] += 1
    name = f"u{os.getpid()}x{_n[0]}"
    cyrus.add_user(name, "pw-" + name)
    return name


class JmapSetup:
    """A config with one JMAP account on the Cyrus fixture, and ways to run fetch."""

    def __init__(self, tmp_path, cyrus: Cyrus, user: str, cmd: list[str], **keys) -> None:
        self.cyrus = cyrus
        self.user = user
        self.cmd = cmd
        self.maildir = str(tmp_path / "Mail")
        self.state_dir = str(tmp_path / "state")
        self.config = str(tmp_path / "config.toml")
        self.keys = {"name": "jm", "protocol": "jmap", "host": "127.0.0.1", "port": cyrus.port("http"),
                     "tls": "none", "user": user, "password": cyrus.users[user], **keys}
        self.write()

    def write(self) -> None:
        lines = ["[delivery]", f"maildir = {toml_value(self.maildir)}", f"state_dir = {toml_value(self.state_dir)}",
                 "", "[[account]]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in self.keys.items() if v is not None]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd + ["fetch", "-c", self.config, *args], capture_output=True, text=True,
                              timeout=120)

    def delivered(self) -> list[bytes]:
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            if os.path.isdir(d):
                for fn in sorted(os.listdir(d)):
                    with open(os.path.join(d, fn), "rb") as f:
                        out.append(f.read())
        return out

    def sync_point(self):
        db = sqlite3.connect(os.path.join(self.state_dir, "state.sqlite"))
        try:
            return db.execute("SELECT jmap_account, scope, state FROM jmap_sync").fetchall()
        finally:
            db.close()


def msg(i: int, extra: bytes = b"") -> bytes:
    return (b"From: Sender <sender@example.org>\r\nTo: rcpt@example.org\r\n"
            b"Subject: message %d\r\nMessage-ID: <m%d.%d@example.org>\r\n" % (i, i, os.getpid())
            + extra + b"\r\nbody of %d\r\nline two \xc3\xa9\r\n" % i)


def bodies(delivered: list[bytes]) -> list[bytes]:
    return sorted(split_received(raw)[1] for raw in delivered)
