"""The actions a Sieve script decides on; the engine carries them out.

Each action knows its JSON form, the one `fetchdeliver sieve test --json`
prints: {"type": ..., ...}. The Sieve interpreter only builds these objects; it
never performs I/O. Plain classes (no dataclasses): this module is on the MDA's
start-up path, where every import costs.
"""

from __future__ import annotations


class Action:
    __slots__ = ()
    type = ""

    def to_json(self) -> dict:
        return {"type": self.type}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_json()!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_json() == self.to_json()

    __hash__ = None  # type: ignore[assignment]


class Store(Action):
    """keep (mailbox INBOX) or fileinto MAILBOX, with IMAP flags."""

    __slots__ = ("type", "mailbox", "flags", "copy", "implicit", "create")

    def __init__(self, mailbox: str = "INBOX", flags: list[str] | None = None, copy: bool = False,
                 implicit: bool = False, create: bool = False, kind: str = "keep") -> None:
        self.type = kind
        self.mailbox = mailbox
        self.flags = list(flags or [])
        self.copy = copy
        self.implicit = implicit
        self.create = create

    def to_json(self) -> dict:
        out = {"type": self.type, "mailbox": self.mailbox, "flags": list(self.flags),
               "copy": self.copy, "implicit": self.implicit}
        if self.create:
            out["create"] = True
        return out


def keep(flags: list[str] | None = None, implicit: bool = False) -> Store:
    return Store("INBOX", flags, implicit=implicit, kind="keep")


def fileinto(mailbox: str, flags: list[str] | None = None, copy: bool = False,
             create: bool = False) -> Store:
    return Store(mailbox, flags, copy=copy, create=create, kind="fileinto")


class Redirect(Action):
    __slots__ = ("address", "copy")
    type = "redirect"

    def __init__(self, address: str, copy: bool = False) -> None:
        self.address = address
        self.copy = copy

    def to_json(self) -> dict:
        return {"type": "redirect", "address": self.address, "copy": self.copy}


class Discard(Action):
    __slots__ = ()
    type = "discard"


class Reject(Action):
    __slots__ = ("type", "reason")

    def __init__(self, reason: str, ereject: bool = False) -> None:
        self.type = "ereject" if ereject else "reject"
        self.reason = reason

    def to_json(self) -> dict:
        return {"type": self.type, "reason": self.reason}


class Vacation(Action):
    __slots__ = ("reason", "subject", "seconds", "from_", "addresses", "mime", "handle", "fcc")
    type = "vacation"

    def __init__(self, reason: str, subject: str | None = None, seconds: int = 7 * 86400,
                 from_: str | None = None, addresses: list[str] | None = None, mime: bool = False,
                 handle: str | None = None) -> None:
        self.reason = reason
        self.subject = subject
        self.seconds = seconds
        self.from_ = from_
        self.addresses = list(addresses or [])
        self.mime = mime
        self.handle = handle
        self.fcc = None  # RFC 8580: {"mailbox", "flags", "create"} for a copy of the reply

    def to_json(self) -> dict:
        out = {"type": "vacation", "subject": self.subject, "seconds": self.seconds,
               "from": self.from_, "reason": self.reason}
        if self.fcc:
            out["fcc"] = dict(self.fcc)
        return out


class Notify(Action):
    __slots__ = ("method", "from_", "importance", "options", "message", "fcc")
    type = "notify"

    def __init__(self, method: str, from_: str | None = None, importance: str | None = None,
                 options: list[str] | None = None, message: str | None = None) -> None:
        self.method = method
        self.from_ = from_
        self.importance = importance
        self.options = list(options or [])
        self.message = message
        self.fcc = None  # RFC 8580: {"mailbox", "flags", "create"} for a copy of the notification

    def to_json(self) -> dict:
        out = {"type": "notify", "method": self.method, "from": self.from_,
               "importance": self.importance, "options": list(self.options),
               "message": self.message}
        if self.fcc:
            out["fcc"] = dict(self.fcc)
        return out


class Program(Action):
    """vnd.dovecot.pipe / filter / execute: run a program from the configured bin dir."""

    __slots__ = ("type", "program", "args", "copy")

    def __init__(self, program: str, args: list[str] | None = None, kind: str = "pipe",
                 copy: bool = False) -> None:
        self.type = kind
        self.program = program
        self.args = list(args or [])
        self.copy = copy

    def to_json(self) -> dict:
        return {"type": self.type, "program": self.program, "args": list(self.args)}
