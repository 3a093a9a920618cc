"""IMAP4rev2 (RFC 9051) and UTF8=ACCEPT (RFC 6855) over a socket: what ENABLE changes."""

from __future__ import annotations

import re

import pytest

from imap_helpers import RawClient, make_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def served(tmp_path):
    server, maildir, _ = make_server(tmp_path, n_plain=3, idle_poll=600)
    clients: list[RawClient] = []

    def connect() -> RawClient:
        c = RawClient(server.port())
        assert c.command("a0", b"LOGIN alice secret")[-1].startswith(b"a0 OK")
        clients.append(c)
        return c

    yield server, maildir, connect
    for c in clients:
        c.close()
    server.stop()


def test_both_revisions_are_advertised(served):
    _server, _maildir, connect = served
    caps = connect().command("a1", b"CAPABILITY")[0].split()
    assert b"IMAP4rev1" in caps and b"IMAP4rev2" in caps and b"UTF8=ACCEPT" in caps


def test_rev1_session_is_unchanged(served):
    _server, _maildir, connect = served
    c = connect()
    got = b"".join(c.command("s", b"SELECT INBOX"))
    assert b"* 3 RECENT\r\n" in got and b"[UNSEEN 1]" in got and b"* LIST" not in got
    assert c.command("f", b"SEARCH ALL")[0] == b"* SEARCH 1 2 3\r\n"
    assert b"\\Recent" in c.command("g", b"FETCH 1 FLAGS")[0]


def test_enable_imap4rev2(served):
    _server, _maildir, connect = served
    c = connect()
    assert c.command("e", b"ENABLE IMAP4rev2")[0] == b"* ENABLED IMAP4rev2\r\n"
    assert c.command("e2", b"ENABLE IMAP4rev2")[0] == b"* ENABLED\r\n"       # RFC 5161: only what is new
    got = c.command("s", b"SELECT INBOX")
    text = b"".join(got)
    # RFC 9051 6.3.2: FLAGS, EXISTS, LIST, UIDVALIDITY, UIDNEXT, PERMANENTFLAGS; no RECENT, no UNSEEN code
    assert b"* 3 EXISTS\r\n" in text and b'* LIST () "/" "INBOX"\r\n' in text
    assert b"RECENT" not in text and b"[UNSEEN" not in text
    assert re.search(rb"\[UIDVALIDITY \d+\]", text) and b"[UIDNEXT 4]" in text and b"[PERMANENTFLAGS" in text
    # no \Recent in FETCH, SEARCH answers ESEARCH (RFC 9051 6.4.4)
    assert c.command("f", b"FETCH 1:3 FLAGS")[:3] == [b"* %d FETCH (FLAGS ())\r\n" % i for i in (1, 2, 3)]
    assert c.command("A282", b"SEARCH FLAGGED")[0] == b'* ESEARCH (TAG "A282")\r\n'
    assert c.command("A283", b"SEARCH ALL")[0] == b'* ESEARCH (TAG "A283") ALL 1:3\r\n'
    assert c.command("A284", b"UID SEARCH 2:3")[0] == b'* ESEARCH (TAG "A284") UID ALL 2:3\r\n'
    assert c.command("A285", b"SEARCH CHARSET UTF-8 ALL")[0] == b'* ESEARCH (TAG "A285") ALL 1:3\r\n'
    # SORT and THREAD are not SEARCH: their answers stay as they are
    got = c.command("A286", b"SORT (REVERSE ARRIVAL) UTF-8 ALL")[0]
    assert got.startswith(b"* SORT ") and sorted(got.split()[2:]) == [b"1", b"2", b"3"]
    assert c.command("A287", b"THREAD ORDEREDSUBJECT UTF-8 ALL")[0].startswith(b"* THREAD ")
    # new mail: EXISTS without RECENT
    other = connect()
    other.command("p", b"APPEND INBOX {27+}\r\nSubject: new\r\n\r\nnew body\r\n")
    assert c.command("n", b"NOOP") == [b"* 4 EXISTS\r\n", b"n OK NOOP completed.\r\n"]
    # STATUS DELETED (RFC 9051 6.3.11)
    c.command("d", b"STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    assert c.command("st", b"STATUS INBOX (MESSAGES DELETED)")[0] == b'* STATUS "INBOX" (MESSAGES 4 DELETED 2)\r\n'


def test_enable_utf8_accept_mailbox_names(served):
    _server, maildir, connect = served
    c = connect()
    assert c.command("c", b'CREATE "Entw&APw-rfe"')[-1].startswith(b"c OK")    # modified UTF-7 before
    assert c.command("l", b'LIST "" "Entw*"')[0] == b'* LIST (\\HasNoChildren) "/" "Entw&APw-rfe"\r\n'
    assert c.command("e", b"ENABLE UTF8=ACCEPT")[0] == b"* ENABLED UTF8=ACCEPT\r\n"
    # RFC 6855 3: names go out in UTF-8, and come in as UTF-8 (an "&" is just "&")
    assert c.command("l2", b'LIST "" "Entw*"')[0] == '* LIST (\\HasNoChildren) "/" "Entwürfe"\r\n'.encode()
    assert c.command("c2", 'CREATE "Café & Co"'.encode())[-1].startswith(b"c2 OK")
    assert '"Café & Co"'.encode() in b"".join(c.command("l3", b'LIST "" "Caf*"'))
    got = c.command("s", 'STATUS "Entwürfe" (MESSAGES)'.encode())
    assert got[0] == '* STATUS "Entwürfe" (MESSAGES 0)\r\n'.encode()
    import os
    assert os.path.isdir(os.path.join(maildir, ".Caf&AOk- &- Co"))     # stored as Dovecot names it
    # RFC 6855 3 (erratum 4029) says a client must not send SEARCH CHARSET now and a server SHOULD
    # answer BAD; a "UTF-8" label does not conflict with UTF-8 strings, so it is accepted (as clients
    # that still send it expect)
    c.command("sel", b"SELECT INBOX")
    assert c.command("x", b"SEARCH CHARSET UTF-8 SUBJECT number")[0] == b"* SEARCH 1 2 3\r\n"
    # RFC 6855 4: APPEND's UTF8 data item
    msg = "Subject: Grüße\r\n\r\nbody\r\n".encode()
    got = c.command("a", 'APPEND "Entwürfe" UTF8 (~{%d+}\r\n'.encode() % len(msg) + msg + b")")
    assert got[-1].startswith(b"a OK [APPENDUID"), got
    # a session that did not ENABLE still sees modified UTF-7, and may not use APPEND UTF8
    other = connect()
    assert b'"Caf&AOk- &- Co"' in b"".join(other.command("l", b'LIST "" "Caf*"'))
    assert other.command("a", b'APPEND INBOX UTF8 (~{3+}\r\nabc)')[-1].startswith(b"a BAD")


def test_rev2_implies_utf8_names(served):
    _server, _maildir, connect = served
    c = connect()
    c.command("c", b'CREATE "Entw&APw-rfe"')
    c.command("e", b"ENABLE IMAP4rev2")
    assert c.command("l", b'LIST "" "Entw*"')[0] == '* LIST (\\HasNoChildren) "/" "Entwürfe"\r\n'.encode()
    assert '* LIST () "/" "Entwürfe"'.encode() in b"".join(c.command("s", 'EXAMINE "Entwürfe"'.encode()))
