"""Crash recovery of the account runner: finding the tokens of interrupted deliveries in the mail store.

Each delivery from an account carries a random token in its Received: header and a
"pending" row in the state database until it is recorded. A run killed between the
delivery and the record leaves the row; the next run looks for the token here: found,
the message is recorded as delivered (not delivered again); not found, it is fetched again.
"""

from __future__ import annotations

import os


def find_tokens(roots: list[str], wanted: dict[str, str], since: float) -> set[str]:
    """Which tokens (token -> SHA-256 of the original message) are in messages stored since `since`.

    Maildir: a file in new/ or cur/ is complete by construction (written in tmp/, then renamed).
    mbox: a writer killed mid-append leaves a partial message, so a token only counts there when the
    bytes after its Received: line are the whole original message.
    """
    found: set[bytes] = set()
    tokens = {t.encode(): d for t, d in wanted.items()}
    for root in roots:
        if os.path.isfile(root):
            found |= _scan_mbox(root, tokens)
        elif os.path.isdir(root):
            for dirpath, _dirnames, filenames in os.walk(root):
                leaf = os.path.basename(dirpath)
                maildir_part = leaf in ("new", "cur")
                if leaf == "tmp":
                    continue  # never delivered
                for fn in filenames:
                    path = os.path.join(dirpath, fn)
                    if maildir_part:
                        stamp = _leading_int(fn)
                        if stamp is not None and stamp < since - 60:
                            continue  # Maildir names start with the delivery time
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    if st.st_mtime < since:
                        continue
                    if maildir_part:
                        found |= _scan_maildir_file(path, tokens)
                    else:
                        found |= _scan_mbox(path, tokens)
        if len(found) == len(tokens):
            break
    return {t.decode() for t in found}


def _leading_int(name: str) -> int | None:
    i = 0
    while i < len(name) and name[i].isdigit():
        i += 1
    return int(name[:i]) if i else None


def _scan_maildir_file(path: str, tokens: dict[bytes, str]) -> set[bytes]:
    try:
        with open(path, "rb") as f:
            head = f.read(256 * 1024)  # the token is in the Received: header at the top
    except OSError:
        return set()
    return {t for t in tokens if head.find(t) >= 0}


def _scan_mbox(path: str, tokens: dict[bytes, str]) -> set[bytes]:
    import mmap

    try:
        with open(path, "rb") as f:
            try:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # empty file
                return set()
    except OSError:
        return set()
    found = set()
    try:
        for token, digest in tokens.items():
            pos = data.find(token)
            while pos >= 0:
                if _mbox_entry_complete(data, pos, digest):
                    found.add(token)
                    break
                pos = data.find(token, pos + 1)
    finally:
        data.close()
    return found


def _mbox_entry_complete(data, pos: int, digest: str) -> bool:
    """Is the mbox message holding a token at `pos` the whole original message (mboxrd-unquoted)?"""
    import hashlib
    import re

    start = data.find(b"\n", pos)
    if start < 0:
        return False
    start += 1
    end = data.find(b"\nFrom ", start)
    region = data[start:] if end < 0 else data[start:end + 1]
    # The entry ends with the blank separator line, plus a newline the writer adds when the
    # message had none of its own.
    body = re.sub(rb"(?m)^>(>*From )", rb"\1", region)
    for cut in (1, 2):
        candidate = body[:-cut] if body.endswith(b"\n" * cut) else None
        if candidate is None:
            continue
        # The digest is of the wire bytes; the store holds them with CRLF made LF (unless
        # keep_crlf). IMAP and POP3 send every line end as CRLF, so LF -> CRLF gives the wire back.
        if digest in (hashlib.sha256(candidate).hexdigest(),
                      hashlib.sha256(candidate.replace(b"\n", b"\r\n")).hexdigest()):
            return True
    return False
