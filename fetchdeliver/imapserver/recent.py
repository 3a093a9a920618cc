"""\\Recent for messages COPY, MOVE and APPEND put into a mailbox (RFC 3501 2.3.2), server-wide.

A store marks a message \\Recent only where its format says so (a Maildir file still in new/);
a copy keeps its flags and so goes to cur/, and an mbox or PostgreSQL message has no such mark.
This server therefore remembers, per mailbox, the UIDs it added: the next session that selects
the mailbox read-write (or has it selected when they arrive) takes them as \\Recent, and no other
session sees them so afterwards. A session that EXAMINEs it sees them \\Recent without taking
them. What is remembered lives in this process only (as Dovecot's, it is not part of the mail),
and is bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

MAX_UIDS = 1_000_000     # in all (a few dozen MB at most); the mailboxes added to longest ago go first


def _key(mailbox) -> tuple | None:
    ident = getattr(mailbox, "path", None)
    if ident is None:
        return None
    return (ident, getattr(mailbox, "uidvalidity", 0))


class RecentTracker:
    def __init__(self, max_uids: int = MAX_UIDS) -> None:
        self.max_uids = max_uids
        self._pending: OrderedDict[tuple, set[int]] = OrderedDict()
        self._count = 0

    def add(self, mailbox, uids: Iterable[int]) -> None:
        """These UIDs were just added to `mailbox` by this server (COPY, MOVE, APPEND)."""
        key = _key(mailbox)
        if key is None:
            return
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = set()
        else:
            self._pending.move_to_end(key)
        before = len(pending)
        pending.update(uids)
        self._count += len(pending) - before
        while self._count > self.max_uids and len(self._pending) > 1:
            _key_, dropped = self._pending.popitem(last=False)
            self._count -= len(dropped)
        if self._count > self.max_uids:     # one mailbox alone: keep its newest UIDs
            keep = sorted(pending)[-self.max_uids:]
            pending.clear()
            pending.update(keep)
            self._count = len(pending)

    def take(self, mailbox, uids: Iterable[int], readonly: bool = False) -> set[int]:
        """Which of `uids` (messages a session now sees in `mailbox`) are \\Recent for it; unless
        `readonly`, they are taken: no later session sees them \\Recent."""
        key = _key(mailbox)
        if key is None:
            return set()
        pending = self._pending.get(key)
        if not pending:
            return set()
        got = pending.intersection(uids)
        if got and not readonly:
            pending -= got
            self._count -= len(got)
            if not pending:
                del self._pending[key]
        return got

    def pending(self, mailbox) -> set[int]:
        """The UIDs of `mailbox` no session has taken yet (for STATUS RECENT)."""
        key = _key(mailbox)
        return set(self._pending.get(key, ())) if key is not None else set()
