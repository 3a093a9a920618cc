"""Moved to fetchdeliver.storage.maildir (one Maildir implementation); kept for old imports."""

from __future__ import annotations

from fetchdeliver.storage.maildir import (FLAG_LETTERS, LETTER_FLAGS, SPECIAL_USE_FILE, MaildirMailbox,
                                          MaildirStorage, MaildirStore, Uidlist, split_filename)

__all__ = ["FLAG_LETTERS", "LETTER_FLAGS", "SPECIAL_USE_FILE", "MaildirMailbox", "MaildirStorage",
           "MaildirStore", "Uidlist", "split_filename"]
