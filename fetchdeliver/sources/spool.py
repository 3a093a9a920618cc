"""The spool directory as a Source: each settled file in [spool] dir is a message; `ack` removes it.

A file is taken once it has not changed for SETTLE seconds; names starting with
"." or ending in ".tmp" are ignored (write there, then rename). `ack` removes a
file durably (unlink + directory fsync) only after its delivery is durable;
`release` leaves it for the next scan. Between the two steps of an ack the
file's digest is in the state database's memory: a crash there leaves the row,
and the next scan removes the file instead of delivering it again. Once removed
it is forgotten, so the same bytes dropped in later are delivered as new mail.

The daemon's spool thread (fetchdeliver/daemon/spool.py) watches the directory
and runs this source through the pipeline.
"""

from __future__ import annotations

import logging
import os
import time

from fetchdeliver.sources.base import Envelope, Fetched

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from fetchdeliver.sources.base import Handle, Run

log = logging.getLogger("fetchdeliver.daemon.spool")

SPOOL_MEMORY = 30 * 86400  # upper bound for a delivered-but-not-yet-removed file's memory
SETTLE = 0.5


class SpoolSource:
    """The files of one directory, one per batch (each is acknowledged before the next is read)."""

    def __init__(self, directory: str, *, recipient: str, state=None) -> None:
        self.dir = directory
        self.recipient = recipient
        self.state = state           # the memory of delivered-but-not-yet-removed files; None: none
        self.young = False           # a file was too new to take: look again shortly
        self.removed = 0             # files removed because an earlier delivery had been made
        self._digests: dict[str, str] = {}

    def connect(self) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)

    def candidates(self) -> list[str]:
        """Settled files, oldest name first; sets `young` when a file is still too new."""
        try:
            names = sorted(os.listdir(self.dir))
        except OSError as e:
            log.error("cannot read the spool directory %s: %s", self.dir, e.strerror)
            return []
        out = []
        now = time.time()
        for n in names:
            if n.startswith(".") or n.endswith(".tmp"):
                continue
            path = os.path.join(self.dir, n)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if not os.path.isfile(path):
                continue
            if now - st.st_mtime < SETTLE:
                self.young = True  # still being written, perhaps: look again shortly
                continue
            out.append(path)
        return out

    def batches(self, run: Run | None = None) -> Iterator[Sequence[Fetched]]:
        import hashlib

        from fetchdeliver.message import Message
        from fetchdeliver.message import envelope_sender

        self.young = False
        for path in self.candidates():
            name = os.path.basename(path)
            try:
                with open(path, "rb") as f:
                    raw = f.read()
            except FileNotFoundError:
                continue  # taken by someone else meanwhile
            except OSError as e:
                log.error("spool: cannot read %s: %s", path, e.strerror)
                continue
            digest = f"{hashlib.sha256(raw).hexdigest()}:{name}"
            if self.state is not None and remembered(self.state, digest):
                # Delivered before a crash (or a failed unlink) kept the file: do not deliver it twice.
                log.info("spool: %s was already delivered; removing it", name)
                if self._remove(path):
                    self.state.forget("spool", digest)
                    self.removed += 1
                continue
            self._digests[path] = digest
            sender = envelope_sender(Message(raw))
            yield [Fetched(path, raw, name, envelope=Envelope(sender, [self.recipient]))]

    def ack(self, handles: Sequence[Handle]) -> None:
        """Delivered durably: remember the file, remove it (durably), forget it."""
        for path in handles:
            if not isinstance(path, str):
                continue
            digest = self._digests.pop(path, None)
            if self.state is not None and digest is not None:
                self.state.remember("spool", digest, SPOOL_MEMORY)
            if self._remove(path) and self.state is not None and digest is not None:
                self.state.forget("spool", digest)

    def release(self, handles: Sequence[Handle]) -> None:
        """Not delivered: the file stays for the next scan."""
        for path in handles:
            self._digests.pop(str(path), None)

    def close(self, *, quit: bool = True) -> None:
        self._digests.clear()

    def _remove(self, path: str) -> bool:
        """Remove a delivered file durably; False (logged) when it could not be."""
        try:
            os.unlink(path)
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            log.error("spool: %s delivered but could not be removed: %s", os.path.basename(path), e.strerror)
            return False
        return True


def remembered(state, digest: str) -> bool:
    row = state.db.execute("SELECT expires FROM memory WHERE kind='spool' AND key=?", (digest,)).fetchone()
    return row is not None and row[0] > time.time()
