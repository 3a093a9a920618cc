"""SORT keys and THREAD facts kept in the Maildir index (table `sortkey`): a restarted server sorts
and threads from them without reading the messages; an expunged message's keys go with it."""

from __future__ import annotations

import os
import sqlite3

import pytest

from fetchdeliver.storage.index import INDEX_NAME
from imap_helpers import RawClient, make_server
from test_storage_index_imap import _files, _restart

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
