"""The IMAP command registry: every command's name, states, UID form, capabilities, parser and handler.

A command module registers each command with `@command(...)` on its handler:

    @command("NAMESPACE", AUTHED, parse=no_args, capabilities=("NAMESPACE",))
    async def namespace(s: Session, tag: str, args: NoArgs) -> None: ...

`parse(p, uid)` reads the arguments after the command name (the Parser is just past it) and returns
a typed arguments object, or raises ParseError (answered with BAD); the handler gets that object.
CAPABILITY is built from the registry (`capabilities(session)`): each command's static capability
strings, plus what its `dynamic` function says for this session (STARTTLS, AUTH=..., LOGINDISABLED,
COMPRESS=DEFLATE depend on the connection and the settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

from fetchdeliver.imapserver.protocol import Parser

if TYPE_CHECKING:
    from fetchdeliver.imapserver.session import Session

NOT_AUTH, AUTH, SELECTED, LOGOUT = "not authenticated", "authenticated", "selected", "logout"
ANY = (NOT_AUTH, AUTH, SELECTED)
AUTHED = (AUTH, SELECTED)

Parse = Callable[[Parser, bool], Any]
Handler = Callable[["Session", str, Any], Awaitable[None]]


@dataclass(frozen=True)
class Command:
    name: str
    states: tuple[str, ...]
    parse: Parse
    handler: Handler
    uid: bool = False                         # also valid as `UID <name>`
    capabilities: tuple[str, ...] = ()        # always advertised
    dynamic: Callable[[Session], Iterable[str]] | None = None   # advertised depending on the session


REGISTRY: dict[str, Command] = {}


def command(name: str, states: tuple[str, ...], *, parse: Parse, uid: bool = False,
            capabilities: tuple[str, ...] = (),
            dynamic: Callable[[Session], Iterable[str]] | None = None) -> Callable[[Handler], Handler]:
    """Register the decorated handler as the IMAP command `name` (a duplicate name is a bug)."""
    def register(handler: Handler) -> Handler:
        key = name.upper()
        if key in REGISTRY:
            raise ValueError(f"IMAP command {key} registered twice")
        REGISTRY[key] = Command(key, tuple(states), parse, handler, uid, tuple(capabilities), dynamic)
        return handler
    return register


@dataclass(frozen=True)
class NoArgs:
    """The arguments of a command that takes none."""


NO_ARGS = NoArgs()


def no_args(p: Parser, uid: bool = False) -> NoArgs:
    p.end()
    return NO_ARGS


def capabilities(session: Session) -> list[str]:
    """The CAPABILITY list for this session: the registry's static strings in registration order,
    then the session-dependent ones; each once."""
    out: list[str] = []
    for cmd in REGISTRY.values():
        out.extend(c for c in cmd.capabilities if c not in out)
    for cmd in REGISTRY.values():
        if cmd.dynamic is not None:
            out.extend(c for c in cmd.dynamic(session) if c not in out)
    return out


class Bye(Exception):
    """End the connection after sending an untagged BYE with this text."""


class Done(Exception):
    """LOGOUT: the tagged OK is sent, close quietly."""
