"""Moved to fetchdeliver.storage.maildir (one Maildir implementation); kept for old imports."""

from __future__ import annotations

from fetchdeliver.storage.maildir import (MAX_KEYWORDS, SYSTEM_FLAGS, UIDLIST_LOCK_STALE, MaildirStore,
                                          is_keyword, read_keyword_lines, read_keywords, split_flags,
                                          unique_name, virtual_size)

__all__ = ["MAX_KEYWORDS", "SYSTEM_FLAGS", "UIDLIST_LOCK_STALE", "MaildirStore", "is_keyword",
           "read_keyword_lines", "read_keywords", "split_flags", "unique_name", "virtual_size"]
