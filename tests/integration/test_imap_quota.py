"""IMAP QUOTA (RFC 9208) on our server: the RFC's examples (GETQUOTA, GETQUOTAROOT, SETQUOTA, STATUS
DELETED-STORAGE, APPEND/COPY answering NO [OVERQUOTA]) with our quota root, and a differential
session against Dovecot's imap_quota on one Maildir."""

from __future__ import annotations

import os

import pytest

from conftest import _start
from fetchdeliver.config import Settings
from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password
from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer
from fetchdeliver.storage.maildir import MaildirStore
from imap_helpers import RawClient
from quota_support import chown_tree, dovecot_quota_config

pytestmark = pytest.mark.timeout(120)


def msg(i: int, size: int = 2000) -> bytes:
    return f"Subject: q{i}\r\nMessage-ID: <q{i}@example.org>\r\n\r\n".encode() + b"z" * size + b"\r\n"


def serve(tmp_path, quota: dict | None, maildir: str | None = None, users=("alice", "root")):
    maildir = maildir or str(tmp_path / "Maildir")
    passwd = str(tmp_path / "passwd")
    for u in users:
        set_password(passwd, u, "secret", "SHA256-CRYPT")
    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                       default_mail="maildir:" + maildir, login_failure_delay=0)
    if quota is not None:
        cfg.quota_settings = Settings({"quota": quota}, "test")
    return ThreadedServer(cfg).start(), maildir


def login(server, user="alice") -> RawClient:
    c = RawClient(server.port())
    assert c.command("l", f"LOGIN {user} secret".encode())[-1].startswith(b"l OK")
    return c


def append(c: RawClient, tag: str, raw: bytes, box: bytes = b"INBOX") -> list[bytes]:
    c.send(tag.encode() + b" APPEND " + box + b" {%d+}\r\n" % len(raw) + raw + b"\r\n")
    return c.until(tag)


@pytest.fixture
def server(tmp_path):
    srv, maildir = serve(tmp_path, {"storage": 10 * 1024, "messages": 4, "admins": ["root"]})
    yield srv, maildir
    srv.stop()


def test_capabilities_only_with_a_quota(tmp_path, server):
    srv, _ = server
    caps = RawClient(srv.port()).command("c", b"CAPABILITY")[0].split()
    assert {b"QUOTA", b"QUOTA=RES-STORAGE", b"QUOTA=RES-MESSAGE", b"QUOTASET"} <= set(caps)
    (tmp_path / "other").mkdir()
    plain, _ = serve(tmp_path / "other", None)
    try:
        caps = RawClient(plain.port()).command("c", b"CAPABILITY")[0].split()
        assert not any(c.startswith(b"QUOTA") for c in caps)
    finally:
        plain.stop()


def test_rfc9208_examples(server):
    srv, maildir = server
    c = login(srv)
    for i in range(2):
        assert append(c, f"a{i}", msg(i))[-1].startswith(f"a{i} OK".encode())
    used = sum(len(msg(i).replace(b"\r\n", b"\n")) for i in range(2))   # stored with LF line ends
    kib = (used + 1023) // 1024

    # 4.1.2 GETQUOTAROOT: the roots of the mailbox, then each root's QUOTA
    assert c.command("G0002", b"GETQUOTAROOT INBOX") == [
        b'* QUOTAROOT INBOX "User quota"\r\n',
        f'* QUOTA "User quota" (STORAGE {kib} 10 MESSAGE 2 4)\r\n'.encode(),
        b"G0002 OK Getquotaroot completed.\r\n"]
    # 4.1.1 GETQUOTA
    assert c.command("G0001", b'GETQUOTA "User quota"') == [
        f'* QUOTA "User quota" (STORAGE {kib} 10 MESSAGE 2 4)\r\n'.encode(), b"G0001 OK Getquota completed.\r\n"]
    assert c.command("G0003", b'GETQUOTA "!partition/sda4"')[-1].startswith(b"G0003 NO [NONEXISTENT]")
    assert c.command("G0004", b"GETQUOTAROOT Nonexistent")[-1].startswith(b"G0004 NO [NONEXISTENT]")
    # 4.1.3 SETQUOTA: for administrators only
    assert c.command("S0001", b'SETQUOTA "User quota" (STORAGE 510)')[-1].startswith(b"S0001 NO [NOPERM]")
    # 4.3.1 OVERQUOTA: an APPEND that does not fit
    big = msg(9, 8000)
    r = append(c, "A003", big)
    assert r[-1].startswith(b"A003 NO [OVERQUOTA]"), r
    assert len(MaildirStore(maildir).open("INBOX").sync()) == 2


