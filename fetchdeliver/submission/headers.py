"""What the submission server checks and adds in a message's header (RFC 6409 section 8).

Only lines at the top are ever added (Received, then Message-ID and Date when missing); the
bytes the client sent follow unchanged.
"""

from __future__ import annotations

import os
from email.utils import formatdate, getaddresses

from fetchdeliver.message import Message


def from_addresses(message: Message) -> list[str]:
    """The addresses in From: (every one of them), lower-cased; [] when there is no From:."""
    values = message.get_all("From", decode=True) or []
    return [a.strip().lower() for _n, a in getaddresses(values) if a.strip()]


def additions(message: Message, *, hostname: str, received: str | None) -> list[str]:
    """The header lines (without line ends) to put on top of `message`."""
    out = []
    if received:
        out.append(received)
    if message.get("Message-ID") is None:
        out.append(f"Message-ID: <{os.urandom(12).hex()}@{hostname}>")
    if message.get("Date") is None:
        out.append(f"Date: {formatdate(localtime=True)}")
    return out


def received_line(*, helo: str, peer: str, hostname: str, tls: bool, user: str, qid: str) -> str:
    """One Received: header (folded), RFC 5321 4.4 with the RFC 3848 "ESMTPSA" keyword."""
    proto = "ESMTPSA" if tls else "ESMTPA"
    helo = "".join(c for c in helo if " " < c <= "~")[:100] or "unknown"
    user = "".join(c for c in user if " " < c <= "~" and c not in "();")[:100]
    return (f"Received: from {helo} ([{peer}])\r\n\tby {hostname} with {proto} id {qid}\r\n"
            f"\t(authenticated as {user}); {formatdate(localtime=True)}")


def prepend(raw: bytes, lines: list[str]) -> bytes:
    """`lines` on top of `raw`, with the message's own line ends (CRLF unless it uses bare LF)."""
    if not lines:
        return raw
    eol = "\r\n" if (b"\r\n" in raw[:4096] or b"\n" not in raw[:4096]) else "\n"
    text = eol.join(line.replace("\r\n", eol) for line in lines) + eol
    return text.encode("utf-8", "surrogateescape") + raw
