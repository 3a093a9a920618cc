"""Moved to fetchdeliver.storage.base (the one storage interface); kept so plugins' imports keep working."""

from __future__ import annotations

from fetchdeliver.storage.base import (SPECIAL_USE_NAMES, SPECIAL_USES, SYSTEM_FLAGS, Mailbox, MailboxEntry,
                                       MessageInfo, Storage, StorageError, Store, add_children_attributes,
                                       canonical_flag)

__all__ = ["SPECIAL_USE_NAMES", "SPECIAL_USES", "SYSTEM_FLAGS", "Mailbox", "MailboxEntry", "MessageInfo",
           "Storage", "StorageError", "Store", "add_children_attributes", "canonical_flag"]