def test_status_deleted_storage(server):
    srv, maildir = server
    c = login(srv)
    for i in range(3):
        append(c, f"a{i}", msg(i, 3000))
    c.command("s", b"SELECT INBOX")
    c.command("f", b"STORE 1:2 +FLAGS (\\Deleted)")
    line = c.command("S0003", b"STATUS INBOX (MESSAGES DELETED DELETED-STORAGE)")[0]
    # two messages of 3000+ octets (RFC822.SIZE, CRLF counted) marked \Deleted: 6 KiB to reclaim
    assert line == b'* STATUS "INBOX" (MESSAGES 3 DELETED 2 DELETED-STORAGE 6)\r\n'


def test_copy_over_quota_copies_nothing_and_move_is_not_checked(server):
    srv, maildir = server
    c = login(srv)
    for i in range(3):
        append(c, f"a{i}", msg(i))
    c.command("c", b"CREATE Archive")
    c.command("s", b"SELECT INBOX")
    r = c.command("C1", b"COPY 1:3 Archive")          # 3 more would make 6 of 4 messages
    assert r[-1].startswith(b"C1 NO [OVERQUOTA]"), r
    store = MaildirStore(maildir)
    assert store.open("Archive").sync() == []          # all or nothing
    r = c.command("C2", b"COPY 1 Archive")            # 4 of 4: fits exactly
    assert r[-1].startswith(b"C2 OK"), r
    r = c.command("M1", b"MOVE 2:3 Archive")           # full, but a MOVE frees what it takes
    assert r[-1].startswith(b"M1 OK"), r
    assert len(store.open("Archive").sync()) == 3 and len(store.open("INBOX").sync()) == 1
    q = c.command("q", b"GETQUOTAROOT INBOX")[1]
    assert b"MESSAGE 4 4" in q
    c.command("e", b"SELECT Archive")
    c.command("f", b"STORE 1 +FLAGS (\\Deleted)")
    c.command("x", b"EXPUNGE")                        # the "-N -1" line: room for one again
    assert b"MESSAGE 3 4" in c.command("q2", b"GETQUOTAROOT INBOX")[1]
    assert append(c, "a9", msg(9))[-1].startswith(b"a9 OK")


def test_setquota_by_an_admin(tmp_path):
    srv, maildir = serve(tmp_path, {"admins": ["root"]}, users=("root",))
    try:
        c = login(srv, "root")
        append(c, "a", msg(1))
        r = c.command("S0001", b'SETQUOTA "User quota" (STORAGE 510 MESSAGE 1)')
        kib = (len(msg(1).replace(b"\r\n", b"\n")) + 1023) // 1024
        assert r == [f'* QUOTA "User quota" (STORAGE {kib} 510 MESSAGE 1 1)\r\n'.encode(),
                     b"S0001 OK Setquota completed.\r\n"]
        assert open(os.path.join(maildir, "maildirsize")).readline() == f"{510 * 1024}S,1C\n"
        assert append(c, "b", msg(2))[-1].startswith(b"b NO [OVERQUOTA]")
        r = c.command("S0002", b'SETQUOTA "User quota" (BOGUS 1)')
        assert r[-1].startswith(b"S0002 BAD")
    finally:
        srv.stop()


def test_differential_against_dovecot(request, tmp_path):
    dc = _start(request, users={"alice": "secret"}, extra_config=dovecot_quota_config("*:storage=10K"))
    maildir = os.path.join(dc.home("alice"), "Maildir")
    store = MaildirStore(maildir)
    for i in range(3):
        store.deliver(msg(i).replace(b"\r\n", b"\n"))
    chown_tree(maildir, dc.mail_uid, dc.mail_gid)
    ours, _ = serve(tmp_path, {"storage": "10K"}, maildir=maildir)
    try:
        theirs = RawClient(dc.port("imap"))
        theirs.command("l", b"LOGIN alice secret")
        mine = login(ours)
        for tag, cmd in (("q1", b"GETQUOTAROOT INBOX"), ("q2", b'GETQUOTA "User quota"'),
                         ("q3", b"GETQUOTA nosuchroot")):
            a, b = theirs.command(tag, cmd), mine.command(tag, cmd)
            assert a[:-1] == b[:-1], (cmd, a, b)                        # the same untagged answers
            assert a[-1].split()[1] == b[-1].split()[1], (cmd, a, b)    # OK / NO alike
    finally:
        ours.stop()
