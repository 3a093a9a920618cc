"""Dovecot and fetchdeliver share one Maildir: UIDs, UIDVALIDITY, flags and keywords agree both ways."""

from __future__ import annotations

import os

import imapclient

from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password
from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer
from imap_helpers import plain


def _ours(tmp_path, maildir):
    passwd = str(tmp_path / "our-passwd")
    set_password(passwd, "alice", "secret", "SHA256-CRYPT")
    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                       default_mail="maildir:" + maildir, login_failure_delay=0)
    return ThreadedServer(cfg).start()


def _state(c, folder="INBOX"):
    """(uidvalidity, {uid: (sorted flags, subject)}) as a server reports them."""
    info = c.select_folder(folder, readonly=True)
    uids = c.search()
    data = c.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]) if uids else {}
    return info[b"UIDVALIDITY"], {
        u: (sorted(f for f in d[b"FLAGS"] if f != b"\\Recent"),
            d[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip()) for u, d in data.items()}


def _chown_tree(path, uid, gid):
    if os.geteuid() != 0:
        return
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, gid)
        for n in filenames:
            os.chown(os.path.join(dirpath, n), uid, gid)


def test_dovecot_then_fetchdeliver(dovecot, tmp_path):
    for i in range(1, 7):
        dovecot.append("alice", plain(i, "dc"))
    dc = dovecot.imap("alice")
    dc.select_folder("INBOX")
    dc.add_flags([1, 2], [b"\\Flagged", b"$Work"])
    dc.add_flags([3], [b"\\Seen", b"Later", b"$Work"])
    dc.add_flags([4], [b"\\Deleted"])
    dc.expunge()
    dc.create_folder("Old")
    dc.copy([5, 6], "Old")
    dc.add_flags([6], [b"\\Answered"])
    want = _state(dc)
    want_old = _state(dc, "Old")
    dc.logout()
    assert sorted(want[1]) == [1, 2, 3, 5, 6]

    ours = _ours(tmp_path, dovecot.maildir("alice"))
    try:
        c = imapclient.IMAPClient("127.0.0.1", port=ours.port(), ssl=False, timeout=30)
        c.login("alice", "secret")
        assert _state(c) == want
        assert _state(c, "Old") == want_old
        c.logout()
    finally:
        ours.stop()


def test_fetchdeliver_then_dovecot(dovecot, tmp_path):
    maildir = dovecot.maildir("alice")
    for i in range(1, 4):
        dovecot.append("alice", plain(i, "first"))
    dc = dovecot.imap("alice")
    validity_before = dc.select_folder("INBOX")[b"UIDVALIDITY"]
    dc.add_flags([1], [b"Old-Keyword"])
    dc.logout()

    ours = _ours(tmp_path, maildir)
    try:
        c = imapclient.IMAPClient("127.0.0.1", port=ours.port(), ssl=False, timeout=30)
        c.login("alice", "secret")
        assert c.select_folder("INBOX")[b"UIDVALIDITY"] == validity_before
        for i in range(4, 8):
            c.append("INBOX", plain(i, "ours"), [b"\\Seen"] if i % 2 else [])
        c.add_flags([2, 5], [b"\\Flagged", b"NewKeyword"])
        c.add_flags([3], [b"\\Deleted"])
        c.expunge()
        c.create_folder("Projects")
        c.copy([1, 4], "Projects")
        want = _state(c)
        want_projects = _state(c, "Projects")
        c.logout()
    finally:
        ours.stop()
    assert sorted(want[1]) == [1, 2, 4, 5, 6, 7]
    _chown_tree(maildir, dovecot.mail_uid, dovecot.mail_gid)

    dc = dovecot.imap("alice")
    assert _state(dc) == want
    assert _state(dc, "Projects") == want_projects
    # Dovecot continues the UID sequence we left.
    dc.append("INBOX", plain(99, "dovecot-after"))
    dc.select_folder("INBOX")
    assert max(dc.search()) == 8
    dc.logout()
