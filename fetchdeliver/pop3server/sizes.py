"""Message sizes (line ends counted as CRLF) remembered across POP3 sessions of one server process.

The store knows a message's size cheaply only when its file name carries it (",W=" in Maildir
names written by us or Dovecot); for other files `Mailbox.size()` reads the message, and the
store's index does not keep the result yet. STAT and LIST need every size, so the server keeps
what it learnt here, by (mailbox, UIDVALIDITY, UID): a UID never names another message within
one UIDVALIDITY, so an entry cannot go stale.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

MAX_ENTRIES = 2_000_000


class SizeCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._boxes: OrderedDict[tuple, dict[int, int]] = OrderedDict()
        self._count = 0
        self._guard = threading.Lock()

    def table(self, mailbox_key: str, uidvalidity: int) -> dict[int, int]:
        """{uid: size} for one mailbox (the dict itself: callers read and add to it in place)."""
        key = (mailbox_key, uidvalidity)
        with self._guard:
            t = self._boxes.get(key)
            if t is None:
                t = self._boxes[key] = {}
            self._boxes.move_to_end(key)
            self._count = sum(len(v) for v in self._boxes.values())
            while self._count > self.max_entries and len(self._boxes) > 1:
                _k, old = self._boxes.popitem(last=False)
                self._count -= len(old)
            return t
