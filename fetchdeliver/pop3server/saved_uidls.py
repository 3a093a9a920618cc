"""POP3 UIDLs Dovecot keeps per message in `dovecot-uidlist` (the `P` field, written by
`pop3_save_uidl` or the pop3-migration plugin for mail moved from another POP3 server).

Dovecot's pop3d sends such a saved UIDL instead of expanding `pop3_uidl_format`; so do we, so that
a mailbox migrated to Dovecot and then to us keeps the UIDLs its POP3 clients already know. The
store does not expose these fields, so they are read here, straight from the file.
"""

from __future__ import annotations

import os
import threading


def parse_saved_uidls(data: bytes) -> dict[int, str]:
    """{uid: saved UIDL} from dovecot-uidlist bytes (version 3: `UID [FIELDS] :FILENAME` lines)."""
    out: dict[int, str] = {}
    if b" P" not in data:
        return out
    for line in data.split(b"\n")[1:]:
        if b" P" not in line:
            continue
        uid_s, _, rest = line.partition(b" ")
        if not uid_s.isdigit():
            continue
        for field in rest.split(b" "):
            if field.startswith(b":"):
                break          # the file name follows; Dovecot's fields end here too
            if field.startswith(b"P") and len(field) > 1:
                out[int(uid_s)] = field[1:].decode("utf-8", "replace")
    return out


class SavedUidls:
    """Saved UIDLs per Maildir folder, re-read only when its dovecot-uidlist changes."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple, dict[int, str]]] = {}
        self._guard = threading.Lock()

    def for_folder(self, folder: str) -> dict[int, str]:
        path = os.path.join(folder, "dovecot-uidlist")
        try:
            st = os.stat(path)
        except OSError:
            return {}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._guard:
            hit = self._cache.get(folder)
        if hit is not None and hit[0] == key:
            return hit[1]
        try:
            with open(path, "rb") as f:
                saved = parse_saved_uidls(f.read())
        except OSError:
            return {}
        with self._guard:
            self._cache[folder] = (key, saved)
        return saved
