"""An example `[imap] backend`: one login that sees several stores, one of them read-only.

    [imap]
    listen = "127.0.0.1:1143"
    passwd_file = "~/.config/fetchdeliver/imap.passwd"
    backend = "fetchdeliver.examples.imap_plugin:make"

Logins are checked against the passwd-file as usual. Each user then sees, under
the home directory the passwd-file gives them (its sixth field):

    INBOX, Work, ...        HOME/Mail              the Maildir++ tree fetchdeliver delivers to
    Archive/2023, ...       HOME/Archive/2023, ... one Maildir per year (its folders below it)
    Old/<name>              HOME/mbox/<name>       old mbox files, one mailbox each
    Quarantine              HOME/Quarantine        a Maildir served read-only

Copy this file, change `mounts_for`, and point `backend` at your copy: the
protocol code needs no change. The storage interface (`Store`, `Mailbox`) is in
fetchdeliver/storage/base.py, the two backends used here in storage/maildir.py
and storage/mbox.py; logins in imapserver/auth.py; mounts in imapserver/mounts.py.
A whole new kind of store is better registered as a storage plugin (entry point
group "fetchdeliver.storage", see docs/extending.md).
"""

from __future__ import annotations

import os

from fetchdeliver.imapserver.auth import Account, PasswdFileAuthenticator
from fetchdeliver.imapserver.mounts import Mount, MountStorage
from fetchdeliver.storage.maildir import MaildirStore
from fetchdeliver.storage.mbox import MboxStore


def mounts_for(home: str) -> list[Mount]:
    """Which stores one user sees, and under which names."""
    mounts = [Mount("", MaildirStore(os.path.join(home, "Mail")))]
    archive = os.path.join(home, "Archive")
    if os.path.isdir(archive):
        for year in sorted(os.listdir(archive)):
            if os.path.isdir(os.path.join(archive, year, "cur")):
                mounts.append(Mount(f"Archive/{year}", MaildirStore(os.path.join(archive, year))))
    old = os.path.join(home, "mbox")
    if os.path.isdir(old):
        for name in sorted(os.listdir(old)):
            path = os.path.join(old, name)
            if os.path.isfile(path) and not name.startswith(".") and not name.endswith(".lock"):
                # Each file is its own INBOX; its folder directory stays empty.
                mounts.append(Mount(f"Old/{name}", MboxStore(path, os.path.join(old, f".{name}.d"))))
    quarantine = os.path.join(home, "Quarantine")
    if os.path.isdir(quarantine):
        mounts.append(Mount("Quarantine", MaildirStore(quarantine), readonly=True))
    return mounts


class TreeBackend:
    """Authenticator + storage_for: the two things a backend provides."""

    def __init__(self, passwd_file: str) -> None:
        self.users = PasswdFileAuthenticator(passwd_file)

    def authenticate(self, user: str, password: str) -> Account | None:
        return self.users.authenticate(user, password)

    def storage_for(self, account: Account) -> MountStorage:
        if not account.home:
            raise ValueError(f"user {account.user!r} has no home directory in the passwd-file")
        return MountStorage(mounts_for(account.home))


def make(config: dict) -> TreeBackend:
    """Called with the whole validated config; returns the backend."""
    passwd = (config.get("imap") or {}).get("passwd_file")
    if not passwd:
        raise ValueError("this backend needs [imap] passwd_file")
    return TreeBackend(passwd)
