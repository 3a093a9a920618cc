"""The IMAP server's mbox backend, with imapclient as the client: the files the mbox deliverer writes."""

from __future__ import annotations

import mailbox
import threading

import imapclient
import pytest

from fetchdeliver.delivery.mbox import MboxStore
from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password
from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer
from imap_helpers import plain


def crlf(raw: bytes) -> bytes:
    """What IMAP sends of a stored message: every line end as CRLF (RFC 3501; Dovecot does the same)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _serve(tmp_path, inbox):
    passwd = str(tmp_path / "passwd")
    set_password(passwd, "alice", "secret", "SHA256-CRYPT")
    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                       default_mail="mbox:" + inbox, login_failure_delay=0)
    return ThreadedServer(cfg).start()


def _login(server):
    c = imapclient.IMAPClient("127.0.0.1", port=server.port(), ssl=False, timeout=30)
    c.login("alice", "secret")
    return c


@pytest.fixture
def mbox(tmp_path):
    inbox = str(tmp_path / "mbox")
    store = MboxStore(inbox)
    store.deliver(plain(1), sender="a@example.org")
    store.deliver(plain(2), flags=["\\Seen", "\\Flagged"], sender="b@example.org")
    store.deliver(b"From: x@example.org\nSubject: from-line\n\nFrom the start\n>From quoted\nno final newline",
                  sender="c@example.org")
    store.deliver(plain(4), mailbox="Work", sender="d@example.org")
    return inbox, store


def test_mbox_served_byte_exact_with_delivery_flags(tmp_path, mbox):
    inbox, _ = mbox
    server = _serve(tmp_path, inbox)
    try:
        c = _login(server)
        names = sorted(f[2] for f in c.list_folders())
        assert names == ["INBOX", "Work"]
        assert c.select_folder("INBOX")[b"EXISTS"] == 3
        data = c.fetch([1, 2, 3], ["BODY.PEEK[]", "FLAGS", "RFC822.SIZE"])
        assert data[1][b"BODY[]"] == crlf(plain(1))
        # The Status:/X-Status: headers the deliverer wrote are flags, not message text.
        assert data[2][b"BODY[]"] == crlf(plain(2))
        assert set(data[2][b"FLAGS"]) == {b"\\Seen", b"\\Flagged"}
        # mboxrd quoting undone; the missing final newline is the one mbox cannot keep.
        assert data[3][b"BODY[]"] == crlf(b"From: x@example.org\nSubject: from-line\n\nFrom the start\n"
                                          b">From quoted\nno final newline\n")
        assert data[1][b"RFC822.SIZE"] == len(plain(1)) + plain(1).count(b"\n")
        c.logout()
    finally:
        server.stop()


def test_flags_and_uids_survive_a_restart(tmp_path, mbox):
    inbox, _ = mbox
    server = _serve(tmp_path, inbox)
    try:
        c = _login(server)
        c.select_folder("INBOX")
        uids = c.search()
        c.add_flags([uids[0]], [b"\\Answered", b"$Label1"])
        uidvalidity = c.folder_status("Work", [b"UIDVALIDITY"])[b"UIDVALIDITY"]
        c.logout()
    finally:
        server.stop()
    server = _serve(tmp_path, inbox)
    try:
        c = _login(server)
        c.select_folder("INBOX")
        assert c.search() == uids
        assert set(c.get_flags([uids[0]])[uids[0]]) == {b"\\Answered", b"$Label1"}
        assert c.folder_status("Work", [b"UIDVALIDITY"])[b"UIDVALIDITY"] == uidvalidity
        c.logout()
    finally:
        server.stop()


def test_append_copy_expunge_and_the_file_stays_an_mbox(tmp_path, mbox):
    inbox, store = mbox
    server = _serve(tmp_path, inbox)
    try:
        c = _login(server)
        c.create_folder("Archive/2025")
        c.append("Archive/2025", b"Subject: appended\r\n\r\nhello\r\n", flags=[b"\\Seen"])
        c.select_folder("INBOX")
        c.copy([1, 2], "Archive/2025")
        c.delete_messages([1])
        c.expunge()
        assert c.search() == [2, 3]
        c.select_folder("Archive/2025")
        got = c.fetch(c.search(), ["BODY.PEEK[]", "FLAGS"])
        bodies = [got[u][b"BODY[]"] for u in sorted(got)]
        assert bodies == [b"Subject: appended\r\n\r\nhello\r\n", crlf(plain(1)), crlf(plain(2))]
        assert b"\\Seen" in got[min(got)][b"FLAGS"]
        c.logout()
    finally:
        server.stop()
    # An independent reader agrees: two messages left in INBOX, the right ones.
    left = [m.get("Message-ID") for m in mailbox.mbox(inbox)]
    assert left == ["<m.2@example.org>", None]
    folder = mailbox.mbox(store.path_for("Archive/2025"))
    assert [m["Subject"] for m in folder] == ["appended", "m number 1", "m number 2"]


def test_expunge_while_the_mda_delivers_loses_nothing(tmp_path, mbox):
    inbox, store = mbox
    server = _serve(tmp_path, inbox)
    n = 40
    try:
        c = _login(server)
        c.select_folder("INBOX")

        def deliver():
            for i in range(n):
                store.deliver(plain(100 + i, "late"), sender="late@example.org")

        t = threading.Thread(target=deliver)
        t.start()
        for _ in range(5):
            c.noop()
            uids = c.search(["SUBJECT", "late"])
            if uids:
                c.delete_messages(uids[:1])
                c.expunge()
        t.join(60)
        c.noop()
        subjects = [m["Subject"] for m in mailbox.mbox(inbox)]
        late = [s for s in subjects if s.startswith("late")]
        expunged = n - len(late)
        assert expunged <= 5
        assert len(set(late)) == len(late)                       # nothing doubled
        assert [s for s in subjects if not s.startswith("late")] == ["m number 1", "m number 2", "from-line"]
        assert len(c.search()) == len(subjects)
        c.logout()
    finally:
        server.stop()
