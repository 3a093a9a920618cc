"""The copy of a submitted message in the sender's Sent mailbox (as Dovecot's and Stalwart's
submission services keep one, so clients need not APPEND it).

Everything that touches the mail store is in `save_sent_copy` (and the small lookup of the
\\Sent mailbox beside it), so that moving to another storage layer changes this file only.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.config import Settings
    from fetchdeliver.delivery.base import Receipt
    from fetchdeliver.imapserver.auth import Account

# The file in which the IMAP server records special-use attributes of a Maildir's folders
# (fetchdeliver.imapserver.maildir.SPECIAL_USE_FILE; not imported: that module is heavy).
SPECIAL_USE_FILE = "fetchdeliver-special-use"
SENT_NAMES = ("sent", "sent messages", "sent items", "sent mail")


def sent_mailbox(maildir_root: str | None, default: str) -> str:
    """The mailbox marked \\Sent in a Maildir++ tree, else a folder with a usual Sent name, else `default`."""
    if not maildir_root:
        return default
    try:
        with open(os.path.join(maildir_root, SPECIAL_USE_FILE), encoding="utf-8") as f:
            for line in f:
                name, _, use = line.rstrip("\n").partition("\t")
                if use.strip().lower() == "\\sent" and name:
                    return name
    except OSError:
        pass
    try:
        folders = [e.name[1:] for e in os.scandir(maildir_root) if e.name.startswith(".") and e.is_dir()]
    except OSError:
        folders = []
    for wanted in SENT_NAMES:
        for folder in folders:
            if folder.lower() == wanted:
                return folder  # a top-level folder: its directory name is the mailbox name
    return default


def save_sent_copy(account: "Account", raw: bytes, settings: "Settings", *, default_mailbox: str = "Sent",
                   fsync: bool | None = None) -> "Receipt":
    """Store `raw` (LF line ends) in `account`'s Sent mailbox with \\Seen; durable on return.

    The account's own "maildir:PATH" when it has one, else the [delivery] store, as the IMAP
    server serves them. Raises DeliveryError (or ConfigError when there is no store at all).
    """
    from fetchdeliver.pipeline import build_store, store_from_settings

    d = settings.delivery
    sync = d.get("fsync", True) if fsync is None else fsync
    mail = account.mail or ""
    root: str | None
    if mail.startswith("maildir:"):
        root = mail[len("maildir:"):]
        store = build_store(maildir=root, fsync=sync)
    else:
        root = d.get("maildir")
        store = store_from_settings(settings)
    box = sent_mailbox(root, default_mailbox) if root else default_mailbox
    return store.deliver(raw, box, ["\\Seen"], sender="", create=True)
