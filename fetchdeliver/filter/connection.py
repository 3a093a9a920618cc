"""Sockets to the scanners: "HOST:PORT" or a Unix socket path, with one deadline for the whole exchange."""

from __future__ import annotations

import socket
import time

from fetchdeliver.errors import FilterUnavailable


class Deadline:
    """Seconds left until the scanner must have answered."""

    __slots__ = ("end", "what")

    def __init__(self, seconds: float, what: str) -> None:
        self.end = time.monotonic() + seconds
        self.what = what

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise FilterUnavailable(f"{self.what}: no answer in time (timeout)")
        return left


def is_unix(endpoint: str) -> bool:
    return endpoint.startswith("/")


def connect(endpoint: str, deadline: Deadline) -> socket.socket:
    """A connected socket, or FilterUnavailable naming the scanner and why."""
    try:
        if is_unix(endpoint):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(deadline.left())
                sock.connect(endpoint)
            except BaseException:
                sock.close()
                raise
            return sock
        host, _, port = endpoint.rpartition(":")
        return socket.create_connection((host.strip("[]"), int(port)), timeout=deadline.left())
    except socket.timeout:
        raise FilterUnavailable(f"{deadline.what}: connect timed out") from None
    except OSError as e:
        raise FilterUnavailable(f"{deadline.what}: cannot connect: {e.strerror or e}") from None


def send_all(sock: socket.socket, data: bytes, deadline: Deadline) -> None:
    view = memoryview(data)
    try:
        while view:
            sock.settimeout(deadline.left())
            n = sock.send(view[:65536])
            view = view[n:]
    except socket.timeout:
        raise FilterUnavailable(f"{deadline.what}: sending the message timed out") from None
    except OSError as e:
        raise FilterUnavailable(f"{deadline.what}: connection lost while sending: {e.strerror or e}") from None


def read_until_close(sock: socket.socket, deadline: Deadline, limit: int = 1 << 20,
                     stop: bytes | None = None) -> bytes:
    """Everything the scanner says until it closes (or sends `stop`), within the deadline."""
    chunks = []
    total = 0
    try:
        while True:
            sock.settimeout(deadline.left())
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise FilterUnavailable(f"{deadline.what}: answer longer than {limit} bytes")
            if stop is not None and chunk.endswith(stop):
                break
    except socket.timeout:
        raise FilterUnavailable(f"{deadline.what}: no answer in time (timeout)") from None
    except OSError as e:
        raise FilterUnavailable(f"{deadline.what}: connection lost while reading: {e.strerror or e}") from None
    return b"".join(chunks)
