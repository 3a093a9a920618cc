"""OBJECTID (RFC 8474) and PREVIEW (RFC 8970) on our server over a socket, following the RFCs'
examples: MAILBOXID in CREATE, SELECT and STATUS, kept by RENAME; EMAILID and THREADID in FETCH,
kept by COPY and MOVE, the same after a restart (and after the index is deleted); SEARCH EMAILID and
THREADID; FETCH PREVIEW and PREVIEW (LAZY)."""

from __future__ import annotations

import os
import re

import pytest

from fetchdeliver.imapserver.server import ThreadedServer
from imap_helpers import RawClient, make_server, plain

pytestmark = pytest.mark.timeout(60)

REPLY = (b"From: b@example.org\nTo: alice@example.com\nSubject: Re: m number 1\nMessage-ID: <reply.1@example.org>\n"
         b"In-Reply-To: <m.1@example.org>\nReferences: <m.1@example.org>\n\nThanks for the\n   report.\n")
ID = rb"[A-Za-z0-9_-]{1,255}"


def login(server) -> RawClient:
    c = RawClient(server.addresses[0][1])
    assert c.command("a", b"LOGIN alice secret")[-1].startswith(b"a OK")
    return c


def fetch_ids(c: RawClient, tag: str, what: bytes = b"1:*") -> dict[int, tuple[bytes, bytes]]:
    out = {}
    for ln in c.command(tag, b"UID FETCH " + what + b" (EMAILID THREADID)")[:-1]:
        m = re.match(rb"\* \d+ FETCH \(UID (\d+) EMAILID \((" + ID + rb")\) THREADID \((" + ID + rb")\)\)\r\n", ln)
        assert m, ln
        out[int(m.group(1))] = (m.group(2), m.group(3))
    return out


def test_mailboxid_rfc_8474_section_4(tmp_path):
    server, _, _ = make_server(tmp_path)
    c = login(server)
    try:
        capa = c.command("b", b"CAPABILITY")[0].split()
        assert b"OBJECTID" in capa and b"PREVIEW" in capa
        # 4.1: CREATE answers the new mailbox's id
        got = c.command("c", b'CREATE "foo"')[-1]
        m = re.match(rb"c OK \[MAILBOXID \((" + ID + rb")\)\] ", got)
        assert m, got
        foo = m.group(1)
        # 4.2: SELECT says it; 4.3: STATUS MAILBOXID; RENAME keeps it
        got = c.command("d", b"SELECT foo")
        assert b"* OK [MAILBOXID (" + foo + b")] Ok.\r\n" in got
        c.command("e", b"UNSELECT")
        assert c.command("f", b'RENAME "foo" "bar"')[-1].startswith(b"f OK")
        assert c.command("g", b"STATUS bar (MAILBOXID)")[0] == b'* STATUS "bar" (MAILBOXID (' + foo + b"))\r\n"
        inbox = c.command("h", b"STATUS INBOX (MAILBOXID)")[0]
        assert foo not in inbox
        c.command("i", b'CREATE "foo"')      # a new mailbox of the old name: another id
        assert foo not in c.command("j", b"STATUS foo (MAILBOXID)")[0]
    finally:
        c.close()
        server.stop()


def test_emailid_threadid_rfc_8474_section_5(tmp_path):
    server, maildir, _ = make_server(tmp_path, n_plain=2, extra=[REPLY])
    c = login(server)
    try:
        c.command("b", b"SELECT INBOX")
        ids = fetch_ids(c, "c")
        assert len({e for e, _ in ids.values()}) == 3
        assert ids[1][1] == ids[3][1] != ids[2][1]       # the reply is in message 1's thread
        # 5.1: COPY and MOVE keep the EMAILID (and THREADID)
        c.command("d", b"CREATE Archive")
        c.command("e", b"UID COPY 1 Archive")
        c.command("f", b"UID MOVE 3 Archive")
        c.command("g", b"SELECT Archive")
        assert sorted(fetch_ids(c, "h").values()) == sorted([ids[1], ids[3]])
        # 4.4: SEARCH EMAILID / THREADID
        got = c.command("i", b"UID SEARCH THREADID " + ids[1][1])
        assert got[0] == b"* SEARCH 1 2\r\n"
        got = c.command("j", b"UID SEARCH EMAILID " + ids[3][0])
        assert got[0] == b"* SEARCH 2\r\n"
        assert c.command("k", b"SEARCH EMAILID Mnothing")[0] == b"* SEARCH\r\n"
    finally:
        c.close()
        server.stop()
    # stable across a restart, and when the index (the cache) is gone
    for ix in os.listdir(maildir):
        if ix.startswith("fetchdeliver-index"):
            os.unlink(os.path.join(maildir, ix))
    server = ThreadedServer(server.server.config).start()
    c = login(server)
    try:
        c.command("b", b"SELECT INBOX")
        again = fetch_ids(c, "c")
        assert again == {1: ids[1], 2: ids[2]}
    finally:
        c.close()
        server.stop()


def test_preview_rfc_8970(tmp_path):
    html = (b"From: x@example.org\nSubject: html\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=b\n\n"
            b"--b\nContent-Type: text/html; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n"
            b"<p>Caf=E9   ol=E9</p>\n--b--\n")
    server, _, _ = make_server(tmp_path, n_plain=1, extra=[REPLY, html, b"Subject: empty\n\n"])
    c = login(server)
    try:
        c.command("b", b"SELECT INBOX")
        got = c.command("c", b"FETCH 1:4 (PREVIEW)")
        assert got[:-1] == [b'* 1 FETCH (PREVIEW "body of m 1")\r\n',
                            b'* 2 FETCH (PREVIEW "Thanks for the report.")\r\n',
                            b"* 3 FETCH (PREVIEW {10}\r\n", "Café olé)\r\n".encode(),
                            b"* 4 FETCH (PREVIEW NIL)\r\n"]
        # 3.1: the LAZY modifier; we have the preview at hand, so it is returned
        got = c.command("d", b"UID FETCH 1 (PREVIEW (LAZY))")
        assert got[0] == b'* 1 FETCH (UID 1 PREVIEW "body of m 1")\r\n'
        # PREVIEW does not set \\Seen
        assert b"\\Seen" not in c.command("e", b"FETCH 1 FLAGS")[0]
    finally:
        c.close()
        server.stop()


def test_ids_of_a_new_message(tmp_path):
    server, _, _ = make_server(tmp_path, n_plain=1)
    c = login(server)
    try:
        raw = plain(1).replace(b"\n", b"\r\n")
        c.send(b"a1 APPEND Drafts {%d+}\r\n" % len(raw) + raw + b"\r\n")
        assert c.until("a1")[-1].startswith(b"a1 NO [TRYCREATE]")
        c.command("a2", b"CREATE Drafts")
        c.send(b"a3 APPEND Drafts {%d+}\r\n" % len(raw) + raw + b"\r\n")
        assert c.until("a3")[-1].startswith(b"a3 OK")
        c.command("b", b"SELECT Drafts")
        drafts = fetch_ids(c, "c")
        c.command("d", b"SELECT INBOX")
        assert fetch_ids(c, "e") == drafts          # the same bytes: the same EMAILID
    finally:
        c.close()
        server.stop()
