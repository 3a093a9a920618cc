"""Moved to fetchdeliver.storage.mbox (one mbox implementation); kept for old imports."""

from __future__ import annotations

from fetchdeliver.storage.mbox import MboxMailbox, MboxStorage, MboxStore, parse_blocks, split_flag_headers

__all__ = ["MboxMailbox", "MboxStorage", "MboxStore", "parse_blocks", "split_flag_headers"]
