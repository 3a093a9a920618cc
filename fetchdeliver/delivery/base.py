"""The small interface every deliverer keeps.

A store's `deliver()` returns only when the message is durable (file and
directory fsynced). It raises TemporaryDeliveryError (retry later: disk full,
lock timeout, unwritable folder) or PermanentDeliveryError / InvalidMailboxName.
"""

from __future__ import annotations


class Receipt:
    """Proof of one durable delivery; `rollback()` undoes it when the whole message must be retried."""

    __slots__ = ("target", "mailbox", "path", "_undo")

    def __init__(self, target: str, mailbox: str | None = None, path: str | None = None,
                 undo=None) -> None:
        self.target = target      # "maildir", "mbox", "pipe", "queue", ...
        self.mailbox = mailbox    # the folder name as the rules gave it, e.g. "Work/Reports"
        self.path = path          # where it landed on disk, when it did
        self._undo = undo

    def rollback(self) -> None:
        """Best-effort removal of this delivery (used before answering tempfail)."""
        if self._undo is not None:
            undo, self._undo = self._undo, None
            undo()

    def __repr__(self) -> str:
        return f"Receipt({self.target!r}, {self.mailbox!r}, {self.path!r})"


class MailStore:
    """A place with named mailboxes: a Maildir++ tree or an mbox with a folder directory."""

    kind = "store"

    def deliver(self, raw: bytes, mailbox: str = "INBOX", flags: list[str] | tuple = (), *,
                sender: str = "", create: bool = True) -> Receipt:
        """Store `raw` byte-exact in `mailbox` with IMAP `flags`; durable on return."""
        raise NotImplementedError

    def mailbox_exists(self, mailbox: str) -> bool:
        raise NotImplementedError

    def describe(self, mailbox: str) -> str:
        """Where `mailbox` lives on disk, for messages to the user."""
        raise NotImplementedError
