"""Moved to fetchdeliver.storage.base (one interface for delivering and serving); kept for old imports."""

from __future__ import annotations

from fetchdeliver.storage.base import MailStore, Receipt

__all__ = ["MailStore", "Receipt"]
