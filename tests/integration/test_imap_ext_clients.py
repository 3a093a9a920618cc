"""The issue 12 extensions through client libraries nobody here wrote: imapclient (ENABLE UTF8=ACCEPT,
MULTIAPPEND, BINARY, LIST-EXTENDED) and Python's imaplib (ENABLE UTF8=ACCEPT, which switches it to UTF-8)."""

from __future__ import annotations

import imaplib

import pytest
from imapclient import IMAPClient

from imap_helpers import MULTIPART, make_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(tmp_path):
    srv, _maildir, _ = make_server(tmp_path, n_plain=1, extra=[MULTIPART], idle_poll=600)
    yield srv
    srv.stop()


def test_imapclient(server):
    c = IMAPClient("127.0.0.1", port=server.port(), ssl=False, timeout=30)
    try:
        c.login("alice", "secret")
        caps = c.capabilities()
        for cap in (b"IMAP4REV2", b"UTF8=ACCEPT", b"MULTIAPPEND", b"BINARY", b"LIST-EXTENDED", b"CATENATE"):
            assert cap in caps
        assert c.enable("UTF8=ACCEPT") == [b"UTF8=ACCEPT"]
        c.create_folder("Entwürfe")
        assert ((b"\\HasNoChildren",), b"/", "Entwürfe") in c.list_folders()
        c.multiappend("Entwürfe", [b"Subject: a\r\n\r\none\r\n",
                                   {"msg": b"Subject: b\r\n\r\ntwo\r\n", "flags": [b"\\Seen"]}])
        assert c.folder_status("Entwürfe", ["MESSAGES"]) == {b"MESSAGES": 2}
        c.select_folder("Entwürfe")
        got = c.fetch([1, 2], ["FLAGS", "BODY.PEEK[TEXT]"])
        assert [got[i][b"BODY[TEXT]"] for i in (1, 2)] == [b"one\r\n", b"two\r\n"]
        assert b"\\Seen" in got[2][b"FLAGS"] and b"\\Seen" not in got[1][b"FLAGS"]
        c.select_folder("INBOX")
        got = c.fetch([2], ["BINARY.PEEK[1]", "BINARY.SIZE[1]", "BINARY.PEEK[3]"])[2]
        assert got[b"BINARY[1]"] == "Grüße aus Köln, the zebra report".encode()
        assert got[b"BINARY.SIZE[1]"] == len(got[b"BINARY[1]"])
        assert got[b"BINARY[3]"] == b"%PDF-1.4\n"
    finally:
        c.logout()


def test_imaplib_utf8(server):
    m = imaplib.IMAP4("127.0.0.1", server.port(), timeout=30)
    try:
        m.login("alice", "secret")
        typ, data = m.enable("UTF8=ACCEPT")
        assert typ == "OK"
        assert m.create('"Café"')[0] == "OK"           # imaplib sends it as UTF-8 now
        typ, data = m.list('""', '"Caf*"')
        assert data == ['(\\HasNoChildren) "/" "Café"'.encode()]
        typ, data = m.select('"Café"')
        assert typ == "OK" and data == [b"0"]
    finally:
        m.logout()
