"""METADATA (RFC 5464): GETMETADATA and SETMETADATA on the server ("") and on mailboxes.

Offered after login when the login's store has a place for the entries (imapserver/metadata.py):
the capabilities METADATA and METADATA-SERVER; with `[imapsieve] url` also IMAPSIEVE=<url> (RFC 6785,
which needs METADATA: `/shared/imapsieve/script` names the user's script for a mailbox).

- GETMETADATA [(MAXSIZE n) (DEPTH 0|1|infinity)] mailbox entry | (entry ...): one
  `* METADATA mailbox (entry value ...)`; an entry that is not set answers NIL (as Dovecot);
  DEPTH adds the entries below each one asked for; values longer than MAXSIZE are left out and
  the tagged OK says `[METADATA LONGENTRIES n]` (the longest one left out).
- SETMETADATA mailbox (entry value|NIL ...): all or nothing; `NO [METADATA MAXSIZE n]` for a value
  over 64 KiB, `NO [METADATA TOOMANY]` past 1000 entries per user, `NO [LIMIT]` past 1 MiB of values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fetchdeliver.imapserver import metadata as mdstore
from fetchdeliver.imapserver.commands.registry import AUTHED, command
from fetchdeliver.imapserver.protocol import ParseError, Parser, encode_mailbox
from fetchdeliver.storage.base import StorageError

if TYPE_CHECKING:
    from fetchdeliver.imapserver.session import Session


def _capabilities(s: Session) -> list[str]:
    if mdstore.session_metadata(s) is None:
        return []
    caps = ["METADATA", "METADATA-SERVER"]
    cfg = getattr(s.server.config, "imapsieve", None)
    if cfg is not None and cfg.url:
        caps.append(f"IMAPSIEVE={cfg.url}")
    return caps


def _entry(p: Parser) -> str:
    raw = p.astring()
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ParseError("an entry name is ASCII") from None
    if not mdstore.valid_entry(name):
        raise ParseError(f"invalid entry name {name!r} (it starts /private or /shared; no *, % or //)")
    return name


def _mailbox(p: Parser) -> str:
    return p.mailbox()


@dataclass(frozen=True)
class GetMetadataArgs:
    mailbox: str
    entries: tuple[str, ...]
    maxsize: int | None = None
    depth: str = "0"          # "0", "1" or "infinity"


def parse_getmetadata(p: Parser, uid: bool = False) -> GetMetadataArgs:
    p.sp()
    maxsize, depth = None, "0"
    if p.maybe(b"("):
        while not p.maybe(b")"):
            opt = p.atom().upper()
            p.sp()
            if opt == "MAXSIZE":
                maxsize = p.number()
            elif opt == "DEPTH":
                depth = p.atom().lower()
                if depth not in ("0", "1", "infinity"):
                    raise ParseError("DEPTH is 0, 1 or infinity")
            else:
                raise ParseError(f"unknown GETMETADATA option {opt}")
            p.maybe(b" ")
        p.sp()
    name = _mailbox(p)
    p.sp()
    entries = []
    if p.maybe(b"("):
        while not p.maybe(b")"):
            entries.append(_entry(p))
            p.maybe(b" ")
        if not entries:
            raise ParseError("no entry given")
    else:
        entries.append(_entry(p))
    p.end()
    return GetMetadataArgs(name, tuple(entries), maxsize, depth)


@dataclass(frozen=True)
class SetMetadataArgs:
    mailbox: str
    values: tuple[tuple[str, bytes | None], ...]


def parse_setmetadata(p: Parser, uid: bool = False) -> SetMetadataArgs:
    p.sp()
    name = _mailbox(p)
    p.sp()
    p.expect(b"(")
    values = []
    while not p.maybe(b")"):
        entry = _entry(p)
        p.sp()
        p.maybe(b"~")          # literal8
        values.append((entry, p.nstring()))
        p.maybe(b" ")
    p.end()
    if not values:
        raise ParseError("no entry given")
    return SetMetadataArgs(name, tuple(values))


def _check_mailbox(s: Session, name: str) -> None:
    if name and not s.storage.exists(name):
        raise StorageError(f"Mailbox {name} does not exist.", "NONEXISTENT")


def _store(s: Session):
    md = mdstore.session_metadata(s)
    if md is None:
        raise StorageError("This mail store keeps no metadata.", "UNAVAILABLE")
    return md


def format_value(v: bytes) -> bytes:
    if all(32 <= c < 127 for c in v) and len(v) < 1024:
        return b'"' + v.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(v) + v


@command("GETMETADATA", AUTHED, parse=parse_getmetadata, dynamic=_capabilities)
async def getmetadata(s: Session, tag: str, args: GetMetadataArgs) -> None:
    md = _store(s)
    _check_mailbox(s, args.mailbox)
    have = md.entries(args.mailbox)
    found: list[tuple[str, bytes | None]] = []
    seen = set()
    for entry in args.entries:
        key = entry.lower()
        hits = [(key, have.get(key))]
        if args.depth != "0":
            below = sorted(k for k in have if k.startswith(key + "/")
                           and (args.depth == "infinity" or "/" not in k[len(key) + 1:]))
            hits += [(k, have[k]) for k in below]
        for k, v in hits:
            if k not in seen:
                seen.add(k)
                found.append((k, v))
    longest = 0
    parts = []
    for k, v in found:
        if v is not None and args.maxsize is not None and len(v) > args.maxsize:
            longest = max(longest, len(v))
            continue
        if v is None and args.depth != "0":
            continue    # RFC 5464 4.2.2: with DEPTH, what exists at and below the entries
        parts.append(k.encode() + b" " + (b"NIL" if v is None else format_value(v)))
    if parts:
        s.out(b"* METADATA " + encode_mailbox(args.mailbox) + b" (" + b" ".join(parts) + b")\r\n")
    code = f"[METADATA LONGENTRIES {longest}] " if longest else ""
    await s.send(f"{tag} OK {code}Getmetadata completed.\r\n".encode())


@command("SETMETADATA", AUTHED, parse=parse_setmetadata)
async def setmetadata(s: Session, tag: str, args: SetMetadataArgs) -> None:
    md = _store(s)
    _check_mailbox(s, args.mailbox)
    try:
        md.set(args.mailbox, args.values)
    except mdstore.MetadataError as e:
        await s.send(f"{tag} NO [{e.code}] {e}\r\n".encode())
        return
    await s.send(f"{tag} OK Setmetadata completed.\r\n".encode())
