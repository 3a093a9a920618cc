"""The MDA's source: one message on standard input, handed over by an MTA (`fetchdeliver deliver`).

The acknowledgement is the exit status: `ack` -> 0 (the MTA may forget the
message), `release` -> 75 EX_TEMPFAIL (the MTA keeps it and retries). A
message neither acked nor released (a crash) also ends in a non-zero status,
so the MTA keeps it.

On the MDA's start-up path: standard library only, nothing imported at run time
beyond what `fetchdeliver deliver` already has (docs/architecture.md "Start-up
time is a feature").
"""

from __future__ import annotations

import os
import sys

from fetchdeliver.errors import EX_OK, EX_TEMPFAIL
from fetchdeliver.sources.base import Envelope, Fetched

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import BinaryIO

    from fetchdeliver.sources.base import Handle, Run


def split_from_line(raw: bytes) -> tuple[bytes, str | None]:
    """Drop a leading mbox `From sender date` line (Postfix's local(8) and many MTAs prepend one).

    Returns (the message without that line, the sender it names or None when there was none).
    `MAILER-DAEMON` stands for the null sender. Everything after the line is kept byte for byte,
    as procmail and dovecot-lda do.
    """
    if not raw.startswith(b"From "):
        return raw, None
    nl = raw.find(b"\n")
    if nl < 0:
        return raw, None  # only one line: not an envelope line in front of a message
    words = raw[5:nl].split()
    sender = words[0].decode("utf-8", "surrogateescape") if words else ""
    if sender in ("MAILER-DAEMON", "<>"):
        sender = ""
    return raw[nl + 1:], sender


class StdinSource:
    """One message from a stream (standard input), its envelope from the options, the leading
    `From ` line, or the environment ($SENDER, $RECIPIENT, $USER), in that order."""

    HANDLE = 0

    def __init__(self, stream: BinaryIO | None = None, *, sender: str | None = None,
                 recipients: Sequence[str] = ()) -> None:
        self.stream = stream
        self.sender_option = sender
        self.recipients_option = list(recipients)
        self.message: Fetched | None = None
        self._status: int | None = None   # set by ack / release

    def connect(self) -> None:
        """Read the whole message (the MTA closes the pipe after it)."""
        stream = self.stream if self.stream is not None else sys.stdin.buffer
        raw, from_line_sender = split_from_line(stream.read())
        sender = self.sender_option
        if sender is None:
            sender = from_line_sender if from_line_sender is not None else os.environ.get("SENDER", "")
        if sender in ("<>", "MAILER-DAEMON"):
            sender = ""
        recipients = self.recipients_option or [
            r for r in [os.environ.get("RECIPIENT") or os.environ.get("USER")] if r]
        self.message = Fetched(self.HANDLE, raw, "stdin", envelope=Envelope(sender.strip("<>"), recipients))

    def batches(self, run: Run | None = None) -> Iterator[Sequence[Fetched]]:
        if self.message is None:
            self.connect()
        assert self.message is not None
        yield [self.message]

    @property
    def exit_status(self) -> int:
        """0 once acked; 75 (EX_TEMPFAIL) when released, or neither acked nor released."""
        return self._status if self._status is not None else EX_TEMPFAIL

    def ack(self, handles: Sequence[Handle]) -> None:
        if handles:
            self._status = EX_OK

    def release(self, handles: Sequence[Handle]) -> None:
        if handles:
            self._status = EX_TEMPFAIL

    def close(self, *, quit: bool = True) -> None:
        """Nothing to close: the MTA owns the pipe; the exit status answers it."""
