"""OBJECTID (RFC 8474) and PREVIEW (RFC 8970): the ids and the preview text of messages and mailboxes.

- EMAILID: `M` + 24 hex digits of the SHA-256 of the message's bytes. Content-derived, so it is the
  same after a restart, an index rebuild, and for a copy in another mailbox (RFC 8474 5.1 asks for
  that: COPY/MOVE keep the EMAILID). Two byte-identical messages share it, which the RFC allows.
- THREADID: `T` + 24 hex digits of the SHA-256 of the thread's root Message-ID: the first id in
  References, else In-Reply-To, else the message's own Message-ID (a message without any is a thread
  of its own, keyed by its EMAILID). Replies therefore share their thread's id without a table.
- MAILBOXID: `F` + the mailbox's GUID in `dovecot-uidlist` (Maildir; the GUID Dovecot itself uses, so
  it survives restarts and RENAME, which moves the file), `Fpg` + the fd_mailbox row id in PostgreSQL,
  a store's own `mailbox_id` where it has one, else a digest of UIDVALIDITY and the name.
- PREVIEW: up to 200 characters of the first text/plain part (else text/html, as text), decoded,
  white space collapsed; NIL when there is no text.

EMAILID, THREADID and PREVIEW are cached with ENVELOPE/BODYSTRUCTURE (the Maildir index's columns).
"""

from __future__ import annotations

import hashlib
import os
import re

PREVIEW_CHARS = 200

_MSGID = re.compile(rb"<[^<>\s]+>")


def email_id(raw: bytes) -> str:
    return "M" + hashlib.sha256(raw).hexdigest()[:24]


def _header(raw: bytes, name: bytes) -> bytes | None:
    """The unfolded value of the first `name` field of the message's header."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    head = raw if end < 0 else raw[:end]
    value = None
    lname = name.lower() + b":"
    for line in re.split(rb"\r?\n", head):
        if value is not None:
            if line[:1] in (b" ", b"\t"):
                value += b" " + line.strip()
                continue
            return value
        if line.lower().startswith(lname):
            value = line[len(lname):].strip()
    return value


def thread_id(raw: bytes) -> str:
    root = None
    for field in (b"references", b"in-reply-to", b"message-id"):
        value = _header(raw, field)
        if value:
            ids = _MSGID.findall(value)
            if ids:
                root = ids[0]
                break
    if root is None:
        return "T" + email_id(raw)[1:]
    return "T" + hashlib.sha256(root).hexdigest()[:24]


def mailbox_id(mbox) -> str:
    own = getattr(mbox, "mailbox_id", None)
    if isinstance(own, str) and own:
        return own
    row = getattr(mbox, "id", None)
    if isinstance(row, int) and getattr(getattr(mbox, "store", None), "kind", None) == "postgres":
        return f"Fpg{row}"      # the fd_mailbox row: RENAME keeps it
    path = getattr(mbox, "path", None)
    if isinstance(path, str):
        try:
            with open(os.path.join(path, "dovecot-uidlist"), "rb") as f:
                first = f.readline().split()
        except OSError:
            first = []
        for field in first[1:]:
            if field.startswith(b"G") and re.fullmatch(rb"G[0-9A-Za-z_-]{1,200}", field):
                return "F" + field[1:].decode()
    name = getattr(mbox, "name", "")
    digest = hashlib.sha256(f"{mbox.uidvalidity}\0{name}".encode("utf-8", "surrogateescape")).hexdigest()
    return "F" + digest[:24]


def preview(raw: bytes) -> str | None:
    """The preview text (RFC 8970 section 3: at most 256 characters; we give 200), None without text."""
    from email import message_from_bytes, policy

    try:
        msg = message_from_bytes(raw, policy=policy.default)
        part = msg.get_body(preferencelist=("plain", "html"))
        if part is None:
            return None
        text = part.get_content()
        if not isinstance(text, str):
            return None
        if part.get_content_subtype() == "html":
            from fetchdeliver.sieve.html_text import html_to_text

            text = html_to_text(text)
    except Exception:    # malformed MIME or an unknown charset: no preview rather than an error
        return None
    text = " ".join(text.split())
    if not text:
        return None
    return text[:PREVIEW_CHARS]


def render_preview(raw: bytes) -> bytes:
    """The PREVIEW response value: a quoted string, a literal for what quoting cannot carry, or NIL."""
    text = preview(raw)
    if text is None:
        return b"NIL"
    data = text.encode("utf-8")
    if all(32 <= c < 127 for c in data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data
