"""Commands valid in every state: CAPABILITY, NOOP, LOGOUT, ID (RFC 2971), ENABLE (RFC 5161),
and COMPRESS (RFC 4978, after login)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fetchdeliver.imapserver.commands.registry import (ANY, AUTHED, LOGOUT, NOT_AUTH, Done, NoArgs, command,
                                                       no_args)
from fetchdeliver.imapserver.protocol import Parser, start_deflate

if TYPE_CHECKING:
    from fetchdeliver.imapserver.session import Session


def _literal_capability(s: Session) -> list[str]:
    # RFC 7888 section 5: LITERAL+ or LITERAL-, never both
    return ["LITERAL+" if s.cfg.literal_plus else "LITERAL-"]


@command("CAPABILITY", ANY, parse=no_args, capabilities=("IMAP4rev1", "IMAP4rev2"),
         dynamic=_literal_capability)
async def capability(s: Session, tag: str, args: NoArgs) -> None:
    await s.send(f"* CAPABILITY {s.capabilities()}\r\n{tag} OK Capability completed.\r\n".encode())


@command("NOOP", ANY, parse=no_args)
async def noop(s: Session, tag: str, args: NoArgs) -> None:
    await s.sync_out()
    from fetchdeliver.imapserver import notify    # NOTIFY (RFC 5465): news of other mailboxes

    await notify.poll(s)
    await s.send(f"{tag} OK NOOP completed.\r\n".encode())


@command("LOGOUT", ANY, parse=no_args)
async def logout(s: Session, tag: str, args: NoArgs) -> None:
    s.state = LOGOUT
    await s.send(f"* BYE Logging out.\r\n{tag} OK Logout completed.\r\n".encode())
    raise Done


@dataclass(frozen=True)
class IdArgs:
    params: tuple[tuple[bytes | None, bytes | None], ...] | None   # None for ID NIL


def parse_id(p: Parser, uid: bool = False) -> IdArgs:
    p.sp()
    params: list[tuple[bytes | None, bytes | None]] | None = None
    if not p.maybe(b"NIL"):
        params = []
        p.expect(b"(")
        while not p.maybe(b")"):
            key = p.nstring()
            p.sp()
            params.append((key, p.nstring()))
            p.maybe(b" ")
    p.end()
    return IdArgs(None if params is None else tuple(params))


@command("ID", ANY, parse=parse_id, capabilities=("ID",))
async def id_(s: Session, tag: str, args: IdArgs) -> None:
    from fetchdeliver import __version__

    await s.send(f'* ID ("name" "fetchdeliver" "version" "{__version__}")\r\n'
                 f"{tag} OK ID completed.\r\n".encode())


@dataclass(frozen=True)
class EnableArgs:
    extensions: tuple[str, ...]     # upper-cased, as given


def parse_enable(p: Parser, uid: bool = False) -> EnableArgs:
    p.sp()
    words = []
    while True:
        words.append(p.atom().upper())
        if p.at_end():
            break
        p.sp()
    return EnableArgs(tuple(words))


@command("ENABLE", AUTHED, parse=parse_enable, capabilities=("ENABLE", "UTF8=ACCEPT"))
async def enable(s: Session, tag: str, args: EnableArgs) -> None:
    enabled: list[str] = []
    before = {"CONDSTORE": s.condstore, "QRESYNC": s.qresync, "IMAP4REV2": s.rev2, "UTF8=ACCEPT": s.utf8}
    for word in args.extensions:
        if word in before and not before[word] and word not in enabled:
            enabled.append(word)    # RFC 5161: ENABLED names what this command turned on
            if word in ("CONDSTORE", "QRESYNC"):
                s.qresync |= word == "QRESYNC"
                s.enable_condstore()     # QRESYNC implies CONDSTORE (RFC 7162 3.2.3)
            elif word == "IMAP4REV2":
                # RFC 9051: no \Recent nor RECENT from now on, SEARCH answers ESEARCH, mailbox
                # names in UTF-8 (its UTF8=ACCEPT part)
                s.rev2 = s.utf8 = True
                if s.view is not None:
                    s.view.rev2 = True
                    s.view.recent = set()
            else:
                s.utf8 = True            # RFC 6855 3
    enabled = ["IMAP4rev2" if w == "IMAP4REV2" else w for w in enabled]
    await s.send(f"* ENABLED{''.join(' ' + w for w in enabled)}\r\n{tag} OK Enabled.\r\n".encode())


@dataclass(frozen=True)
class CompressArgs:
    mechanism: str


def parse_compress(p: Parser, uid: bool = False) -> CompressArgs:
    p.sp()
    mech = p.atom().upper()
    p.end()
    return CompressArgs(mech)


def _compress_capability(s: Session) -> list[str]:
    # RFC 4978: after login (as Dovecot), and not once it is active
    return ["COMPRESS=DEFLATE"] if s.state != NOT_AUTH and not s.compressed else []


@command("COMPRESS", AUTHED, parse=parse_compress, dynamic=_compress_capability)
async def compress(s: Session, tag: str, args: CompressArgs) -> None:
    """COMPRESS DEFLATE (RFC 4978): protocol.start_deflate wraps the connection."""
    if args.mechanism != "DEFLATE":
        await s.send(f"{tag} BAD Unsupported compression mechanism {args.mechanism}.\r\n".encode())
    elif s.compressed:
        await s.send(f"{tag} NO [COMPRESSIONACTIVE] DEFLATE is active already.\r\n".encode())
    else:
        await s.send(f"{tag} OK DEFLATE active.\r\n".encode())
        s.writer = start_deflate(s.reader, s.writer)
        s.compressed = True
