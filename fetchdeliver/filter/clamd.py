"""ClamAV's clamd over INSTREAM (clamd(8)): `zINSTREAM\\0`, then <4-byte length><data> chunks, then a
zero length; the answer is `stream: OK`, `stream: NAME FOUND` or `... ERROR`."""

from __future__ import annotations

import struct

from fetchdeliver.errors import FilterUnavailable
from fetchdeliver.filter.connection import Deadline, connect, read_until_close, send_all
from fetchdeliver.filter.verdict import VirusVerdict

CHUNK = 1 << 16


def check(endpoint: str, raw: bytes, timeout: float) -> VirusVerdict:
    """Ask clamd at `endpoint` about `raw`; FilterUnavailable when it is down, slow or says ERROR."""
    what = f"clamd {endpoint}"
    deadline = Deadline(timeout, what)
    parts = [b"zINSTREAM\0"]
    for i in range(0, len(raw), CHUNK):
        piece = raw[i:i + CHUNK]
        parts.append(struct.pack("!L", len(piece)) + piece)
    parts.append(struct.pack("!L", 0))
    sock = connect(endpoint, deadline)
    with sock:
        send_all(sock, b"".join(parts), deadline)
        answer = read_until_close(sock, deadline, limit=65536, stop=b"\0")
    return parse(answer, what)


def parse(answer: bytes, what: str = "clamd") -> VirusVerdict:
    text = answer.rstrip(b"\0\n").decode("utf-8", "replace").strip()
    if not text:
        raise FilterUnavailable(f"{what}: closed the connection without an answer")
    _, _, result = text.partition(": ")
    if not result:
        raise FilterUnavailable(f"{what}: {text[:200]}")
    if result == "OK":
        return VirusVerdict("clamd", False)
    if result.endswith(" FOUND"):
        return VirusVerdict("clamd", True, result[:-len(" FOUND")].strip())
    raise FilterUnavailable(f"{what}: {result[:200]}")
