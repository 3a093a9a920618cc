"""What every mail source shares: the error type that names the command and the server's words."""

from __future__ import annotations

from fetchdeliver.errors import FetchdeliverError


class SourceError(FetchdeliverError):
    """A source command failed. str() is one line: `COMMAND: what happened (server's words)`."""

    def __init__(self, command: str, detail: str, *, temporary: bool = True) -> None:
        self.command = command
        self.detail = detail
        self.temporary = temporary  # False for refused logins and certificate problems
        super().__init__(f"{command}: {detail}")


def server_words(value: object) -> str:
    """A server response (bytes, str, list of either, exception) as one readable line."""
    if isinstance(value, BaseException):
        value = str(value)
    if isinstance(value, (list, tuple)):
        value = " ".join(server_words(v) for v in value)
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    text = str(value).strip()
    # imaplib/imapclient like to wrap the server's bytes in repr(): "b'[AUTHENTICATIONFAILED] ...'".
    for prefix in ("b'", 'b"'):
        if text.startswith(prefix) and text.endswith(prefix[1]):
            text = text[2:-1]
    text = text.replace("\\r", " ").replace("\\n", " ").replace("\r", " ").replace("\n", " ")
    return " ".join(text.split())


def describe_os_error(e: OSError) -> str:
    """Connection-level errors in the words a user expects."""
    import socket
    import ssl

    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {e.verify_message or e.reason}"
    if isinstance(e, ssl.SSLError):
        return f"TLS failed: {e.reason or e}"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve the host name: {e.strerror}"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out (no answer from the server)"
    if e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def header_digest(raw: bytes) -> str:
    """SHA-256 of the header block: a stand-in id for POP3 servers without UIDL."""
    import hashlib

    from fetchdeliver.message import header_block

    block = header_block(raw)
    return hashlib.sha256(block or raw).hexdigest()
