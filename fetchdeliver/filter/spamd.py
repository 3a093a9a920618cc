"""SpamAssassin's spamd over the SPAMC/SPAMD protocol (spamd(8), the SYMBOLS command).

    SYMBOLS SPAMC/1.5            SPAMD/1.1 0 EX_OK
    Content-length: N            Spam: True ; 1000.0 / 5.0
    User: NAME                   (blank line)
    (blank line) MESSAGE         GTUBE,MISSING_DATE,...
"""

from __future__ import annotations

from fetchdeliver.errors import FilterUnavailable
from fetchdeliver.filter.connection import Deadline, connect, read_until_close, send_all
from fetchdeliver.filter.verdict import SpamVerdict



def _spam_header(value: str) -> tuple[bool, float, float] | None:
    """ "True ; 1000.0 / 5.0" -> (True, 1000.0, 5.0); None when it does not read so (no `re`: start-up)."""
    flag, sep, numbers = value.partition(";")
    score, sep2, required = numbers.partition("/")
    flag = flag.strip().lower()
    if not sep or not sep2 or flag not in ("true", "false", "yes", "no"):
        return None
    try:
        return flag in ("true", "yes"), float(score), float(required)
    except ValueError:
        return None


def check(endpoint: str, raw: bytes, timeout: float, user: str | None = None) -> SpamVerdict:
    """Ask spamd at `endpoint` about `raw`; FilterUnavailable when it is down, slow or says an error."""
    what = f"spamd {endpoint}"
    deadline = Deadline(timeout, what)
    head = f"SYMBOLS SPAMC/1.5\r\nContent-length: {len(raw)}\r\n"
    if user:
        head += f"User: {user}\r\n"
    sock = connect(endpoint, deadline)
    with sock:
        send_all(sock, head.encode("ascii") + b"\r\n" + raw, deadline)
        try:
            sock.shutdown(1)  # SHUT_WR: spamd reads Content-length bytes, the EOF only helps old versions
        except OSError:
            pass
        answer = read_until_close(sock, deadline)
    return parse(answer, what)


def parse(answer: bytes, what: str = "spamd") -> SpamVerdict:
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = answer.partition(b"\n\n")
    lines = head.splitlines()
    if not lines:
        raise FilterUnavailable(f"{what}: closed the connection without an answer")
    status = lines[0].decode("latin-1").strip().split(" ", 2)
    if len(status) < 2 or not status[0].startswith("SPAMD/") or not status[1].isdigit():
        raise FilterUnavailable(f"{what}: not a SPAMD answer: {lines[0][:200]!r}")
    if status[1] != "0":
        raise FilterUnavailable(f"{what}: error {' '.join(status[1:])}")
    spam = None
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "spam":
            spam = _spam_header(value)
            if spam is None:
                raise FilterUnavailable(f"{what}: cannot read its Spam header: {value.strip()!r}")
    if spam is None:
        raise FilterUnavailable(f"{what}: its answer has no Spam header")
    tests = [t.strip() for t in body.decode("latin-1").strip().split(",") if t.strip()]
    return SpamVerdict("spamd", spam[0], spam[1], spam[2], tests)
