"""Checks on mailbox names shared by fileinto-like extensions (not an extension itself)."""

from __future__ import annotations


def mailbox_name_problem(name: str) -> str | None:
    """Why `name` cannot be a mailbox name, or None."""
    if not name:
        return "the mailbox name is empty"
    if "\ufffd" in name or any(0xDC80 <= ord(c) <= 0xDCFF for c in name):
        return "the mailbox name is not valid UTF-8"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "the mailbox name contains control characters"
    return None


def check_mailbox_name(v, name: str, node, what: str) -> None:
    why = mailbox_name_problem(name)
    if why:
        v.error(f"{what}: invalid mailbox name '{name}': {why}", node)
