"""The example `[imap] backend` plugin: one login over a Maildir, dated archives, mbox files and a
read-only quarantine, loaded the way `fetchdeliver imap` loads it, and used with imapclient."""

from __future__ import annotations

import os

import imapclient
import pytest

from fetchdeliver.delivery.maildir import MaildirStore
from fetchdeliver.delivery.mbox import MboxStore
from fetchdeliver.imapserver.auth import hash_password
from fetchdeliver.imapserver.plugin import load_backend
from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer
from imap_helpers import plain


@pytest.fixture
def tree_server(tmp_path):
    home = tmp_path / "home" / "alice"
    MaildirStore(str(home / "Mail")).deliver(plain(1, "inbox"))
    MaildirStore(str(home / "Mail")).deliver(plain(2, "work"), mailbox="Work")
    MaildirStore(str(home / "Archive" / "2023")).deliver(plain(3, "old23"))
    MaildirStore(str(home / "Archive" / "2024")).deliver(plain(4, "old24"), mailbox="Trips")
    os.makedirs(home / "mbox")
    MboxStore(str(home / "mbox" / "lists")).deliver(plain(5, "list"))
    MaildirStore(str(home / "Quarantine")).deliver(plain(6, "virus"))
    passwd = tmp_path / "passwd"
    passwd.write_text(f"alice:{hash_password('secret', 'SHA256-CRYPT')}:::{'x'}:{home}::\n")
    backend = load_backend("fetchdeliver.examples.imap_plugin:make", {"imap": {"passwd_file": str(passwd)}})
    server = ThreadedServer(ServerConfig(listen=["127.0.0.1:0"], authenticator=backend,
                                         login_failure_delay=0)).start()
    c = imapclient.IMAPClient("127.0.0.1", port=server.port(), ssl=False, timeout=30)
    c.login("alice", "secret")
    yield c, home
    try:
        c.logout()
    finally:
        server.stop()


def _subjects(c, folder):
    c.select_folder(folder, readonly=True)
    uids = c.search()
    return [d[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip().decode()
            for _, d in sorted(c.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).items())]


def test_one_login_sees_every_store(tree_server):
    c, _home = tree_server
    names = sorted(f[2] for f in c.list_folders() if b"\\Noselect" not in f[0])
    assert names == ["Archive/2023", "Archive/2024", "Archive/2024/Trips", "INBOX", "Old/lists",
                     "Quarantine", "Work"]
    assert _subjects(c, "INBOX") == ["Subject: inbox number 1"]
    assert _subjects(c, "Work") == ["Subject: work number 2"]
    assert _subjects(c, "Archive/2023") == ["Subject: old23 number 3"]
    assert _subjects(c, "Archive/2024/Trips") == ["Subject: old24 number 4"]
    assert _subjects(c, "Old/lists") == ["Subject: list number 5"]
    assert _subjects(c, "Quarantine") == ["Subject: virus number 6"]


def test_quarantine_is_read_only_but_can_be_copied_from(tree_server):
    c, home = tree_server
    # Asked read-write, served read-only: imaplib (under imapclient) says so itself.
    with pytest.raises(imapclient.exceptions.IMAPClientReadOnlyError):
        c.select_folder("Quarantine")
    assert c.select_folder("Quarantine", readonly=True)[b"READ-ONLY"]
    uids = c.search()
    c.copy(uids, "INBOX")                                  # reading out of it is allowed
    for refused in (lambda: c.append("Quarantine", b"Subject: no\r\n\r\nx\r\n"),
                    lambda: c.delete_folder("Quarantine"),
                    lambda: c.rename_folder("Quarantine", "Mine")):
        with pytest.raises((imapclient.exceptions.IMAPClientError,
                            imapclient.exceptions.IMAPClientReadOnlyError)):
            refused()
    assert len(os.listdir(home / "Quarantine" / "new")) + len(os.listdir(home / "Quarantine" / "cur")) == 1
    assert "Subject: virus number 6" in _subjects(c, "INBOX")


def test_writes_land_in_the_right_store(tree_server):
    c, home = tree_server
    c.create_folder("Archive/2024/Conferences")
    c.append("Archive/2024/Conferences", b"Subject: talk\r\n\r\nslides\r\n")
    assert (home / "Archive" / "2024" / ".Conferences").is_dir()
    assert not (home / "Mail" / ".Archive.2024.Conferences").exists()
    c.select_folder("INBOX")
    c.copy(c.search(), "Old/lists")
    assert b"inbox number 1" in (home / "mbox" / "lists").read_bytes()
    # STATUS of INBOX while an archive's own INBOX is selected answers for the real INBOX.
    c.select_folder("Archive/2023")
    assert c.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"] == 1
