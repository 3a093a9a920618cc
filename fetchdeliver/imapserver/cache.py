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
KEY_MAILBOXES = 64        # mailboxes whose sort keys / threading facts are kept (a few MB per 10,000 messages)


class MessageCache:
    def __init__(self, max_entries: int = DEFAULT_ENTRIES) -> None:
        self.max_entries = max_entries
        self._lru: OrderedDict = OrderedDict()
        self._keys: OrderedDict = OrderedDict()

    def key_table(self, mailbox, uidvalidity: int, name: str) -> dict | None:
        """{uid: value} of one content-derived key (a SORT key, THREAD's facts) for a whole mailbox,
        filled by the caller; None if the mailbox has no identity. SORT and THREAD look a mailbox's
        keys up in one dict per key instead of one cache entry per message."""
        ident = getattr(mailbox, "path", None)
        if ident is None or self.max_entries <= 0:
            return None
        key = (ident, uidvalidity)
        tables = self._keys.get(key)
        if tables is None:
            tables = self._keys[key] = {}
            if len(self._keys) > KEY_MAILBOXES:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        table = tables.get(name)
        if table is None:
            table = tables[name] = {}
        return table

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
