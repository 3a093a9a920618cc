"""The `Source` protocol every mail source implements, and what sources share.

A source hands out messages in batches, each message with an opaque handle;
whoever runs it (the account runner, the MDA, the LMTP server, the spool)
delivers each message and then tells the source, per handle:

- `ack(handles)`: the delivery is durable (file and directory fsynced, or DB
  commit, or the relay said 250) and recorded: the source may now remove or
  mark the message (IMAP \\Deleted/\\Seen/MOVE, POP3 DELE, LMTP 250, MDA exit 0,
  spool unlink);
- `release(handles)`: leave the message untouched, it is tried again later
  (a temporary failure: IMAP/POP3 keep it on the server, LMTP answers 451,
  the MDA exits 75, the spool file stays).

A handle that is neither acked nor released (a crash, Ctrl-C) is left untouched.

This module is imported on the MDA's start-up path: it imports neither `typing`
nor `dataclasses` at run time (see docs/architecture.md "Start-up time is a
feature"); the protocols are real `typing.Protocol`s for the type checker.
"""

from __future__ import annotations

from fetchdeliver.errors import FetchdeliverError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterator, Sequence
    from typing import Any, Protocol

    # Opaque to the caller: a UID, a message number, a file name, a recipient's index...
    Handle = Hashable
else:
    Protocol = object


class Envelope:
    """The envelope of a message, when the source has one (LMTP, MDA, spool)."""

    __slots__ = ("sender", "recipients")

    def __init__(self, sender: str, recipients: list[str]) -> None:
        self.sender = sender          # "" is the null sender <>
        self.recipients = recipients

    def __repr__(self) -> str:
        return f"Envelope({self.sender!r}, {self.recipients!r})"


class Fetched:
    """One message from a source.

    `uid` is the source's stable id of the message (IMAP UID, POP3 UIDL, file name), with
    `folder` and `uidvalidity` where the source has them: the runner records deliveries under
    (folder, uidvalidity, uid) in the state database. `headers` are (name, value) pairs put on
    top, above our Received: line (X-Gmail-Labels). `envelope` is None for fetched mail (the
    sender comes from Return-Path:, the recipient from the account).
    """

    __slots__ = ("handle", "raw", "uid", "folder", "uidvalidity", "headers", "envelope")

    def __init__(self, handle: Handle, raw: bytes, uid: str, *, folder: str | None = None,
                 uidvalidity: int | None = None, headers: Sequence[tuple[str, str]] = (),
                 envelope: Envelope | None = None) -> None:
        self.handle = handle
        self.raw = raw
        self.uid = uid
        self.folder = folder
        self.uidvalidity = uidvalidity
        self.headers = headers
        self.envelope = envelope

    def where(self) -> str:
        """The message in a log line: `INBOX UID 7`, `message 0001abcd`."""
        return f"{self.folder} UID {self.uid}" if self.folder is not None else f"message {self.uid}"

    def __repr__(self) -> str:
        return f"Fetched({self.where()}, {len(self.raw)} bytes)"


class Run(Protocol):
    """What a source may use of the run that drives it (the account runner offers all of it)."""

    dry_run: bool          # change nothing: neither the source nor the state database
    verbose: bool
    state: Any             # fetchdeliver.state.State (or the PostgreSQL one): the source's own tables
    folders: list[str] | None   # only these folders (the daemon's push passes); None: the account's

    @property
    def account_name(self) -> str:
        """The [[account]]'s name (the key of the source's rows in the state database)."""
        ...

    def expect(self, count: int) -> None:
        """`count` more messages will come (the progress bar's total)."""

    def step(self, count: int = 1) -> None:
        """`count` messages were dealt with without delivery (progress only)."""

    def skipped(self, count: int, note: str) -> None:
        """`count` messages were recognised as already delivered and acknowledged; `note` says why."""

    def warn(self, text: str) -> None:
        """A line for the user (stderr, or the daemon's log)."""


class Source(Protocol):
    """A mail source. The runner's order: connect(), then for each batch: deliver every message,
    ack() what is durable, release() what failed; close() at the end (also after an error, with
    quit=False: drop the connection without committing anything more)."""

    def connect(self) -> None:
        """Open the connection and log in (called again to reconnect). Raises SourceError."""

    def batches(self, run: Run) -> Iterator[Sequence[Fetched]]:
        """The messages to deliver, in batches. The source may do work between batches (the next
        folder, an EXPUNGE after a folder's acknowledgements) when the runner asks for the next one."""
        ...

    def ack(self, handles: Sequence[Handle]) -> None:
        """These messages are delivered durably and recorded: remove/mark them as the account says."""

    def release(self, handles: Sequence[Handle]) -> None:
        """These messages were not delivered (temporary failure): leave them as they are."""

    def close(self, *, quit: bool = True) -> None:
        """End the session (`quit=False`: just drop the connection)."""


class SourceKind:
    """A registered kind of account source (`protocol = "NAME"` in [[account]]).

    `factory` makes the Source from an Account: a callable, or "module:attribute" imported on
    first use (so the schema and the web page can describe an account without importing its
    client library). The rest is what the account schema checks: `default_ports` by tls mode,
    the `after` policies the source carries out ("move" stands for "move:FOLDER"), whether it
    has folders (`folders = [...]`) and IMAP-style push (`idle`, `max_connections`, `notify`).
    `watcher`: the daemon's push for `idle = true` accounts of a kind with push of its own
    ("module:Class" with the interface of daemon.idle.AccountPush, e.g. JMAP's EventSource); the
    IMAP keys `max_connections`/`notify` stay IMAP's. `keep_crlf`: the default of the account key
    (true where the source hands over the stored message, not a wire rendering: JMAP blobs).
    """

    __slots__ = ("name", "factory", "default_ports", "after", "folders", "push", "received_with", "watcher",
                 "keep_crlf")

    def __init__(self, name: str, factory: Callable[[Any], Source] | str, *, default_ports: dict[str, int],
                 after: Sequence[str] = ("keep", "delete"), folders: bool = False, push: bool = False,
                 received_with: str | None = None, watcher: str | None = None, keep_crlf: bool = False) -> None:
        self.name = name
        self.factory = factory
        self.default_ports = default_ports
        self.after = tuple(after)
        self.folders = folders
        self.push = push
        # The protocol word in our Received: header ("with IMAP"; "S" is added with TLS).
        self.received_with = received_with or name.upper()
        self.watcher = watcher
        self.keep_crlf = keep_crlf

    def make(self, account: Any) -> Source:
        """A new (not yet connected) Source for `account`."""
        factory = self.factory
        if isinstance(factory, str):
            import importlib

            module, _, attr = factory.partition(":")
            factory = self.factory = getattr(importlib.import_module(module), attr)
        return factory(account)

    def __repr__(self) -> str:
        return f"SourceKind({self.name!r})"


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
