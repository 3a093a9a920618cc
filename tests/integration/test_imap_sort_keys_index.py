"""SORT keys and THREAD facts kept in the Maildir index (table `sortkey`): a restarted server sorts
and threads from them without reading the messages; an expunged message's keys go with it."""

from __future__ import annotations

import os
import sqlite3

import pytest

from fetchdeliver.imapserver.auth import PasswdFileAuthenticator
from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer
from fetchdeliver.storage.index import INDEX_NAME
from imap_helpers import RawClient, make_server

pytestmark = pytest.mark.timeout(120)


def _msg(i: int, subject: str, date: str, refs: str = "") -> bytes:
    return (f"From: Person {i} <p{i}@example.org>\nTo: t{9 - i}@example.org\nSubject: {subject}\n"
            f"Date: {date}\nMessage-ID: <k{i}@x>\n" + (f"References: {refs}\n" if refs else "")
            + f"\nbody {i}\n").encode()


MAIL = [_msg(1, "zebra", "Mon, 1 Dec 2025 10:00:00 +0000"),
        _msg(2, "Re: apple", "Mon, 1 Dec 2025 08:00:00 +0000", "<k3@x>"),
        _msg(3, "apple", "Sun, 30 Nov 2025 08:00:00 +0000"),
        _msg(4, "mango", "Tue, 2 Dec 2025 07:00:00 +0100")]
COMMANDS = ["UID SORT (DATE) UTF-8 ALL", "UID SORT (SUBJECT) UTF-8 ALL", "UID SORT (REVERSE FROM) UTF-8 ALL",
            "UID SORT (TO) UTF-8 ALL", "UID THREAD REFERENCES UTF-8 ALL", "UID THREAD ORDEREDSUBJECT UTF-8 ALL"]


def _files(maildir: str) -> list[str]:
    return [os.path.join(maildir, sub, n) for sub in ("cur", "new") for n in os.listdir(os.path.join(maildir, sub))]


def _restart(server, maildir: str, passwd: str):
    server.stop()
    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                       default_mail="maildir:" + maildir, login_failure_delay=0)
    return ThreadedServer(cfg).start()


def _answers(port: int) -> list[bytes]:
    c = RawClient(port)
    c.command("a", b"LOGIN alice secret")
    c.command("b", b"SELECT INBOX")
    out = []
    for i, cmd in enumerate(COMMANDS):
        lines = c.command(f"t{i}", cmd.encode())
        assert lines[-1].startswith(f"t{i} OK".encode()), lines
        out.append(b"".join(lines[:-1]))
    c.command("z", b"LOGOUT")
    return out


def _kept(maildir: str) -> dict:
    db = sqlite3.connect(os.path.join(maildir, INDEX_NAME))
    try:
        return {(n, u): v for n, u, v in db.execute("SELECT name, uid, value FROM sortkey")}
    finally:
        db.close()


def test_a_restarted_server_sorts_and_threads_from_the_kept_keys(tmp_path):
    server, maildir, passwd = make_server(tmp_path, n_plain=0, extra=MAIL)
    try:
        first = _answers(server.port())
        assert first[0] == b"* SORT 3 2 1 4\r\n"
        kept = _kept(maildir)
        assert {n for n, _ in kept} == {"sort:DATE", "sort:SUBJECT", "sort:FROM", "sort:TO", "thread:facts"}
        assert kept[("sort:SUBJECT", 2)] == "APPLE"
        server = _restart(server, maildir, passwd)      # nothing in memory survives this
        # Content under a UID never changes (RFC 3501); change it anyway: only the index knows the old.
        for path in _files(maildir):
            with open(path, "r+b") as f:
                data = f.read().replace(b"Dec 2025", b"Jan 2020").replace(b"apple", b"xxxxx")
                f.seek(0)
                f.write(data)
        db = sqlite3.connect(os.path.join(maildir, INDEX_NAME))     # and the cached header fields: gone
        with db:
            db.execute("DELETE FROM field")
            db.execute("UPDATE msg SET hdr = NULL")
        db.close()
        assert _answers(server.port()) == first
    finally:
        server.stop()


def test_expunged_messages_take_their_keys_along(tmp_path):
    server, maildir, passwd = make_server(tmp_path, n_plain=0, extra=MAIL)
    try:
        _answers(server.port())
        assert ("sort:DATE", 2) in _kept(maildir)
        c = RawClient(server.port())
        c.command("a", b"LOGIN alice secret")
        c.command("b", b"SELECT INBOX")
        c.command("c", b"UID STORE 2 +FLAGS (\\Deleted)")
        assert c.command("d", b"EXPUNGE")[-1].startswith(b"d OK")
        kept = _kept(maildir)
        assert not [k for k in kept if k[1] == 2] and ("sort:DATE", 1) in kept
    finally:
        server.stop()


def test_kept_orders_follow_expunges_and_new_mail(tmp_path):
    """SORT and THREAD give their last answer again only for the same messages under the same
    numbers: after an EXPUNGE the sequence numbers move, after a delivery there is one more."""
    server, maildir, passwd = make_server(tmp_path, n_plain=0, extra=MAIL)
    try:
        c = RawClient(server.port())
        c.command("a", b"LOGIN alice secret")
        c.command("b", b"SELECT INBOX")

        def ask(tag: str, cmd: bytes) -> bytes:
            lines = c.command(tag, cmd)
            assert lines[-1].startswith(tag.encode() + b" OK"), lines
            return next(ln for ln in lines if ln.startswith((b"* SORT", b"* THREAD")))

        for _ in range(2):      # the second time from the kept answers
            assert ask("s", b"SORT (DATE) UTF-8 ALL") == b"* SORT 3 2 1 4\r\n"
            assert ask("u", b"UID SORT (DATE) UTF-8 ALL") == b"* SORT 3 2 1 4\r\n"
            assert ask("t", b"THREAD ORDEREDSUBJECT UTF-8 ALL") == b"* THREAD (3 2)(1)(4)\r\n"
            assert ask("r", b"SORT (REVERSE SUBJECT) UTF-8 UNSEEN") == b"* SORT 1 4 2 3\r\n"
        c.command("d", b"UID STORE 3 +FLAGS (\\Deleted)")
        c.command("e", b"EXPUNGE")
        assert ask("s", b"SORT (DATE) UTF-8 ALL") == b"* SORT 2 1 3\r\n"
        assert ask("u", b"UID SORT (DATE) UTF-8 ALL") == b"* SORT 2 1 4\r\n"
        assert ask("t", b"THREAD ORDEREDSUBJECT UTF-8 ALL") == b"* THREAD (2)(1)(3)\r\n"
        assert ask("v", b"UID THREAD ORDEREDSUBJECT UTF-8 ALL") == b"* THREAD (2)(1)(4)\r\n"
        from fetchdeliver.delivery.maildir import MaildirStore

        MaildirStore(maildir).deliver(_msg(5, "aardvark", "Wed, 3 Dec 2025 07:00:00 +0000"))
        c.command("n", b"NOOP")
        assert ask("s", b"SORT (SUBJECT) UTF-8 ALL") == b"* SORT 4 2 3 1\r\n"
        assert ask("t", b"THREAD ORDEREDSUBJECT UTF-8 ALL") == b"* THREAD (2)(1)(3)(4)\r\n"
        c.command("z", b"LOGOUT")
    finally:
        server.stop()
