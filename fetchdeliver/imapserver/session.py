"""One IMAP connection: framing (lines + literals, bounded) and the state machine.

States: not authenticated -> authenticated -> selected -> logout (RFC 3501 section 3).
`Session.handle` reads the tag and the command name, looks the command up in the registry
(imapserver/commands/registry.py), checks that it is valid in the current state (and in its UID
form), has the command's parser read the arguments into a typed object, calls the handler, and
turns the exceptions a handler may raise into the tagged BAD/NO. The commands themselves live in
imapserver/commands/, grouped by state; the selected mailbox and its change feed in selection.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from typing import Any

from fetchdeliver.imapserver import search as searchmod
from fetchdeliver.imapserver.commands import REGISTRY
from fetchdeliver.imapserver.commands import capabilities as registry_capabilities
from fetchdeliver.imapserver.commands.append import append_limit
from fetchdeliver.imapserver.commands.registry import AUTH, LOGOUT, NOT_AUTH, SELECTED, Bye, Done
from fetchdeliver.imapserver.protocol import ParseError, Parser, literal_at_end, oneline
from fetchdeliver.imapserver.selection import SelectedMailbox, View, flag_list
from fetchdeliver.netlimits import OUT_OF_FDS, LogLimiter
from fetchdeliver.storage.base import StorageError

__all__ = ["AUTH", "LOGOUT", "NOT_AUTH", "SELECTED", "Bye", "Done", "Session", "View", "flag_list",
           "is_loopback"]

MAX_COMMANDS_BEFORE_LOGIN = 50
MAX_LITERAL_BEFORE_LOGIN = 8192
NONSYNC_LITERAL_MINUS = 4096      # LITERAL- (RFC 7888): the largest {n+} when LITERAL+ is off
_APPEND = re.compile(rb"[^ ]+ APPEND ", re.IGNORECASE)


def _log():
    import logging

    return logging.getLogger("fetchdeliver.imapserver")


RESOURCE_LOG = LogLimiter(_log())


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


class Session(SelectedMailbox):
    def __init__(self, server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 tls: bool) -> None:
        self.server = server
        self.cfg = server.config
        self.reader = reader
        self.writer = writer
        self.tls = tls
        peer = writer.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self.state = NOT_AUTH
        self.account = None
        self.storage: Any = None     # the login's Store (storage/base.py), or a plugin's
        self.view: View | None = None
        self.commands_before_login = 0
        self.auth_failures = 0
        self.changed = asyncio.Event()
        self._watch_tokens = []
        self._pending: list[bytes] = []    # output queued by out(), written by send()/flush()
        self.loop = asyncio.get_running_loop()
        self.condstore = False    # RFC 7162: MODSEQ in every FETCH that has FLAGS
        self.qresync = False      # RFC 7162: VANISHED instead of EXPUNGE, SELECT (QRESYNC ...)
        self.saved: set[int] = set()   # RFC 5182: the UIDs of SEARCH RETURN (SAVE), named `$`
        self.compressed = False   # COMPRESS=DEFLATE (RFC 4978) is active
        self.search_contexts: list = []   # CONTEXT=SEARCH (RFC 5267): imapserver/context.py
        self.notify_state: Any = None  # NOTIFY (RFC 5465): imapserver/notify.py NotifyState
        self.rev2 = False         # ENABLE IMAP4rev2 (RFC 9051): no \Recent, ESEARCH answers, LIST in SELECT
        self.utf8 = False         # ENABLE UTF8=ACCEPT (RFC 6855) or IMAP4rev2: mailbox names in UTF-8

    # -- output ---------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Queue `data` after what out() queued, and write it all at once (one send per answer)."""
        if self.search_contexts and data[:1] in (b"*", b"+"):
            # CONTEXT=SEARCH around untagged news: REMOVEFROM before it (an expunged message is removed
            # by the number it had), ADDTO after it (after the EXISTS of a new message)
            from fetchdeliver.imapserver.context import updates

            removed, added = updates(self)
            self._pending += [removed, data, added]
        else:                             # a tagged answer: the news before it
            self._context_updates()
            self._pending.append(data)
        await self.flush()

    def out(self, data: bytes) -> None:
        """Queue untagged output; it leaves with the next send() or flush()."""
        self._pending.append(data)

    async def flush(self) -> None:
        self._context_updates()
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self.writer.write(data)
        await self.writer.drain()

    def _context_updates(self) -> None:
        """CONTEXT=SEARCH: what changed in the live searches, after what is queued (imapserver/context.py)."""
        if self.search_contexts:
            from fetchdeliver.imapserver.context import updates

            removed, added = updates(self)
            self._pending += [removed, added]

    def capabilities(self) -> str:
        """The CAPABILITY list for this session, from the command registry (and the settings)."""
        return " ".join(registry_capabilities(self))

    def login_allowed(self) -> bool:
        return self.tls or self.cfg.allow_plaintext_auth or is_loopback(self.peer)

    # -- the connection ----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self.send(f"* OK [CAPABILITY {self.capabilities()}] fetchdeliver IMAP ready\r\n".encode())
            while self.state != LOGOUT:
                try:
                    buf = await self.read_command()
                except Bye as e:
                    await self.send(f"* BYE {e}\r\n".encode())
                    return
                if buf is None:
                    continue
                await self.handle(buf)
        except Done:
            pass
        except (ConnectionError, asyncio.IncompleteReadError, EOFError):
            pass
        except Bye as e:
            try:
                await self.send(f"* BYE {e}\r\n".encode())
            except ConnectionError:
                pass
        finally:
            self.unwatch()
            if self.view is not None:
                self.view.mailbox.close()
            try:
                self.writer.close()
            except Exception:
                pass

    async def read_line(self, timeout: float | None = None) -> bytes:
        t = self.cfg.idle_timeout if timeout is None else timeout
        try:
            line = await asyncio.wait_for(self.reader.readuntil(b"\n"), t)
        except asyncio.TimeoutError:
            raise Bye("Disconnected for inactivity.") from None
        except asyncio.LimitOverrunError:
            raise Bye(f"Command line longer than {self.cfg.max_line} bytes.") from None
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise Bye("Connection closed in the middle of a command.") from None
            raise EOFError from None
        return line[:-2] if line.endswith(b"\r\n") else line[:-1]

    def ack_now(self) -> None:
        """ACK what was received at once. After `{N+}` the client sends the literal without
        waiting for us; a client with Nagle's algorithm on holds it until our ACK, which the
        kernel would delay (up to 40 ms) hoping to piggyback it on an answer we do not send."""
        sock = self.writer.get_extra_info("socket")
        quickack = getattr(socket, "TCP_QUICKACK", None)   # Linux only
        if sock is None or quickack is None:
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
        except OSError:
            pass

    async def read_command(self) -> bytes | None:
        """One complete command (literals included), or None after answering a bad one."""
        # Some clients (imapclient's SEARCH, STORE...) write a command line and its CRLF in two
        # sends: with Nagle on, the CRLF waits for our ACK of the first part, which the kernel
        # would delay (40 ms) while we, having just answered, look interactive. ACK at once.
        self.ack_now()
        line = await self.read_line()
        buf = bytearray(line)
        total = len(line)
        appending = self.state != NOT_AUTH and _APPEND.match(line) is not None
        refused = None    # LITERAL-: a non-synchronizing literal over 4096 bytes, read and answered BAD
        while True:
            lit = literal_at_end(line)
            if lit is None:
                if refused is not None:
                    await self.send(f"{_guess_tag(bytes(buf))} BAD [TOOBIG] {refused}\r\n".encode())
                    return None
                return bytes(buf)
            size, nonsync = lit
            limit = self.cfg.max_literal if self.state != NOT_AUTH else MAX_LITERAL_BEFORE_LOGIN
            total += size
            if size > limit or total > limit + self.cfg.max_line * 4:
                if nonsync:
                    raise Bye(f"Literal of {size} bytes is too large (limit {limit}).")
                tag = _guess_tag(bytes(buf))
                await self.send(f"{tag} BAD [TOOBIG] Literal of {size} bytes is too large "
                                f"(limit {limit}).\r\n".encode())
                return None
            if appending and not nonsync and size > append_limit(self):
                # APPENDLIMIT (RFC 7889): refused before the client sends the message
                await self.send(f"{_guess_tag(bytes(buf))} NO [TOOBIG] A message of {size} bytes is over "
                                f"the limit ({append_limit(self)}).\r\n".encode())
                return None
            if appending and not nonsync and len(buf) == len(line) and not self._append_target_exists(line):
                # RFC 3502 section 6, example A004: no such mailbox, so no need for the message
                await self.send(f"{_guess_tag(line)} NO [TRYCREATE] Mailbox does not exist.\r\n".encode())
                return None
            if nonsync and size > NONSYNC_LITERAL_MINUS and not self.cfg.literal_plus:
                refused = (f"Non-synchronizing literal of {size} bytes: LITERAL- allows "
                           f"{NONSYNC_LITERAL_MINUS} (send {{{size}}} and wait for the +).")
            if not nonsync:
                await self.send(b"+ OK\r\n")
            elif size:
                self.ack_now()
            try:
                data = await asyncio.wait_for(self.reader.readexactly(size), self.cfg.idle_timeout)
            except asyncio.TimeoutError:
                raise Bye("Disconnected for inactivity.") from None
            except asyncio.IncompleteReadError:
                raise EOFError from None
            buf += b"\r\n" + data
            line = await self.read_line()
            buf += line

    def _append_target_exists(self, line: bytes) -> bool:
        """For `tag APPEND mailbox ... {n}` (the mailbox not itself a literal): whether the mailbox
        exists. True when the store cannot say, or the name does not parse (the command will tell)."""
        exists = getattr(self.storage, "mailbox_exists", None)
        if exists is None:
            return True
        p = Parser(line, 0, self.utf8)
        try:
            p.tag()
            p.sp()
            p.atom()
            p.sp()
            if p.peek() == 123:
                return True
            name = p.mailbox()
            if self.view is not None and self.view.name == name:
                return True
            return bool(exists(name))
        except Exception:    # ParseError, or a store that cannot tell: let APPEND itself answer
            return True

    # -- dispatch ---------------------------------------------------------------------------

    async def handle(self, buf: bytes) -> None:
        p = Parser(buf, 0, self.utf8)
        try:
            tag = p.tag()
        except ParseError:
            await self.send(b"* BAD Missing or invalid tag.\r\n")
            self._count_before_login()
            return
        try:
            p.sp()
            name = p.atom().upper()
        except ParseError:
            await self.send(f"{tag} BAD Missing command name.\r\n".encode())
            self._count_before_login()
            return
        uid = False
        if name == "UID":
            try:
                p.sp()
                name = p.atom().upper()
            except ParseError:
                await self.send(f"{tag} BAD UID needs a command ({', '.join(n for n, c in REGISTRY.items() if c.uid)}).\r\n".encode())
                return
            spec = REGISTRY.get(name)
            if spec is None or not spec.uid:
                await self.send(f"{tag} BAD Unknown UID command {name}.\r\n".encode())
                return
            uid = True
        spec = REGISTRY.get(name)
        if spec is None:
            await self.send(f"{tag} BAD Unknown command {name[:40]}.\r\n".encode())
            self._count_before_login()
            return
        if self.state not in spec.states:
            await self.send(f"{tag} BAD {name} is not valid in the {self.state} state.\r\n".encode())
            self._count_before_login()
            return
        if self.state == NOT_AUTH:
            self._count_before_login()
        try:
            args = spec.parse(p, uid)
            await spec.handler(self, tag, args)
        except ParseError as e:
            await self.send(f"{tag} BAD Error in IMAP command {name}: {e}.\r\n".encode("utf-8", "replace"))
        except searchmod.BadCharset as e:
            await self.send(f'{tag} NO [BADCHARSET ("UTF-8" "US-ASCII")] Unsupported charset {e}.\r\n'
                            .encode("utf-8", "replace"))
        except StorageError as e:
            code = f"[{e.code}] " if e.code else ""
            await self.send(f"{tag} NO {code}{oneline(str(e))}\r\n".encode("utf-8", "replace"))
        except (Bye, Done, ConnectionError, EOFError, asyncio.IncompleteReadError):
            raise
        except Exception as e:  # a bug must not take the other sessions (or this one) down
            if isinstance(e, OSError) and e.errno in OUT_OF_FDS:   # not a bug: no traceback per command
                RESOURCE_LOG.warning("fds", "%s: %s", name, e.strerror)
                await self.send(f"{tag} NO [UNAVAILABLE] The server is short of file descriptors; "
                                f"try again later.\r\n".encode())
                return
            _log().exception("internal error in %s", name)
            await self.send(f"{tag} NO [SERVERBUG] Internal error: {type(e).__name__}.\r\n".encode())

    def _count_before_login(self) -> None:
        if self.state == NOT_AUTH:
            self.commands_before_login += 1
            if self.commands_before_login > MAX_COMMANDS_BEFORE_LOGIN:
                raise Bye("Too many commands before login.")


def _guess_tag(buf: bytes) -> str:
    t = buf.split(b" ", 1)[0]
    try:
        return Parser(t).tag() if t else "*"
    except ParseError:
        return "*"
