"""Moved to fetchdeliver.storage.mbox (one mbox implementation); kept for old imports."""

from __future__ import annotations

from fetchdeliver.storage.mbox import (DOTLOCK_STALE, MboxStore, flag_headers, format_message, from_line,
                                       imapbase_keywords, mboxrd_escape, mboxrd_unescape, split_mboxrd)

__all__ = ["DOTLOCK_STALE", "MboxStore", "flag_headers", "format_message", "from_line", "imapbase_keywords",
           "mboxrd_escape", "mboxrd_unescape", "split_mboxrd"]
