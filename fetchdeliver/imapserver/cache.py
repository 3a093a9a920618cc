"""What the server remembers about messages between commands: ENVELOPE, BODYSTRUCTURE, header fields.

A message's content never changes under its UID (RFC 3501 2.3.1.1), so what is
derived from it can be kept, keyed by (mailbox, UIDVALIDITY, UID), for every
session of the server process. Flags are never cached. The cache is a bounded
LRU in memory; clients that FETCH ENVELOPE of a whole folder or SEARCH its
headers again (every mail client on every resync) then skip reading and parsing
the files. Dovecot keeps the same facts in its on-disk index cache.
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_ENTRIES = 50_000  # a few KB each at most: ~100 MB worst case, far less for real mail


class MessageCache:
    def __init__(self, max_entries: int = DEFAULT_ENTRIES) -> None:
        self.max_entries = max_entries
        self._lru: OrderedDict = OrderedDict()

    def entry(self, mailbox, uidvalidity: int, uid: int) -> dict | None:
        """The memo dict of one message (filled by the caller), or None if the mailbox has no identity."""
        ident = getattr(mailbox, "path", None)
        if ident is None or self.max_entries <= 0:
            return None
        key = (ident, uidvalidity, uid)
        memo = self._lru.get(key)
        if memo is None:
            memo = self._lru[key] = {}
            if len(self._lru) > self.max_entries:
                self._lru.popitem(last=False)
        else:
            self._lru.move_to_end(key)
        return memo
