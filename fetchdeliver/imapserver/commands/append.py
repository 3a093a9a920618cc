"""APPEND with its extensions: UIDPLUS's APPENDUID, MULTIAPPEND (RFC 3502: several messages, all or
none), CATENATE (RFC 4469: a message made of literals and IMAP URLs of messages on this server,
RFC 5092), BINARY's literal8 (RFC 3516) and APPENDLIMIT (RFC 7889).

A too-large literal announced with `{n}` is refused before the client sends it (session.py reads
the literals and asks `append_limit()`); every message is checked again here, CATENATE's after the
pieces are joined."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from fetchdeliver.errors import FetchdeliverError
from fetchdeliver.imapserver import fetch as fetchmod
from fetchdeliver.imapserver.commands.registry import AUTHED, command
from fetchdeliver.imapserver.protocol import ParseError, Parser, decode_mailbox
from fetchdeliver.storage.base import StorageError, canonical_flag

if TYPE_CHECKING:
    from fetchdeliver.imapserver.session import Session

# A CATENATE part: the bytes of a TEXT literal, or the text of a URL
CatPart = tuple[str, bytes]


@dataclass(frozen=True)
class AppendMessage:
    flags: frozenset[str]
    date: float | None
    message: bytes | None                 # the literal; None for CATENATE
    catenate: tuple[CatPart, ...] = ()    # ("TEXT", bytes) / ("URL", url bytes)


@dataclass(frozen=True)
class AppendArgs:
    mailbox: str
    messages: tuple[AppendMessage, ...]

    # the single-message form, as before MULTIAPPEND
    @property
    def flags(self) -> frozenset[str]:
        return self.messages[0].flags

    @property
    def date(self) -> float | None:
        return self.messages[0].date

    @property
    def message(self) -> bytes:
        return self.messages[0].message or b""


def _literal(p: Parser) -> bytes:
    p.maybe(b"~")    # literal8 (BINARY, RFC 3516): stored as it is, like any other literal
    return p.literal()


def _catenate(p: Parser) -> tuple[CatPart, ...]:
    p.expect(b"(")
    parts: list[CatPart] = []
    while True:
        if p.maybe(b"TEXT "):
            if p.peek() not in (123, 126):
                raise p.error("a literal after TEXT")
            parts.append(("TEXT", _literal(p)))
        elif p.maybe(b"URL "):
            parts.append(("URL", p.astring()))
        else:
            raise p.error("TEXT or URL")
        if p.maybe(b")"):
            return tuple(parts)
        p.sp()


def _message(p: Parser) -> AppendMessage:
    flags: list[str] = []
    date = None
    if p.peek() == 40:
        flags = [canonical_flag(f) for f in p.flag_list()]
        p.sp()
    if p.peek() == 34:
        date = p.date_time()
        p.sp()
    if any(f.lower() == "\\recent" or f == "\\*" for f in flags):
        raise ParseError("\\Recent and \\* cannot be set by APPEND")
    if p.maybe(b"CATENATE "):
        return AppendMessage(frozenset(flags), date, None, _catenate(p))
    if p.maybe(b"UTF8 ("):       # RFC 6855 4: a message with UTF-8 headers, after ENABLE UTF8=ACCEPT
        if not p.utf8:
            raise ParseError("APPEND UTF8 needs ENABLE UTF8=ACCEPT first")
        data = _literal(p)
        p.expect(b")")
        return AppendMessage(frozenset(flags), date, data)
    if p.peek() not in (123, 126):
        raise p.error("a literal (the message) or CATENATE")
    return AppendMessage(frozenset(flags), date, _literal(p))


def parse_append(p: Parser, uid: bool = False) -> AppendArgs:
    p.sp()
    name = p.mailbox()
    p.sp()
    messages = [_message(p)]
    while not p.at_end():       # MULTIAPPEND (RFC 3502)
        p.sp()
        messages.append(_message(p))
    return AppendArgs(name, tuple(messages))


def append_limit(s: Session) -> int:
    """The largest message APPEND takes (RFC 7889): `[imap] append_limit`, else `max_literal`."""
    limit = getattr(s.cfg, "append_limit", None)
    return min(limit, s.cfg.max_literal) if limit else s.cfg.max_literal


def _appendlimit_capability(s: Session) -> list[str]:
    return [f"APPENDLIMIT={append_limit(s)}"]


class BadUrl(FetchdeliverError):
    """A CATENATE URL that names nothing this server can give (NO [BADURL url])."""


_URL = re.compile(rb"^(?:imap://[^/]*)?/(?P<mailbox>[^;?]*?)(?:;UIDVALIDITY=(?P<uidvalidity>\d+))?/?"
                  rb";UID=(?P<uid>\d+)(?:/;SECTION=(?P<section>[^/;]*))?"
                  rb"(?:/;PARTIAL=(?P<off>\d+)(?:\.(?P<len>\d+))?)?$", re.IGNORECASE)


def parse_url(url: bytes) -> tuple[str, int | None, int, bytes, tuple[int, int | None] | None]:
    """(mailbox, uidvalidity or None, uid, section text, partial) of an IMAP URL (RFC 5092) naming
    a message or part on this server: `/INBOX;UIDVALIDITY=5/;UID=3/;SECTION=1.MIME` or the same
    after `imap://user@host`. Raises BadUrl for anything else (URLAUTH, searches, other hosts' forms)."""
    m = _URL.match(url)
    if m is None:
        raise BadUrl("not an IMAP URL of a message")
    try:
        mailbox = decode_mailbox(unquote_to_bytes(m.group("mailbox")))
    except ParseError:
        raise BadUrl("bad mailbox name") from None
    if not mailbox:
        raise BadUrl("no mailbox")
    uidvalidity = int(m.group("uidvalidity")) if m.group("uidvalidity") else None
    section = unquote_to_bytes(m.group("section") or b"")
    partial = None
    if m.group("off") is not None:
        partial = (int(m.group("off")), int(m.group("len")) if m.group("len") else None)
    return mailbox, uidvalidity, int(m.group("uid")), section, partial


def resolve_url(s: Session, url: bytes) -> bytes:
    """The bytes an IMAP URL names (a message, or its section), read from this user's store."""
    mailbox, uidvalidity, uid, section, partial = parse_url(url)
    try:
        sec = fetchmod.parse_section(section)
    except ParseError:
        raise BadUrl("bad section") from None
    if s.view is not None and s.view.name == mailbox:
        mbox, own = s.view.mailbox, False
    else:
        try:
            mbox, own = s.storage.open(mailbox, readonly=True), True
        except StorageError:
            raise BadUrl("no such mailbox") from None
    try:
        if uidvalidity is not None and uidvalidity != mbox.uidvalidity:
            raise BadUrl("UIDVALIDITY differs")
        msg = next((m for m in mbox.sync() if m.uid == uid), None)
        if msg is None:
            raise BadUrl("no such message")
        try:
            raw = mbox.read(msg)
        except StorageError:
            raise BadUrl("the message was expunged") from None
    finally:
        if own:
            mbox.close()
    data = fetchmod.section_bytes(fetchmod.Parsed(raw), sec)
    if data is None:
        raise BadUrl("no such section")
    if partial is not None:
        off, length = partial
        data = data[off:] if length is None else data[off:off + length]
    return data


@command("APPEND", AUTHED, parse=parse_append,
         capabilities=("MULTIAPPEND", "CATENATE"), dynamic=_appendlimit_capability)
async def append(s: Session, tag: str, args: AppendArgs) -> None:
    name = args.mailbox
    if s.view is not None and s.view.name == name:
        mbox, own = s.view.mailbox, False
    else:
        try:
            mbox, own = s.storage.open(name), True
        except StorageError as e:
            if e.code == "NONEXISTENT":
                e.code = "TRYCREATE"
            raise
    try:
        refusal, raws = _messages(s, args)
        if refusal:
            await s.send(f"{tag} NO {refusal}\r\n".encode("utf-8", "replace"))
            return
        uids: list[int] = []
        try:
            for msg, raw in zip(args.messages, raws):
                uids.append(await _append_one(s, mbox, raw, msg.flags, msg.date))
        except BaseException:
            # MULTIAPPEND is all or none (RFC 3502): take back what this command added
            if uids:
                _undo(mbox, uids)
            raise
        uidvalidity = mbox.uidvalidity
        s.server.recent.add(mbox, uids)
    finally:
        if own:
            mbox.close()
    if s.server.config.imapsieve is not None:   # RFC 6785 (imapserver/imapsieve.py): after it is durable
        from fetchdeliver.imapserver import imapsieve

        await imapsieve.after_append(s, name, uids)
    await s.sync_out()
    await s.send(f"{tag} OK [APPENDUID {uidvalidity} {_uid_set(uids)}] Append completed.\r\n".encode())


def _messages(s: Session, args: AppendArgs) -> tuple[str, list[bytes]]:
    """(refusal text for a NO, or "", the messages' bytes): CATENATE's joined, each within the limit."""
    limit = append_limit(s)
    raws: list[bytes] = []
    for msg in args.messages:
        if msg.message is not None:
            raw = msg.message
        else:
            pieces = []
            for kind, value in msg.catenate:
                if kind == "TEXT":
                    pieces.append(value)
                    continue
                try:
                    pieces.append(resolve_url(s, value))
                except BadUrl as e:
                    url = "".join(ch for ch in value.decode("utf-8", "replace") if ch >= " " and ch != "]")
                    return f"[BADURL {url}] {e}.", []
            raw = b"".join(pieces)
        if len(raw) > limit:
            return f"[TOOBIG] A message of {len(raw)} bytes is over the limit ({limit}).", []
        if not raw:
            return "Cannot append an empty message.", []
        raws.append(raw)
    return "", raws


async def _append_one(s: Session, mbox, data: bytes, flags: frozenset[str], date: float | None) -> int:
    """One message, durable on return."""
    write = getattr(mbox, "write_message", None)
    if write is not None and getattr(mbox, "adopt", None) is not None:
        # The file's write and fsyncs run in a worker thread: other sessions go on meanwhile.
        current = mbox.own_change()
        path = await s.loop.run_in_executor(None, write, data, flags, date)
        return int(mbox.adopt(path, current))
    return int(mbox.append(data, flags, date))


def _undo(mbox, uids: list[int]) -> None:
    try:
        doomed = [m for m in mbox.sync() if m.uid in set(uids)]
        mbox.expunge(doomed)
    except StorageError:
        pass     # the error that made us undo is the one the client hears


def _uid_set(uids: list[int]) -> str:
    from fetchdeliver.imapserver.protocol import format_sequence

    return format_sequence(uids)

