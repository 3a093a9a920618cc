"""Mailbox names: validation, IMAP modified UTF-7, and where a name lives on disk.

Names use "/" as the hierarchy separator ("Work/Reports"), as Sieve scripts and
IMAP clients give them. On disk they follow Dovecot:

- Maildir++ (LAYOUT=maildir++): "Work/Reports" -> ".Work.Reports" under the
  Maildir root; INBOX (any case) is the root itself; "inbox/Sub" -> ".INBOX.Sub".
- mbox folders (Dovecot's fs layout): "Work/Reports" -> FOLDER_DIR/Work/Reports.

Non-ASCII is stored as IMAP modified UTF-7 (RFC 3501 section 5.1.3), e.g.
"Ärger" -> "&AMQ-rger", which is what `doveadm mailbox create` writes too.
"""

from __future__ import annotations

from fetchdeliver.errors import InvalidMailboxName

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,"
NAME_MAX = 255  # bytes in one directory entry (Linux, and Dovecot's own limit)


# -- modified UTF-7 -----------------------------------------------------------------

def _b64_utf16(chars: list[str]) -> str:
    data = "".join(chars).encode("utf-16-be")  # surrogate pairs for characters above U+FFFF
    nbits = len(data) * 8
    pad = (-nbits) % 6
    value = int.from_bytes(data, "big") << pad
    count = (nbits + pad) // 6
    return "&" + "".join(_B64[(value >> (6 * (count - 1 - i))) & 63] for i in range(count)) + "-"


def utf7_encode(name: str) -> str:
    """Encode `name` as IMAP modified UTF-7; raises ValueError for lone surrogates."""
    out: list[str] = []
    pending: list[str] = []
    for ch in name:
        if " " <= ch <= "~":
            if pending:
                out.append(_b64_utf16(pending))
                pending = []
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    if pending:
        out.append(_b64_utf16(pending))
    return "".join(out)


def utf7_decode(text: str) -> str:
    """Decode IMAP modified UTF-7; raises ValueError naming the position of anything malformed."""
    out: list[str] = []
    i, n = 0, len(text)
    after_run = -1  # where the last BASE64 run ended: two runs in a row must have been one
    while i < n:
        ch = text[i]
        if not " " <= ch <= "~":
            raise ValueError(f"{text!r}: character {ch!r} at {i} is not printable US-ASCII")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise ValueError(f"{text!r}: '&' at {i} has no closing '-'")
        if end == i + 1:
            out.append("&")
            i = end + 1
            continue
        if after_run == i:
            raise ValueError(f"{text!r}: adjacent BASE64 runs at {i} (they must be written as one)")
        value = 0
        for j in range(i + 1, end):
            k = _B64.find(text[j])
            if k < 0:
                raise ValueError(f"{text!r}: {text[j]!r} at {j} is not a modified BASE64 character")
            value = (value << 6) | k
        nbits = 6 * (end - i - 1)
        nbytes, extra = divmod(nbits, 8)
        if extra >= 6 or nbytes % 2 or value & ((1 << extra) - 1):
            raise ValueError(f"{text!r}: the BASE64 run at {i} does not end on a UTF-16 character")
        try:
            decoded = (value >> extra).to_bytes(nbytes, "big").decode("utf-16-be")
        except UnicodeDecodeError:
            raise ValueError(f"{text!r}: the BASE64 run at {i} holds an unpaired UTF-16 surrogate") from None
        for c in decoded:
            if " " <= c <= "~":
                raise ValueError(f"{text!r}: the BASE64 run at {i} encodes the printable {c!r}, "
                                 "which must stand for itself")
        out.append(decoded)
        i = after_run = end + 1
    return "".join(out)


# -- validation ---------------------------------------------------------------------

def is_inbox(name: str) -> bool:
    return name.upper() == "INBOX"


def _bad(name: object, why: str) -> InvalidMailboxName:
    return InvalidMailboxName(f"invalid mailbox name {name!r}: {why}")


def split_name(name: str) -> tuple[str, ...]:
    """Validated components of `name`; () for INBOX. A first component "inbox" becomes "INBOX"."""
    if not isinstance(name, str):
        raise _bad(name, "not a string")
    if not name:
        raise _bad(name, "it is empty")
    if is_inbox(name):
        return ()
    for i, ch in enumerate(name):
        if ch < " " or ch == "\x7f":
            raise _bad(name, f"control character {ch!r} at position {i}")
        if "\ud800" <= ch <= "\udfff":
            raise _bad(name, f"unpaired surrogate {ch!r} at position {i} (not valid Unicode)")
    if name.startswith("/"):
        raise _bad(name, "absolute paths are not mailbox names (it begins with '/')")
    if name.startswith("~"):
        raise _bad(name, "it begins with '~' (Dovecot refuses it: home-directory syntax)")
    parts = name.split("/")
    for part in parts:
        if part == "":
            raise _bad(name, "empty component (a trailing '/' or '//')")
        if part in (".", ".."):
            raise _bad(name, f"{part!r} components are not allowed (they would leave the mail folder)")
    if parts[0].upper() == "INBOX":
        parts[0] = "INBOX"
    return tuple(parts)


def maildir_folder(name: str) -> str:
    """The Maildir++ directory name of `name`: "" for INBOX, ".Work.Reports" for "Work/Reports"."""
    parts = split_name(name)
    if not parts:
        return ""
    for part in parts:
        if "." in part:
            raise _bad(name, f"component {part!r} contains '.', the Maildir++ separator on disk; "
                             "use '/' for sub-folders")
    dirname = "." + ".".join(utf7_encode(p) for p in parts)
    if len(dirname.encode()) > NAME_MAX:
        raise _bad(name, f"it needs {len(dirname.encode())} bytes on disk as Maildir++ folder, "
                         f"more than {NAME_MAX}")
    return dirname


def name_from_maildir_folder(dirname: str) -> str:
    """Inverse of maildir_folder for a non-INBOX folder (".Work.Reports" -> "Work/Reports")."""
    if not dirname.startswith(".") or dirname in (".", ".."):
        raise ValueError(f"{dirname!r} is not a Maildir++ folder name")
    parts = dirname[1:].split(".")
    if "" in parts:
        raise ValueError(f"{dirname!r} has an empty component")
    return "/".join(utf7_decode(p) for p in parts)


def mbox_relpath(name: str) -> str | None:
    """Path of mbox folder `name` relative to the folder directory; None for INBOX."""
    parts = split_name(name)
    if not parts:
        return None
    encoded = []
    for part in parts:
        enc = utf7_encode(part)
        if len(enc.encode()) > NAME_MAX:
            raise _bad(name, f"component {part!r} needs {len(enc.encode())} bytes on disk, "
                             f"more than {NAME_MAX}")
        encoded.append(enc)
    if encoded[-1].endswith(".lock"):
        # FOLDER.lock is the dotlock of FOLDER: a mailbox of that name would be taken for a lock.
        raise _bad(name, "a name ending in '.lock' would collide with the dotlock of another mbox")
    return "/".join(encoded)


def name_from_mbox_relpath(relpath: str) -> str:
    """Inverse of mbox_relpath ("Work/&AMQ-rger" -> "Work/Ärger")."""
    return "/".join(utf7_decode(p) for p in relpath.split("/"))
