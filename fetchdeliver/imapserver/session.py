"""One IMAP connection: framing (lines + literals, bounded), the state machine, and every command.

States: not authenticated -> authenticated -> selected -> logout (RFC 3501 section 3).
The selected mailbox is seen through `View`: the sequence numbers and flags the
client knows. After each command the mailbox is re-read (`Mailbox.sync`) and the
differences go out as untagged EXISTS / EXPUNGE / FETCH FLAGS; EXPUNGE is held
back during FETCH, STORE and SEARCH, where RFC 3501 forbids it.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import ipaddress
import socket

from fetchdeliver import sasl
from fetchdeliver.imapserver import condstore
from fetchdeliver.imapserver import esearch
from fetchdeliver.imapserver import fetch as fetchmod
from fetchdeliver.imapserver import search as searchmod
from fetchdeliver.imapserver import sort_thread
from fetchdeliver.imapserver.protocol import (ParseError, Parser, decode_mailbox, encode_mailbox,
                                              literal_at_end, start_deflate)
from fetchdeliver.storage.base import (SPECIAL_USES, SYSTEM_FLAGS, StorageError, canonical_flag)
from fetchdeliver.netlimits import OUT_OF_FDS, LoginThrottled, LogLimiter

NOT_AUTH, AUTH, SELECTED, LOGOUT = "not authenticated", "authenticated", "selected", "logout"
MAX_COMMANDS_BEFORE_LOGIN = 50
MAX_AUTH_FAILURES = 3
MAX_LITERAL_BEFORE_LOGIN = 8192


def _log():
    import logging

    return logging.getLogger("fetchdeliver.imapserver")


RESOURCE_LOG = LogLimiter(_log())


class Bye(Exception):
    """End the connection after sending an untagged BYE with this text."""


class Done(Exception):
    """LOGOUT: the tagged OK is sent, close quietly."""


class View:
    """The selected mailbox as the client knows it."""

    def __init__(self, mailbox, readonly: bool, name: str | None = None) -> None:
        self.mailbox = mailbox
        # The name the client selected: with mounted stores (imapserver/mounts.py) a backend's
        # own name for the mailbox ("INBOX" of an archive tree) may differ from it.
        self.name = mailbox.name if name is None else name
        self.readonly = readonly
        self.msgs: list = []          # MessageInfo in sequence order
        self.uids: list[int] = []
        self.flags: dict[int, frozenset] = {}
        self.recent: set[int] = set()
        self.keywords: set[str] = set()   # the keywords announced in FLAGS
        self.uidvalidity = mailbox.uidvalidity
        self.synced = None                # the list Mailbox.sync() returned at the last diff

    def flags_of(self, m) -> bytes:
        return flag_list(self.flags.get(m.uid, m.flags), m.uid in self.recent)


_FLAG_LISTS: dict = {}


def flag_list(flags, recent: bool = False) -> bytes:
    """"(\\Seen $Work)": a mailbox has few distinct flag sets, so the answers are kept."""
    key = (flags, recent)
    try:
        got = _FLAG_LISTS.get(key)
    except TypeError:     # a plain set: not hashable, not kept
        return _flag_list(flags, recent)
    if got is None:
        if len(_FLAG_LISTS) > 4096:
            _FLAG_LISTS.clear()
        got = _FLAG_LISTS[key] = _flag_list(flags, recent)
    return got


def _flag_list(flags, recent: bool) -> bytes:
    sys_part = [f for f in SYSTEM_FLAGS if f in flags]
    kws = sorted(f for f in flags if not f.startswith("\\"))
    if recent:
        sys_part.append("\\Recent")
    return ("(" + " ".join(sys_part + kws) + ")").encode("utf-8", "replace")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


class Session:
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
        self.storage = None
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

    # -- output ---------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Queue `data` after what out() queued, and write it all at once (one send per answer)."""
        self._pending.append(data)
        await self.flush()

    def out(self, data: bytes) -> None:
        """Queue untagged output; it leaves with the next send() or flush()."""
        self._pending.append(data)

    async def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self.writer.write(data)
        await self.writer.drain()

    def capabilities(self) -> str:
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UIDPLUS", "MOVE",
                "UNSELECT", "CHILDREN", "SPECIAL-USE", "CREATE-SPECIAL-USE", "CONDSTORE", "QRESYNC",
                "ESEARCH", "SEARCHRES", "SORT", "ESORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES",
                "LIST-STATUS", "STATUS=SIZE"]
        if self.state != NOT_AUTH and not getattr(self, "compressed", False):
            caps.append("COMPRESS=DEFLATE")   # RFC 4978, after login as Dovecot
        if self.state == NOT_AUTH:
            if self.cfg.ssl_context is not None and not self.tls:
                caps.append("STARTTLS")
            caps += ["AUTH=" + m for m in sasl.offered(self.cfg.authenticator, self.login_allowed())]
            if not self.login_allowed():
                caps.append("LOGINDISABLED")
        return " ".join(caps)

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
        line = await self.read_line()
        buf = bytearray(line)
        total = len(line)
        while True:
            lit = literal_at_end(line)
            if lit is None:
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

    # -- dispatch ---------------------------------------------------------------------------

    async def handle(self, buf: bytes) -> None:
        p = Parser(buf)
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
                await self.send(f"{tag} BAD UID needs a command (FETCH, STORE, SEARCH, COPY, MOVE, "
                                f"EXPUNGE).\r\n".encode())
                return
            if name not in ("FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE", "SORT", "THREAD"):
                await self.send(f"{tag} BAD Unknown UID command {name}.\r\n".encode())
                return
            uid = True
        spec = COMMANDS.get(name)
        if spec is None:
            await self.send(f"{tag} BAD Unknown command {name[:40]}.\r\n".encode())
            self._count_before_login()
            return
        method, states = spec
        if self.state not in states:
            await self.send(f"{tag} BAD {name} is not valid in the {self.state} state.\r\n".encode())
            self._count_before_login()
            return
        if self.state == NOT_AUTH:
            self._count_before_login()
        try:
            if uid:
                await method(self, tag, p, uid=True)
            else:
                await method(self, tag, p)
        except ParseError as e:
            await self.send(f"{tag} BAD Error in IMAP command {name}: {e}.\r\n".encode("utf-8", "replace"))
        except searchmod.BadCharset as e:
            await self.send(f'{tag} NO [BADCHARSET ("UTF-8" "US-ASCII")] Unsupported charset {e}.\r\n'
                            .encode("utf-8", "replace"))
        except StorageError as e:
            code = f"[{e.code}] " if e.code else ""
            await self.send(f"{tag} NO {code}{_oneline(str(e))}\r\n".encode("utf-8", "replace"))
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

    # -- any state -------------------------------------------------------------------------------

    async def cmd_capability(self, tag, p):
        p.end()
        await self.send(f"* CAPABILITY {self.capabilities()}\r\n{tag} OK Capability completed.\r\n".encode())

    async def cmd_noop(self, tag, p):
        p.end()
        await self.sync_out()
        await self.send(f"{tag} OK NOOP completed.\r\n".encode())

    async def cmd_logout(self, tag, p):
        p.end()
        self.state = LOGOUT
        await self.send(f"* BYE Logging out.\r\n{tag} OK Logout completed.\r\n".encode())
        raise Done

    async def cmd_id(self, tag, p):
        p.sp()
        if not p.maybe(b"NIL"):
            p.expect(b"(")
            while not p.maybe(b")"):
                p.nstring()
                p.sp()
                p.nstring()
                p.maybe(b" ")
        p.end()
        from fetchdeliver import __version__

        await self.send(f'* ID ("name" "fetchdeliver" "version" "{__version__}")\r\n'
                        f"{tag} OK ID completed.\r\n".encode())

    def enable_condstore(self) -> None:
        """CONDSTORE on (RFC 7162 3.1): the first enabling command in the selected state is told
        the mailbox's HIGHESTMODSEQ."""
        if not self.condstore and self.view is not None:
            hms = condstore.highestmodseq(self.view.mailbox, self.view.msgs)
            self.out(f"* OK [HIGHESTMODSEQ {hms}] Highest.\r\n".encode() if hms is not None else
                     b"* OK [NOMODSEQ] No permanent modsequences.\r\n")
        self.condstore = True

    async def cmd_enable(self, tag, p):
        p.sp()
        enabled = []
        before = {"CONDSTORE": self.condstore, "QRESYNC": self.qresync}
        while True:
            word = p.atom().upper()
            if word in before and not before[word] and word not in enabled:
                enabled.append(word)    # RFC 5161: ENABLED names what this command turned on
                self.qresync |= word == "QRESYNC"
                self.enable_condstore()     # QRESYNC implies CONDSTORE (RFC 7162 3.2.3)
            if p.at_end():
                break
            p.sp()
        await self.send(f"* ENABLED{''.join(' ' + w for w in enabled)}\r\n{tag} OK Enabled.\r\n".encode())

    # -- not authenticated ----------------------------------------------------------------------------

    async def cmd_compress(self, tag, p):
        """COMPRESS DEFLATE (RFC 4978): protocol.start_deflate wraps the connection."""
        p.sp()
        mech = p.atom().upper()
        p.end()
        if mech != "DEFLATE":
            await self.send(f"{tag} BAD Unsupported compression mechanism {mech}.\r\n".encode())
        elif getattr(self, "compressed", False):
            await self.send(f"{tag} NO [COMPRESSIONACTIVE] DEFLATE is active already.\r\n".encode())
        else:
            await self.send(f"{tag} OK DEFLATE active.\r\n".encode())
            self.writer = start_deflate(self.reader, self.writer)
            self.compressed = True

    async def cmd_starttls(self, tag, p):
        p.end()
        if self.cfg.ssl_context is None or self.tls:
            await self.send(f"{tag} BAD STARTTLS is not available here.\r\n".encode())
            return
        if self.reader._buffer:  # bytes sent after STARTTLS before the handshake: an injection attempt
            raise Bye("Data after STARTTLS before the TLS handshake.")
        await self.send(f"{tag} OK Begin TLS negotiation now.\r\n".encode())
        await self.writer.start_tls(self.cfg.ssl_context)
        self.tls = True

    async def cmd_login(self, tag, p):
        p.sp()
        user = p.astring()
        p.sp()
        password = p.astring()
        p.end()
        if not self.login_allowed():
            await self.send(f"{tag} NO [PRIVACYREQUIRED] Plaintext login is disabled on this "
                            f"connection; use STARTTLS or the TLS port.\r\n".encode())
            return
        await self._login(tag, user.decode("utf-8", "replace"), password.decode("utf-8", "replace"))

    async def cmd_authenticate(self, tag, p):
        p.sp()
        mech = p.atom().upper()
        initial = None
        if not p.at_end():
            p.sp()
            initial = p._run(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
        p.end()
        if mech not in sasl.offered(self.cfg.authenticator, True):
            await self.send(f"{tag} NO Unsupported authentication mechanism {mech}.\r\n".encode())
            return
        if mech not in sasl.offered(self.cfg.authenticator, self.login_allowed()):
            await self.send(f"{tag} NO [PRIVACYREQUIRED] Plaintext authentication is disabled on this "
                            f"connection; use STARTTLS or the TLS port.\r\n".encode())
            return

        async def exchange(challenge: bytes) -> bytes | None:
            await self.send(b"+ " + base64.b64encode(challenge) + b"\r\n")
            return sasl.decode_response(await self.read_line())

        async def check(user, verify):
            return await self.server.throttle.attempt(self.peer, user, verify)

        async def login():
            first = None if initial is None else sasl.decode_response(initial)
            if first is None and initial is not None:
                raise sasl.Cancelled()
            return await sasl.authenticate(mech, first, exchange, self.cfg.authenticator, check)

        try:
            await self._login(tag, "", sasl_login=login)
        except sasl.AuthorizationFailed as e:
            await self.send(f"{tag} NO [AUTHORIZATIONFAILED] {e}\r\n".encode())
        except sasl.SaslError as e:
            await self.send(f"{tag} BAD {e}\r\n".encode())

    async def _login(self, tag: str, user: str, password: str = "", sasl_login=None) -> None:
        try:
            if sasl_login is not None:    # AUTHENTICATE: fetchdeliver/sasl.py, under the same throttle
                user, account = await sasl_login()
            else:
                account = await self.server.check_login(self.peer, user, password)  # delays after failures
        except LoginThrottled as e:
            self.auth_failures += 1
            await self.send(f"{tag} NO [UNAVAILABLE] {e}\r\n".encode())
            if self.auth_failures >= MAX_AUTH_FAILURES:
                raise Bye("Too many failed logins.") from None
            return
        except sasl.SaslError:
            raise
        except Exception as e:
            _log().error("authentication backend failed: %s", e)
            await self.send(f"{tag} NO [UNAVAILABLE] Authentication is temporarily unavailable.\r\n".encode())
            return
        if account is None:
            self.auth_failures += 1
            _log().warning("failed login for %r from %s", user, self.peer)
            await self.send(f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n".encode())
            if self.auth_failures >= MAX_AUTH_FAILURES:
                raise Bye("Too many failed logins.")
            return
        try:
            self.storage = self.server.storage_for(account)
        except Exception as e:
            _log().error("no mail store for %s: %s", user, e)
            await self.send(f"{tag} NO [UNAVAILABLE] Mail store unavailable: {_oneline(str(e))}\r\n"
                            .encode("utf-8", "replace"))
            return
        self.account = account
        self.state = AUTH
        await self.send(f"{tag} OK [CAPABILITY {self.capabilities()}] Logged in.\r\n".encode())

    # -- authenticated -----------------------------------------------------------------------------

    async def cmd_select(self, tag, p, readonly=False):
        p.sp()
        name = p.mailbox()
        params = condstore.parse_select_params(p, self.qresync)
        if params.condstore:
            self.condstore = True
        if self.view is not None:     # RFC 7162 3.2.11: servers offering QRESYNC always say so
            self.out(b"* OK [CLOSED] Previous mailbox closed.\r\n")
        self.close_view()
        self.saved = set()
        mbox = self.storage.open(name, readonly=readonly)
        view = View(mbox, readonly or mbox.readonly, name)
        msgs = mbox.sync()
        view.recent = {m.uid for m in msgs if m.recent}
        if not view.readonly and view.recent:
            mbox.take_recent(msgs) if hasattr(mbox, "take_recent") else None
            msgs = mbox.sync()
        view.msgs = list(msgs)
        view.uids = [m.uid for m in msgs]
        view.flags = {m.uid: m.flags for m in msgs}
        view.uidvalidity = mbox.uidvalidity
        self.view = view
        self.state = SELECTED
        view.keywords = set(mbox.keywords()) | {f for m in msgs for f in m.flags if not f.startswith("\\")}
        first_unseen = next((i for i, m in enumerate(msgs, 1) if "\\Seen" not in m.flags), None)
        lines = self.flags_lines(view) + [f"* {len(msgs)} EXISTS", f"* {len(view.recent)} RECENT"]
        if first_unseen:
            lines.append(f"* OK [UNSEEN {first_unseen}] First unseen.")
        lines += [f"* OK [UIDVALIDITY {mbox.uidvalidity}] UIDs valid.",
                  f"* OK [UIDNEXT {mbox.uidnext()}] Predicted next UID."]
        hms = condstore.highestmodseq(mbox, msgs)
        lines.append(f"* OK [HIGHESTMODSEQ {hms}] Highest." if hms is not None else
                     "* OK [NOMODSEQ] No permanent modsequences.")
        self.out(("\r\n".join(lines) + "\r\n").encode("utf-8", "replace"))
        if params.qresync:
            self.out(b"".join(condstore.qresync_select(view, params)))
        await self.send(f"{tag} OK [{'READ-ONLY' if view.readonly else 'READ-WRITE'}] "
                        f"{'Examine' if readonly else 'Select'} completed.\r\n".encode())

    @staticmethod
    def flags_lines(view) -> list[str]:
        """The FLAGS and PERMANENTFLAGS answers for the keywords the client has been told of."""
        flags = " ".join(list(SYSTEM_FLAGS) + sorted(view.keywords))
        perm = "" if view.readonly else flags + (" \\*" if view.mailbox.permanent_keywords else "")
        return [f"* FLAGS ({flags})", f"* OK [PERMANENTFLAGS ({perm})] Flags permitted."]

    async def cmd_examine(self, tag, p):
        await self.cmd_select(tag, p, readonly=True)

    def close_view(self) -> None:
        if self.view is not None:
            self.unwatch()
            self.view.mailbox.close()
            self.view = None
            self.state = AUTH

    async def cmd_create(self, tag, p):
        p.sp()
        name = p.mailbox()
        uses: tuple[str, ...] = ()
        if not p.at_end():
            p.sp()
            p.expect(b"(")
            p.expect(b"USE")
            p.sp()
            flags = p.flag_list()
            p.expect(b")")
            for f in flags:
                if f.lower() not in {u.lower() for u in SPECIAL_USES}:
                    await self.send(f"{tag} NO [USEATTR] Unknown special-use attribute {f}.\r\n".encode())
                    return
            uses = tuple(next(u for u in SPECIAL_USES if u.lower() == f.lower()) for f in flags)
        p.end()
        name = name.rstrip("/")
        if name.upper() == "INBOX":
            await self.send(f"{tag} NO [ALREADYEXISTS] INBOX already exists.\r\n".encode())
            return
        self.storage.create(name, uses)
        await self.send(f"{tag} OK Create completed.\r\n".encode())

    async def cmd_delete(self, tag, p):
        p.sp()
        name = p.mailbox()
        p.end()
        if self.view is not None and self.view.name == name:
            self.close_view()
        self.storage.delete(name)
        await self.send(f"{tag} OK Delete completed.\r\n".encode())

    async def cmd_rename(self, tag, p):
        p.sp()
        old = p.mailbox()
        p.sp()
        new = p.mailbox()
        p.end()
        self.storage.rename(old, new.rstrip("/"))
        await self.send(f"{tag} OK Rename completed.\r\n".encode())

    async def cmd_subscribe(self, tag, p):
        p.sp()
        name = p.mailbox()
        p.end()
        self.storage.subscribe(name)
        await self.send(f"{tag} OK Subscribe completed.\r\n".encode())

    async def cmd_unsubscribe(self, tag, p):
        p.sp()
        name = p.mailbox()
        p.end()
        self.storage.unsubscribe(name)
        await self.send(f"{tag} OK Unsubscribe completed.\r\n".encode())

    async def cmd_list(self, tag, p, lsub=False):
        p.sp()
        select_subscribed = False
        if not lsub and p.peek() == 40:   # LIST-EXTENDED selection options
            p.i += 1
            while not p.maybe(b")"):
                opt = p.atom().upper()
                select_subscribed |= opt == "SUBSCRIBED"
                p.maybe(b" ")
            p.sp()
        ref = decode_mailbox(p.astring())
        p.sp()
        patterns = []
        if not lsub and p.peek() == 40:
            p.i += 1
            while not p.maybe(b")"):
                patterns.append(p.list_mailbox())
                p.maybe(b" ")
        else:
            patterns.append(p.list_mailbox())
        return_subscribed = False
        status_items = None       # LIST-STATUS (RFC 5819): RETURN (STATUS (items))
        if not lsub and not p.at_end():
            p.sp()
            p.expect(b"RETURN")
            p.sp()
            p.expect(b"(")
            while not p.maybe(b")"):
                opt = p.atom().upper()
                return_subscribed |= opt == "SUBSCRIBED"
                if opt == "STATUS":
                    p.sp()
                    status_items = self._status_items(p)
                p.maybe(b" ")
        p.end()
        word = "LSUB" if lsub else "LIST"
        if len(patterns) == 1 and patterns[0] == b"":
            await self.send(f'* {word} (\\Noselect) "/" ""\r\n{tag} OK {word} completed.\r\n'.encode())
            return
        entries = self.storage.list()
        subs = set(self.storage.subscriptions()) if (lsub or select_subscribed or return_subscribed) else set()
        regexes = [_pattern(ref, decode_mailbox(pat)) for pat in patterns]
        out = []
        for e in entries:
            if not any(r.match(e.name) for r in regexes):
                continue
            attrs = set(e.attributes)
            if lsub or select_subscribed:
                if e.name not in subs:
                    continue
                attrs.discard("\\HasChildren")
                attrs.discard("\\HasNoChildren")
            if e.name in subs and (select_subscribed or return_subscribed):
                attrs.add("\\Subscribed")
            attr_text = " ".join(sorted(attrs, key=_attr_order))
            out.append(f"* {word} ({attr_text}) \"/\" ".encode() + encode_mailbox(e.name) + b"\r\n")
            if status_items and "\\Noselect" not in attrs and "\\NonExistent" not in attrs:
                try:
                    out.append(self._status_line(e.name, status_items))
                except StorageError:
                    pass     # gone meanwhile, or not readable: RFC 5819 lets the STATUS be left out
        out.append(f"{tag} OK {word} completed.\r\n".encode())
        await self.send(b"".join(out))

    async def cmd_lsub(self, tag, p):
        await self.cmd_list(tag, p, lsub=True)

    async def cmd_namespace(self, tag, p):
        p.end()
        await self.send(f'* NAMESPACE (("" "/")) NIL NIL\r\n{tag} OK Namespace completed.\r\n'.encode())

    async def cmd_status(self, tag, p):
        p.sp()
        name = p.mailbox()
        p.sp()
        items = self._status_items(p)
        p.end()
        await self.send(self._status_line(name, items) + f"{tag} OK Status completed.\r\n".encode())

    @staticmethod
    def _status_items(p) -> list[str]:
        p.expect(b"(")
        items = []
        while not p.maybe(b")"):
            items.append(p.atom().upper())
            p.maybe(b" ")
        bad = [i for i in items if i not in ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE",
                                         "HIGHESTMODSEQ")]
        if bad or not items:
            raise ParseError(f"unknown STATUS item {bad[0] if bad else '(none given)'}")
        return items

    def _status_line(self, name: str, items: list[str]) -> bytes:
        """`* STATUS name (...)` (STATUS, and LIST-STATUS for each listed mailbox)."""
        if self.view is not None and self.view.name == name:
            mbox, own = self.view.mailbox, False
        else:
            mbox, own = self.storage.open(name, readonly=True), True
        try:
            msgs = mbox.sync()
            vals = []
            for i in items:
                if i == "MESSAGES":
                    v = len(msgs)
                elif i == "RECENT":
                    v = sum(1 for m in msgs if m.recent)
                elif i == "UIDNEXT":
                    v = mbox.uidnext()
                elif i == "UIDVALIDITY":
                    v = mbox.uidvalidity
                elif i == "UNSEEN":
                    v = sum(1 for m in msgs if "\\Seen" not in m.flags)
                elif i == "HIGHESTMODSEQ":
                    v = condstore.highestmodseq(mbox, msgs) or 0
                else:
                    v = sum(mbox.size(m) for m in msgs)
                vals.append(f"{i} {v}")
        finally:
            if own:
                mbox.close()
        return b"* STATUS " + encode_mailbox(name) + f" ({' '.join(vals)})\r\n".encode()

    async def cmd_append(self, tag, p):
        p.sp()
        name = p.mailbox()
        p.sp()
        flags: list[str] = []
        date = None
        if p.peek() == 40:
            flags = [canonical_flag(f) for f in p.flag_list()]
            p.sp()
        if p.peek() == 34:
            date = p.date_time()
            p.sp()
        data = p.literal()
        p.end()
        if any(f.lower() == "\\recent" or f == "\\*" for f in flags):
            raise ParseError("\\Recent and \\* cannot be set by APPEND")
        if self.view is not None and self.view.name == name:
            mbox, own = self.view.mailbox, False
        else:
            try:
                mbox, own = self.storage.open(name), True
            except StorageError as e:
                if e.code == "NONEXISTENT":
                    e.code = "TRYCREATE"
                raise
        try:
            write = getattr(mbox, "write_message", None)
            if write is not None and getattr(mbox, "adopt", None) is not None:
                # The file's write and fsyncs run in a worker thread: other sessions go on meanwhile.
                current = mbox.own_change()
                path = await self.loop.run_in_executor(None, write, data, frozenset(flags), date)
                uid = mbox.adopt(path, current)
            else:
                uid = mbox.append(data, frozenset(flags), date)
            uidvalidity = mbox.uidvalidity
        finally:
            if own:
                mbox.close()
        await self.sync_out()
        await self.send(f"{tag} OK [APPENDUID {uidvalidity} {uid}] Append completed.\r\n".encode())

    async def cmd_idle(self, tag, p):
        p.end()
        # The folder is watched only while a client idles: outside IDLE every command re-reads it,
        # and file events on a busy folder (a STORE renames every file) would cost the session time.
        # Watch first, then read: a change in between is not missed.
        if self.view is not None:
            self.watch(self.view.mailbox)
        try:
            await self._idle(tag)
        finally:
            self.unwatch()

    async def _idle(self, tag):
        self.changed.clear()    # before reading: news from here on wakes the loop below
        await self.sync_out()
        await self.send(b"+ idling\r\n")
        reader_task = asyncio.ensure_future(self.read_line(self.cfg.idle_timeout * 3))
        try:
            while True:
                waiter = asyncio.ensure_future(self.changed.wait())
                done, _ = await asyncio.wait({reader_task, waiter}, timeout=self.cfg.idle_poll,
                                             return_when=asyncio.FIRST_COMPLETED)
                if reader_task in done:
                    waiter.cancel()
                    line = reader_task.result()
                    if line.upper() != b"DONE":
                        await self.send(f"{tag} BAD Expected DONE.\r\n".encode())
                    else:
                        await self.sync_out()
                        await self.send(f"{tag} OK Idle completed.\r\n".encode())
                    return
                waiter.cancel()
                self.changed.clear()
                if self.state == SELECTED:
                    await self.sync_out()
        finally:
            if not reader_task.done():
                reader_task.cancel()

    # -- selected --------------------------------------------------------------------------------------

    async def cmd_check(self, tag, p):
        p.end()
        await self.sync_out()
        await self.send(f"{tag} OK Check completed.\r\n".encode())

    async def cmd_close(self, tag, p):
        p.end()
        v = self.view
        if not v.readonly:
            try:
                doomed = [m for m in v.mailbox.sync() if "\\Deleted" in m.flags]
                v.mailbox.expunge(doomed)
            except StorageError:
                pass
        self.close_view()
        await self.send(f"{tag} OK Close completed.\r\n".encode())

    async def cmd_unselect(self, tag, p):
        p.end()
        self.close_view()
        await self.send(f"{tag} OK Unselect completed.\r\n".encode())

    async def cmd_expunge(self, tag, p, uid=False):
        uidset = None
        if uid:
            p.sp()
            uidset = self.seq_set(p, True)
        p.end()
        v = self.view
        if v.readonly:
            await self.send(f"{tag} NO [READ-ONLY] The mailbox is open read-only.\r\n".encode())
            return
        await self.sync_out(expunge=False)
        star = v.uids[-1] if v.uids else 0
        doomed = [m for m in v.msgs if "\\Deleted" in v.flags.get(m.uid, m.flags)
                  and (uidset is None or searchmod._in_set(m.uid, uidset, star))]
        v.mailbox.expunge(doomed)
        await self.sync_out()
        code = ""
        if self.condstore:     # RFC 7162 3.1.8: the HIGHESTMODSEQ after the expunge
            hms = condstore.highestmodseq(v.mailbox, v.msgs)
            code = f"[HIGHESTMODSEQ {hms}] " if hms is not None else ""
        await self.send(f"{tag} OK {code}Expunge completed.\r\n".encode())

    def resolve(self, ranges, uid: bool) -> list[int]:
        """Indices into view.msgs for a sequence set (by UID when `uid`)."""
        v = self.view
        n = len(v.msgs)
        idx: set[int] = set()
        if uid:
            star = v.uids[-1] if v.uids else 0
            for a, b in ranges:
                a = star if a is None else a
                b = star if b is None else b
                if a > b:
                    a, b = b, a
                lo = bisect.bisect_left(v.uids, a)
                hi = bisect.bisect_right(v.uids, b)
                idx.update(range(lo, hi))
        else:
            for a, b in ranges:
                a = n if a is None else a
                b = n if b is None else b
                if a > b:
                    a, b = b, a
                if b > n or a < 1:
                    raise ParseError(f"invalid message sequence number {b if b > n else a} "
                                     f"(the mailbox has {n} messages)")
                idx.update(range(a - 1, b))
        return sorted(idx)

    def seq_set(self, p, uid: bool) -> list:
        """A sequence set, or `$` (RFC 5182): the saved search result as UIDs or sequence numbers."""
        if not p.maybe(b"$"):
            return p.sequence_set()
        if uid:
            return [(u, u) for u in sorted(self.saved)]
        return [(i, i) for i, m in enumerate(self.view.msgs, 1) if m.uid in self.saved]

    async def cmd_fetch(self, tag, p, uid=False):
        p.sp()
        ranges = self.seq_set(p, uid)
        p.sp()
        items = fetchmod.parse_fetch_atts(p)
        changedsince, want_vanished = condstore.parse_fetch_modifiers(p)
        if want_vanished and not (uid and self.qresync):
            raise ParseError("VANISHED needs UID FETCH and ENABLE QRESYNC first")
        if changedsince is not None or "MODSEQ" in items:
            self.enable_condstore()
        await self.sync_out(expunge=uid)
        v = self.view
        indices = self.resolve(ranges, uid)
        if uid and "UID" not in items:
            items = ["UID"] + items
        if changedsince is not None:
            indices = [i for i in indices if v.msgs[i].modseq > changedsince]
            if want_vanished:
                gone = condstore.vanished(v.mailbox, changedsince, ranges, v.uids[-1] if v.uids else 0)
                if gone:
                    self.out(b"* VANISHED (EARLIER) " + condstore.uid_set(gone).encode() + b"\r\n")
        need_body = fetchmod.needs_body(items)
        mark = fetchmod.sets_seen(items) and not v.readonly
        seen_set = False
        if mark:
            changes = [(v.msgs[i], v.flags[v.msgs[i].uid] | {"\\Seen"}) for i in indices
                       if "\\Seen" not in v.flags[v.msgs[i].uid]]
            if changes:
                v.mailbox.set_flags(changes)
                seen_set = True
                for m, f in changes:
                    v.flags[m.uid] = f
                if "FLAGS" not in items:
                    items = items + ["FLAGS"]
        # RFC 7162 3.1.4: MODSEQ with CHANGEDSINCE, and whenever the FETCH changed flags (\Seen).
        if "MODSEQ" not in items and (changedsince is not None or (self.condstore and seen_set)):
            items = items + ["MODSEQ"]
        mbox = v.mailbox
        cacheable = all(not isinstance(it, fetchmod.Section) and it in fetchmod.CACHEABLE for it in items)
        pending = 0
        buf: list[bytes] = []
        for i in indices:
            m = v.msgs[i]
            parsed = None
            memo = self.memo(mbox, m) if cacheable and need_body else None
            if need_body and not fetchmod.cached_only(items, memo):
                try:
                    parsed = fetchmod.Parsed(mbox.read(m))
                except StorageError:
                    continue  # expunged by someone else: nothing to say about it
            data = fetchmod.render(items, m, mbox, v.flags_of(m), parsed, uid, memo)
            # One write per 256 KB, not per message: a socket send per line costs more than the line.
            buf.append(b"* %d FETCH " % (i + 1) + data + b"\r\n")
            pending += len(data)
            if pending > 256 * 1024:
                self.out(b"".join(buf))
                buf.clear()
                await self.flush()
                pending = 0
        if buf:
            self.out(b"".join(buf))
        if cacheable and need_body:
            mbox.flush_cached()
        await self.send(f"{tag} OK Fetch completed.\r\n".encode())

    def memo(self, mbox, m) -> dict | None:
        """What is kept about a message's content: the store's index, else the server's memory."""
        memo = mbox.cached(m)
        if memo is None:
            memo = self.server.cache.entry(mbox, self.view.uidvalidity, m.uid)
        return memo

    async def cmd_store(self, tag, p, uid=False):
        p.sp()
        ranges = self.seq_set(p, uid)
        p.sp()
        unchangedsince = condstore.parse_store_modifiers(p)
        if unchangedsince is not None:
            self.enable_condstore()
        mode = "="
        if p.peek() in (43, 45):
            mode = chr(p.peek())
            p.i += 1
        p.expect(b"FLAGS")
        silent = p.maybe(b".SILENT")
        p.sp()
        if p.peek() == 40:
            flags = p.flag_list()
        else:
            flags = [p.flag()]
            while not p.at_end():
                p.sp()
                flags.append(p.flag())
        p.end()
        flags = [canonical_flag(f) for f in flags]
        for f in flags:
            if f.startswith("\\") and f not in SYSTEM_FLAGS:
                raise ParseError(f"the flag {f} cannot be stored")
        v = self.view
        if v.readonly:
            await self.send(f"{tag} NO [READ-ONLY] The mailbox is open read-only.\r\n".encode())
            return
        await self.sync_out(expunge=uid)
        indices = self.resolve(ranges, uid)
        fs = frozenset(flags)
        changes = []
        modified = []     # UNCHANGEDSINCE failed: changed by someone since the client's MODSEQ
        if unchangedsince is not None:
            kept = []
            for i in indices:
                if v.msgs[i].modseq > unchangedsince:
                    modified.append(v.msgs[i].uid if uid else i + 1)
                else:
                    kept.append(i)
            indices = kept
        for i in indices:
            m = v.msgs[i]
            cur = v.flags[m.uid]
            if mode == "+":
                new = cur | fs
            elif mode == "-":
                new = frozenset(f for f in cur if f not in fs and (f.startswith("\\") or
                                                                   f.lower() not in {x.lower() for x in fs}))
            else:
                new = fs
            if new != cur:
                changes.append((m, new))
        if changes:
            v.mailbox.set_flags(changes)
            for m, new in changes:
                v.flags[m.uid] = new
            added = {f for f in fs if not f.startswith("\\")} - v.keywords
            if added and mode != "-":
                # A keyword new to this mailbox: tell the client before the FETCH answers (as Dovecot).
                v.keywords |= added
                self.out(("\r\n".join(self.flags_lines(v)) + "\r\n").encode("utf-8", "replace"))
        if not silent:
            lines = []
            for i in indices:
                m = v.msgs[i]
                extra = b" UID %d" % m.uid if uid or self.qresync else b""
                if self.condstore:
                    extra += b" MODSEQ (%d)" % condstore.msg_modseq(m)
                lines.append(b"* %d FETCH (FLAGS " % (i + 1) + v.flags_of(m) + extra + b")\r\n")
            self.out(b"".join(lines))
        elif self.condstore and changes:
            # RFC 7162 3.1.3: even .SILENT tells the new MODSEQ of what changed.
            pos = {m.uid: i for i, m in enumerate(v.msgs, 1)}
            self.out(b"".join(b"* %d FETCH (" % pos[m.uid] + (b"UID %d " % m.uid if uid or self.qresync else b"")
                              + b"MODSEQ (%d))\r\n" % condstore.msg_modseq(m) for m, _ in changes))
        if modified:
            await self.send(f"{tag} OK [MODIFIED {condstore.uid_set(modified)}] Conditional STORE failed.\r\n"
                            .encode())
            return
        await self.send(f"{tag} OK Store completed.\r\n".encode())

    async def cmd_copy(self, tag, p, uid=False, move=False):
        p.sp()
        ranges = self.seq_set(p, uid)
        p.sp()
        dest_name = p.mailbox()
        p.end()
        v = self.view
        if move and v.readonly:
            await self.send(f"{tag} NO [READ-ONLY] The mailbox is open read-only.\r\n".encode())
            return
        await self.sync_out(expunge=uid)
        indices = self.resolve(ranges, uid)
        try:
            dest = self.storage.open(dest_name)
        except StorageError as e:
            if e.code == "NONEXISTENT":
                e.code = "TRYCREATE"
            raise
        try:
            msgs = [v.msgs[i] for i in indices]
            for m in msgs:
                m.flags = v.flags[m.uid]
            new_uids = v.mailbox.copy_to(msgs, dest) if msgs else []
            dest_validity = dest.uidvalidity
        finally:
            dest.close()
        code = ""
        if msgs:
            # Two lists in the same order: source UID i was copied to destination UID i.
            code = (f"[COPYUID {dest_validity} {','.join(str(m.uid) for m in msgs)} "
                    f"{','.join(str(u) for u in new_uids)}] ")
        if move:
            if code:
                self.out(f"* OK {code}Moved.\r\n".encode())
            v.mailbox.expunge(msgs)
            await self.sync_out()
            await self.send(f"{tag} OK Move completed.\r\n".encode())
        else:
            await self.sync_out(expunge=uid)
            await self.send(f"{tag} OK {code}Copy completed.\r\n".encode())

    async def cmd_move(self, tag, p, uid=False):
        await self.cmd_copy(tag, p, uid=uid, move=True)

    async def cmd_search(self, tag, p, uid=False):
        p.sp()
        opts = esearch.parse_return(p)
        tree = searchmod.parse_search(p)
        p.end()
        tree = esearch.resolve_saved(tree, self.saved)
        with_modseq = searchmod.uses_modseq(tree)
        if with_modseq:
            self.enable_condstore()
        await self.sync_out(expunge=uid)
        hits = []
        hit_uids: list[int] = []
        modseqs: list[int] = []
        for m, c in self.matching(tree):
            hits.append(m.uid if uid else c.seq)
            hit_uids.append(m.uid)
            if with_modseq:
                modseqs.append(condstore.msg_modseq(m))
        top = max(modseqs, default=0)
        if opts is not None:
            if "SAVE" in opts:
                self.saved = esearch.saved_uids(opts, hit_uids)
            if with_modseq and hits and not {"ALL", "COUNT"} & set(opts):
                # RFC 4731 3.2 / RFC 7162 3.1.5: with MIN and/or MAX alone, the MODSEQ of those.
                top = max(modseqs[i] for i in {0, len(hits) - 1} if
                          (i == 0 and "MIN" in opts) or (i == len(hits) - 1 and "MAX" in opts))
            await self.send(esearch.response(tag, uid, opts, hits, top if with_modseq else None)
                            + f"{tag} OK Search completed.\r\n".encode())
            return
        tail = f" (MODSEQ {top})" if with_modseq and hits else ""
        await self.send(("* SEARCH" + "".join(f" {h}" for h in hits) + tail + "\r\n"
                         f"{tag} OK Search completed.\r\n").encode())

    def matching(self, tree) -> list:
        """(MessageInfo, search.Candidate) of every message of the view that matches `tree`, in order.
        A search on flags, numbers, sizes and internal dates alone builds no cache entries."""
        v = self.view
        with_memo = searchmod.needs_text(tree)
        mbox = v.mailbox
        max_seq = len(v.msgs)
        max_uid = v.uids[-1] if v.uids else 0
        out = []
        skip: set = set()
        for ok, known in searchmod.prefilter(tree, mbox):
            skip |= known - ok          # known not to match one key of the AND
        for i, m in enumerate(v.msgs, 1):
            if m.uid in skip:
                continue
            c = searchmod.Candidate(i, m.uid, v.flags.get(m.uid, m.flags), m.uid in v.recent,
                                    lambda m=m: mbox.size(m), m.internaldate, lambda m=m: _read_or_empty(mbox, m),
                                    memo=self.memo(mbox, m) if with_memo else None, modseq=m.modseq)
            if searchmod.matches(tree, c, max_seq, max_uid):
                out.append((m, c))
        mbox.flush_cached()
        return out

    async def cmd_sort(self, tag, p, uid=False):
        p.sp()
        opts = esearch.parse_return(p)         # ESORT (RFC 5267)
        criteria = sort_thread.parse_sort_criteria(p)
        p.sp()
        tree = esearch.resolve_saved(searchmod.parse_search(p), self.saved)
        p.end()
        await self.sync_out(expunge=uid)
        found = self.matching(tree)
        ordered = sort_thread.sort(found, criteria, self.content_memo, self.with_headers)
        self.v_flush()
        if opts is not None:
            if "SAVE" in opts:
                self.saved = esearch.saved_uids(opts, [m.uid for m, _ in ordered])
            nums = [m.uid if uid else c.seq for m, c in ordered]
            await self.send(esearch.response(tag, uid, opts, nums, None, ordered=True)
                            + f"{tag} OK Sort completed.\r\n".encode())
            return
        await self.send(("* SORT" + "".join(f" {m.uid if uid else c.seq}" for m, c in ordered) + "\r\n"
                         f"{tag} OK Sort completed.\r\n").encode())

    async def cmd_thread(self, tag, p, uid=False):
        p.sp()
        algorithm = p.atom().upper()
        if algorithm not in sort_thread.THREAD_ALGORITHMS:
            raise ParseError(f"unknown THREAD algorithm {algorithm} "
                             f"({', '.join(sort_thread.THREAD_ALGORITHMS)})")
        p.sp()
        sort_thread.parse_charset(p)
        p.sp()
        tree = esearch.resolve_saved(searchmod.parse_search(p), self.saved)
        p.end()
        await self.sync_out(expunge=uid)
        found = self.matching(tree)
        text = sort_thread.thread(found, algorithm, uid, self.content_memo, self.with_headers)
        self.v_flush()
        await self.send(f"* THREAD{' ' + text if text else ''}\r\n{tag} OK Thread completed.\r\n".encode())

    def with_headers(self, m, c):
        """`c`, or a candidate for `m` that reads header fields through the store's index."""
        if c.memo is not None:
            return c
        mbox = self.view.mailbox
        return searchmod.Candidate(c.seq, c.uid, c.flags, c.recent, c.size_fn, c.internaldate, c.raw_fn,
                                   memo=self.memo(mbox, m), modseq=c.modseq)

    def content_memo(self, m) -> dict | None:
        """The server-wide memo of a message's content-derived facts (sort keys, threading facts)."""
        return self.server.cache.entry(self.view.mailbox, self.view.uidvalidity, m.uid)

    def v_flush(self) -> None:
        """Keep what sorting and threading cached (header fields) in the store's index."""
        self.view.mailbox.flush_cached()

    # -- the change feed ------------------------------------------------------------------------------

    async def sync_out(self, expunge: bool = True) -> None:
        """Re-read the selected mailbox; tell the client what changed."""
        v = self.view
        if v is None:
            return
        try:
            msgs = v.mailbox.sync()
        except StorageError as e:
            if e.code == "NONEXISTENT":
                raise Bye("The selected mailbox was deleted.") from None
            raise
        if v.mailbox.uidvalidity != v.uidvalidity:
            raise Bye("The mailbox's UIDVALIDITY changed; please resynchronize.")
        if msgs is v.synced and len(msgs) == len(v.msgs):
            return    # the store handed back the very list we diffed last time: nothing changed
        v.synced = msgs
        n = len(v.msgs)
        if len(msgs) > n and (n == 0 or (msgs[n - 1] is v.msgs[-1] and
                                         all(a is b for a, b in zip(v.msgs, msgs)))):
            # The known messages are the very objects we hold (the store changes an object only
            # by replacing it): only new messages to announce.
            out: list = []
            self._new_keywords(v, msgs[n:], out)
            await self._announce(v, msgs[n:], out)
            return
        current = {m.uid: m for m in msgs}
        out = []
        if expunge:
            i = len(v.msgs) - 1
            gone = []
            while i >= 0:
                m = v.msgs[i]
                if m.uid not in current:
                    gone.append(m.uid)
                    if not self.qresync:
                        out.append(b"* %d EXPUNGE\r\n" % (i + 1))
                    del v.msgs[i]
                    del v.uids[i]
                    v.flags.pop(m.uid, None)
                    v.recent.discard(m.uid)
                i -= 1
            if gone and self.qresync:     # RFC 7162 3.2.10: VANISHED replaces EXPUNGE
                out.append(b"* VANISHED " + condstore.uid_set(gone).encode() + b"\r\n")
        last = v.uids[-1] if v.uids else 0
        new = [m for m in msgs if m.uid > last]
        changed = []
        for i, m in enumerate(v.msgs):
            cur = current.get(m.uid)
            if cur is None:
                continue
            v.msgs[i] = cur
            if cur.flags != v.flags.get(m.uid):
                v.flags[m.uid] = cur.flags
                changed.append((i, cur))
        self._new_keywords(v, [m for _, m in changed] + new, out)
        for i, cur in changed:
            extra = b""
            if self.qresync:
                extra += b" UID %d" % cur.uid
            if self.condstore:
                extra += b" MODSEQ (%d)" % condstore.msg_modseq(cur)
            out.append(b"* %d FETCH (FLAGS " % (i + 1) + v.flags_of(cur) + extra + b")\r\n")
        await self._announce(v, new, out)

    def _new_keywords(self, v: View, msgs: list, out: list) -> None:
        """A keyword another session or process set is announced in FLAGS before any FETCH uses it."""
        added = {f for m in msgs for f in m.flags if not f.startswith("\\")} - v.keywords
        if added:
            v.keywords |= added
            out.extend(ln.encode("utf-8", "replace") + b"\r\n" for ln in self.flags_lines(v))

    async def _announce(self, v: View, new: list, out: list) -> None:
        if new:
            for m in new:
                v.msgs.append(m)
                v.uids.append(m.uid)
                v.flags[m.uid] = m.flags
                if m.recent:
                    v.recent.add(m.uid)
            out.append(b"* %d EXISTS\r\n" % len(v.msgs))
            out.append(b"* %d RECENT\r\n" % len(v.recent))
            if not v.readonly and any(m.recent for m in new) and hasattr(v.mailbox, "take_recent"):
                v.mailbox.take_recent(new)
        if out:
            await self.send(b"".join(out))

    def watch(self, mbox) -> None:
        self.unwatch()
        loop = self.loop
        changed = self.changed

        def notify():
            loop.call_soon_threadsafe(changed.set)

        self._watch_tokens = self.server.watcher.subscribe(mbox.watch_paths(), notify)

    def unwatch(self) -> None:
        if self._watch_tokens:
            self.server.watcher.unsubscribe(self._watch_tokens)
            self._watch_tokens = []


def _read_or_empty(mbox, m) -> bytes:
    try:
        return mbox.read(m)
    except StorageError:
        return b""


def _oneline(text: str) -> str:
    return " ".join(text.split())


def _guess_tag(buf: bytes) -> str:
    t = buf.split(b" ", 1)[0]
    try:
        return Parser(t).tag() if t else "*"
    except ParseError:
        return "*"


def _attr_order(a: str) -> tuple:
    order = ["\\Noselect", "\\HasChildren", "\\HasNoChildren", "\\Subscribed"]
    return (order.index(a) if a in order else len(order), a)


def _pattern(ref: str, pattern: str):
    import re

    full = ref + pattern if not pattern.startswith("/") or not ref else ref.rstrip("/") + pattern
    out = []
    for ch in full:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    rx = "".join(out)
    if full.upper().startswith("INBOX"):
        rx = "(?i:INBOX)" + "".join(out[5:])
    return re.compile(rx + r"\Z", re.DOTALL)


_ALL = (NOT_AUTH, AUTH, SELECTED)
_AUTHED = (AUTH, SELECTED)
COMMANDS = {
    "CAPABILITY": (Session.cmd_capability, _ALL),
    "NOOP": (Session.cmd_noop, _ALL),
    "LOGOUT": (Session.cmd_logout, _ALL),
    "ID": (Session.cmd_id, _ALL),
    "STARTTLS": (Session.cmd_starttls, (NOT_AUTH,)),
    "COMPRESS": (Session.cmd_compress, _AUTHED),
    "LOGIN": (Session.cmd_login, (NOT_AUTH,)),
    "AUTHENTICATE": (Session.cmd_authenticate, (NOT_AUTH,)),
    "ENABLE": (Session.cmd_enable, _AUTHED),
    "SELECT": (Session.cmd_select, _AUTHED),
    "EXAMINE": (Session.cmd_examine, _AUTHED),
    "CREATE": (Session.cmd_create, _AUTHED),
    "DELETE": (Session.cmd_delete, _AUTHED),
    "RENAME": (Session.cmd_rename, _AUTHED),
    "SUBSCRIBE": (Session.cmd_subscribe, _AUTHED),
    "UNSUBSCRIBE": (Session.cmd_unsubscribe, _AUTHED),
    "LIST": (Session.cmd_list, _AUTHED),
    "LSUB": (Session.cmd_lsub, _AUTHED),
    "NAMESPACE": (Session.cmd_namespace, _AUTHED),
    "STATUS": (Session.cmd_status, _AUTHED),
    "APPEND": (Session.cmd_append, _AUTHED),
    "IDLE": (Session.cmd_idle, _AUTHED),
    "CHECK": (Session.cmd_check, (SELECTED,)),
    "CLOSE": (Session.cmd_close, (SELECTED,)),
    "UNSELECT": (Session.cmd_unselect, (SELECTED,)),
    "EXPUNGE": (Session.cmd_expunge, (SELECTED,)),
    "SEARCH": (Session.cmd_search, (SELECTED,)),
    "SORT": (Session.cmd_sort, (SELECTED,)),
    "THREAD": (Session.cmd_thread, (SELECTED,)),
    "FETCH": (Session.cmd_fetch, (SELECTED,)),
    "STORE": (Session.cmd_store, (SELECTED,)),
    "COPY": (Session.cmd_copy, (SELECTED,)),
    "MOVE": (Session.cmd_move, (SELECTED,)),
}
