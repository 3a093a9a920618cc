"""One POP3 connection: RFC 1939 with CAPA, RESP-CODES, AUTH-RESP-CODE, PIPELINING, EXPIRE and
LOGIN-DELAY (RFC 2449, 3206), STLS (RFC 2595) and SASL AUTH (RFC 5034) with the mechanisms of
fetchdeliver/sasl.py: PLAIN and LOGIN where plain-text passwords are allowed, SCRAM-SHA-256/SCRAM-SHA-1
where the authenticator has SCRAM credentials, OAUTHBEARER/XOAUTH2 where it validates tokens.

The session works on a snapshot: the mailbox's message list at login. DELE only marks; the marks
are applied at QUIT, through the store (files removed and directories fsynced) before the +OK.
A connection that ends any other way deletes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from typing import Any

from fetchdeliver import sasl as saslmod
from fetchdeliver.errors import FetchdeliverError
from fetchdeliver.imapserver.session import is_loopback
from fetchdeliver.netlimits import LoginThrottled
from fetchdeliver.storage.base import StorageError

log = logging.getLogger("fetchdeliver.pop3server")

AUTHORIZATION, TRANSACTION, DONE = "authorization", "transaction", "done"
MECHANISMS = ("PLAIN", "LOGIN")
MAX_AUTH_FAILURES = 3
MAX_BAD_COMMANDS = 20
MAX_LINE = 8192          # a SASL response line may be long; commands are short (RFC 2449: 255)

_BARE_LF = re.compile(rb"(?<!\r)\n")


class Bye(Exception):
    """End the connection after sending `-ERR message`."""


def crlf(raw: bytes) -> bytes:
    """Every line end as CRLF (bare LF become CRLF; CRLF and bare CR stay as they are)."""
    if b"\r" not in raw:
        return raw.replace(b"\n", b"\r\n")      # LF-only, as MDAs store mail: the fast path
    if raw.count(b"\n") != raw.count(b"\r\n"):
        return _BARE_LF.sub(b"\r\n", raw)
    return raw


def wire_size(raw: bytes) -> int:
    """RFC822.SIZE / the POP3 size: the length with every bare LF counted as CRLF."""
    return len(raw) + raw.count(b"\n") - raw.count(b"\r\n")


def wire_bytes(raw: bytes) -> bytes:
    """The message as RETR sends it: CRLF line ends, a final CRLF, leading dots doubled, then ".".
    The stored bytes are not changed."""
    raw = crlf(raw)
    if raw and not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    if b"\n." in raw:
        raw = raw.replace(b"\n.", b"\n..")
    if raw.startswith(b"."):
        raw = b"." + raw
    return raw + b".\r\n"


def top_bytes(raw: bytes, lines: int) -> bytes:
    """TOP: the header, the blank line and the first `lines` lines of the body, on the wire."""
    raw = crlf(raw)
    if raw.startswith(b"\r\n"):
        head_end = 2
    else:
        at = raw.find(b"\r\n\r\n")
        head_end = len(raw) if at < 0 else at + 4
    head, body = raw[:head_end], raw[head_end:]
    if lines <= 0 or not body:
        return wire_bytes(head)
    pos = 0
    for _ in range(lines):
        nl = body.find(b"\r\n", pos)
        if nl < 0:
            pos = len(body)
            break
        pos = nl + 2
    return wire_bytes(head + body[:pos])


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class Session:
    def __init__(self, server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool) -> None:
        self.server = server
        self.cfg = server.config
        self.reader = reader
        self.writer = writer
        self.tls = tls
        peer = writer.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self.state = AUTHORIZATION
        self.user: str | None = None          # after USER, before PASS
        # Set at login, used in the TRANSACTION state only (its commands are dispatched only then):
        self.account: Any = None              # the logged-in user's account
        self.mailbox: Any = None              # storage.base.Mailbox
        self.lock: Any = None                 # server.MailboxLock
        self.msgs: list = []                  # the snapshot, message n is msgs[n - 1]
        self.deleted: set[int] = set()        # message numbers marked by DELE
        self.retrieved: set[int] = set()      # message numbers sent whole by RETR
        self._sizes: list[int] | None = None
        self._known: dict[int, int] = {}      # {uid: size} the server remembers for this mailbox
        self.saved_uidls: dict[int, str] = {}  # {uid: UIDL} Dovecot saved in dovecot-uidlist (P field)
        self._update_job: asyncio.Future | None = None
        self.auth_failures = 0
        self.bad_commands = 0

    # -- output --------------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        if not self.reader._buffer:   # type: ignore[attr-defined]  # noqa: SLF001 - pipelined commands waiting: answer them in one write
            await self.writer.drain()

    async def ok(self, text: str = "") -> None:
        await self.send(f"+OK{' ' if text else ''}{text}\r\n".encode("utf-8", "replace"))

    async def err(self, text: str, code: str | None = None) -> None:
        code = f"[{code}] " if code else ""
        await self.send(f"-ERR {code}{text}\r\n".encode("utf-8", "replace"))

    def login_allowed(self) -> bool:
        """IMAP's LOGINDISABLED rule: plain-text passwords only over TLS, from loopback, or when allowed."""
        return self.tls or self.cfg.allow_plaintext_auth or is_loopback(self.peer)

    def mechanisms(self, plaintext_ok: bool) -> list[str]:
        """PLAIN and LOGIN where plain-text passwords are allowed, and what fetchdeliver/sasl.py
        offers for the authenticator besides (SCRAM-SHA-256, OAUTHBEARER ...)."""
        extra = [m for m in saslmod.offered(self.cfg.authenticator, plaintext_ok) if m not in MECHANISMS]
        return (list(MECHANISMS) if plaintext_ok else []) + extra

    def capabilities(self) -> list[str]:
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state == AUTHORIZATION:
            if self.cfg.ssl_context is not None and not self.tls:
                caps.append("STLS")
            if self.login_allowed():
                caps.append("USER")
            mechs = self.mechanisms(self.login_allowed())
            if mechs:
                caps.append("SASL " + " ".join(mechs))
        if self.cfg.expire is not None:
            caps.append("EXPIRE " + ("NEVER" if self.cfg.expire == "never" else str(self.cfg.expire)))
        if self.cfg.login_delay:
            caps.append(f"LOGIN-DELAY {int(self.cfg.login_delay)}")
        caps.append("IMPLEMENTATION fetchdeliver")
        return caps

    # -- the connection ----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self.ok("fetchdeliver POP3 ready.")
            while self.state != DONE:
                line = await self.read_line()
                await self.handle(line)
        except Bye as e:
            try:
                await self.err(str(e))
            except (ConnectionError, RuntimeError):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, EOFError):
            pass   # a dropped connection: nothing is deleted
        finally:
            self.release()
            try:
                self.writer.close()
            except Exception:
                pass

    def release(self) -> None:
        job = self._update_job
        if job is not None and not job.done():
            # QUIT's changes are still being written (the session was cancelled meanwhile): close
            # the mailbox and give the lock back when they are done, not under them.
            job.add_done_callback(lambda _f: self.release())
            return
        if self.mailbox is not None:
            try:
                self.server.keep_mailbox(self.mailbox)
            except Exception:  # noqa: BLE001 - closing must not hide the session's own outcome
                log.exception("closing the mailbox of %s", self.account and self.account.user)
            self.mailbox = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    async def read_line(self) -> bytes:
        try:
            line = await asyncio.wait_for(self.reader.readuntil(b"\n"), self.cfg.idle_timeout)
        except asyncio.TimeoutError:
            raise Bye("Disconnected for inactivity.") from None
        except asyncio.LimitOverrunError:
            raise Bye("Line too long.") from None
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise EOFError from None
            raise EOFError from None
        return line[:-2] if line.endswith(b"\r\n") else line[:-1]

    async def handle(self, line: bytes) -> None:
        name, _, rest = line.partition(b" ")
        cmd = name.decode("ascii", "replace").upper()
        entry = COMMANDS.get(cmd)
        if entry is None or self.state not in entry[1]:
            self.bad_commands += 1
            if self.bad_commands >= MAX_BAD_COMMANDS:
                raise Bye("Too many invalid commands.")
            if entry is None:
                await self.err("Unknown command." if cmd else "Empty command.")
            else:
                await self.err("Not allowed in this state." if self.state == TRANSACTION
                               else "Log in first (USER and PASS, or AUTH).")
            return
        await entry[0](self, rest)

    # -- any state --------------------------------------------------------------------------------

    async def cmd_capa(self, args: bytes) -> None:
        await self.send(("+OK Capability list follows\r\n" + "".join(c + "\r\n" for c in self.capabilities())
                         + ".\r\n").encode())

    async def cmd_quit(self, args: bytes) -> None:
        if self.state == TRANSACTION:
            await self.update()
        else:
            await self.ok("Logging out.")
        self.state = DONE

    async def cmd_noop(self, args: bytes) -> None:
        await self.ok()

    # -- authorization ----------------------------------------------------------------------------

    async def cmd_stls(self, args: bytes) -> None:
        if self.cfg.ssl_context is None or self.tls:
            await self.err("STLS is not available here." if not self.tls else "TLS is already active.")
            return
        if self.user is not None:
            await self.err("STLS is not allowed after USER.")
            return
        if self.reader._buffer:  # type: ignore[attr-defined]  # noqa: SLF001 - commands sent before the handshake: an injection attempt
            raise Bye("Data after STLS before the TLS handshake.")
        await self.ok("Begin TLS negotiation now.")
        await self.writer.start_tls(self.cfg.ssl_context)
        self.tls = True

    async def _plaintext_refused(self) -> bool:
        if self.login_allowed():
            return False
        await self.err("Plaintext authentication disallowed on non-secure (SSL/TLS) connections; "
                       "use STLS or the TLS port.", "AUTH")
        return True

    async def cmd_user(self, args: bytes) -> None:
        if await self._plaintext_refused():
            return
        if not args.strip():
            await self.err("USER needs a user name.")
            return
        self.user = args.decode("utf-8", "replace")
        await self.ok()

    async def cmd_pass(self, args: bytes) -> None:
        if await self._plaintext_refused():
            return
        if self.user is None:
            await self.err("Give USER first.")
            return
        user, self.user = self.user, None
        await self.login(user, args.decode("utf-8", "replace"))

    async def cmd_auth(self, args: bytes) -> None:
        parts = args.split()
        if not parts:
            # The pre-RFC 5034 form (RFC 1734 clients such as fetchmail probe with it): the list.
            mechs = self.mechanisms(self.login_allowed())
            await self.send(("+OK\r\n" + "".join(m + "\r\n" for m in mechs) + ".\r\n").encode())
            return
        mech = parts[0].decode("ascii", "replace").upper()
        if mech not in self.mechanisms(True):
            await self.err(f"Unsupported authentication mechanism {mech}.")
            return
        if mech not in self.mechanisms(self.login_allowed()) and await self._plaintext_refused():
            return
        initial = None
        if len(parts) > 1:
            try:   # "=" is an empty initial response (RFC 5034 4)
                initial = saslmod.decode_response(parts[1])
            except saslmod.SaslError:
                await self.err(f"Invalid SASL {mech} response.")
                return
            if initial is None:
                await self.err("Authentication canceled.")
                return

        async def exchange(challenge: bytes) -> bytes | None:
            await self.send(b"+ " + _b64(challenge) + b"\r\n")
            return saslmod.decode_response(await self.read_line())

        async def check(user, verify):   # the same throttle as USER/PASS (netlimits)
            return await self.server.throttle.attempt(self.peer, user, verify)

        # Without an authenticator the server's own authenticate() answers (None: nobody logs in).
        backend = self.cfg.authenticator if self.cfg.authenticator is not None else self.server
        try:
            await self.login("", "", lambda: saslmod.authenticate(mech, initial, exchange, backend, check))
        except saslmod.Cancelled:
            await self.err("Authentication canceled.")
        except saslmod.AuthorizationFailed as e:
            await self.err(str(e), "AUTH")
        except saslmod.SaslError:
            await self.err(f"Invalid SASL {mech} response.")

    async def login(self, user: str, password: str, sasl_login=None) -> None:
        try:
            if sasl_login is not None:
                user, account = await sasl_login()
            else:
                # Failed logins are answered late, longer after each (per address and user, netlimits).
                account = await self.server.check_login(self.peer, user, password)
        except LoginThrottled as e:
            self.auth_failures += 1
            await self.err(str(e), "SYS/TEMP")
            if self.auth_failures >= MAX_AUTH_FAILURES:
                raise Bye("Too many failed logins.") from None
            return
        except saslmod.SaslError:
            raise
        except Exception as e:  # noqa: BLE001 - the backend's failure is the server's, not the user's
            log.error("authentication backend failed: %s", e)
            await self.err("Authentication is temporarily unavailable.", "SYS/TEMP")
            return
        if account is None:
            self.auth_failures += 1
            log.warning("failed POP3 login for %r from %s", user, self.peer)
            await self.err("Authentication failed.", "AUTH")
            if self.auth_failures >= MAX_AUTH_FAILURES:
                raise Bye("Too many failed logins.")
            return
        wait = self.server.login_delay_left(account.user)
        if wait > 0:
            await self.err(f"Logins for {account.user} are allowed every {int(self.cfg.login_delay)} seconds; "
                           f"try again in {int(wait) + 1}.", "LOGIN-DELAY")
            return
        try:
            opened = await asyncio.to_thread(self.server.open_mailbox, account)
        except InUse as e:
            await self.err(str(e), "IN-USE")
            return
        except Exception as e:  # noqa: BLE001 - a store that cannot be opened: try again later
            log.error("no mailbox for %s: %s", account.user, e)
            await self.err(f"Mailbox unavailable: {_oneline(str(e))}", "SYS/TEMP")
            return
        self.mailbox, self.lock, self.msgs, self.saved_uidls = opened
        self._known = self.server.sizes.table(self.lock.key, self.mailbox.uidvalidity)
        self.account = account
        self.server.logged_in(account.user)
        self.state = TRANSACTION
        log.info("pop3 login %s from %s: %d messages", account.user, self.peer, len(self.msgs))
        await self.ok("Logged in.")

    # -- transaction ------------------------------------------------------------------------------

    def sizes(self) -> list[int]:
        """Every message's size (STAT, LIST): from the store when it knows them, else remembered."""
        if self._sizes is None:
            known, size = self._known, self.mailbox.size
            out = []
            for m in self.msgs:
                s = known.get(m.uid)
                if s is None:
                    s = known[m.uid] = size(m)
                out.append(s)
            self._sizes = out
        return self._sizes

    def size_of(self, n: int) -> int | None:
        """Message n's size if known without reading it."""
        if self._sizes is not None:
            return self._sizes[n - 1]
        return self._known.get(self.msgs[n - 1].uid)

    def _number(self, arg: bytes) -> int | None:
        try:
            n = int(arg)
        except ValueError:
            return None
        return n if 1 <= n <= len(self.msgs) and n not in self.deleted and str(n) == arg.decode() else None

    async def _message_arg(self, args: bytes, want: int = 1) -> list[bytes] | None:
        parts = args.split()
        if len(parts) != want:
            await self.err("Wrong number of arguments.")
            return None
        if self._number(parts[0]) is None:
            await self.err("Message is deleted." if parts[0].isdigit() and int(parts[0]) in self.deleted
                           else "There is no such message.")
            return None
        return parts

    async def cmd_stat(self, args: bytes) -> None:
        sizes = self.sizes()
        live = [s for i, s in enumerate(sizes, 1) if i not in self.deleted]
        await self.ok(f"{len(live)} {sum(live)}")

    async def cmd_list(self, args: bytes) -> None:
        sizes = self.sizes()
        if args.strip():
            parts = await self._message_arg(args)
            if parts is not None:
                n = int(parts[0])
                await self.ok(f"{n} {sizes[n - 1]}")
            return
        deleted = self.deleted
        lines = [f"{i} {s}\r\n" for i, s in enumerate(sizes, 1) if i not in deleted]
        await self.send((f"+OK {len(lines)} messages:\r\n" + "".join(lines) + ".\r\n").encode())

    def uidl_of(self):
        """A function msg -> UIDL: a saved one (Dovecot's P field) first, else `uidl_format`."""
        fmt, v, saved = self.server.uidl, self.mailbox.uidvalidity, self.saved_uidls
        if not saved:
            return lambda m: fmt(m, v)
        return lambda m: saved.get(m.uid) or fmt(m, v)

    async def cmd_uidl(self, args: bytes) -> None:
        uidl = self.uidl_of()
        if args.strip():
            parts = await self._message_arg(args)
            if parts is not None:
                n = int(parts[0])
                await self.ok(f"{n} {uidl(self.msgs[n - 1])}")
            return
        deleted = self.deleted
        lines = [f"{i} {uidl(m)}\r\n" for i, m in enumerate(self.msgs, 1) if i not in deleted]
        await self.send(("+OK\r\n" + "".join(lines) + ".\r\n").encode("utf-8", "replace"))

    async def _read(self, n: int) -> bytes | None:
        m = self.msgs[n - 1]
        try:
            size = self.size_of(n)
            # Read in a thread only what could hold the loop up; small and unknown ones at once.
            raw = await asyncio.to_thread(self.mailbox.read, m) if size is not None and size > 256 * 1024 \
                else self.mailbox.read(m)
            self._known.setdefault(m.uid, wire_size(raw))
            return raw
        except Exception as e:  # noqa: BLE001 - an I/O error, a store gone away: worth a later retry
            if isinstance(e, StorageError) and e.code == "EXPUNGEISSUED":   # by an IMAP client meanwhile
                await self.err(f"Message {n} was deleted by another session.")
                return None
            log.warning("%s: cannot read message %d: %s", self.account.user, n, e)
            await self.err(f"Cannot read message {n}: {_oneline(str(e))}", "SYS/TEMP")
            return None

    async def cmd_retr(self, args: bytes) -> None:
        parts = await self._message_arg(args)
        if parts is None:
            return
        n = int(parts[0])
        raw = await self._read(n)
        if raw is None:
            return
        self.retrieved.add(n)
        await self.send(f"+OK {self.size_of(n)} octets\r\n".encode() + wire_bytes(raw))

    async def cmd_top(self, args: bytes) -> None:
        parts = await self._message_arg(args, 2)
        if parts is None:
            return
        if not parts[1].isdigit():
            await self.err("TOP needs a message number and a non-negative number of lines.")
            return
        n = int(parts[0])
        raw = await self._read(n)
        if raw is None:
            return
        await self.send(b"+OK\r\n" + top_bytes(raw, int(parts[1])))

    async def cmd_dele(self, args: bytes) -> None:
        parts = await self._message_arg(args)
        if parts is None:
            return
        n = int(parts[0])
        self.deleted.add(n)
        await self.ok(f"Message {n} deleted.")

    async def cmd_rset(self, args: bytes) -> None:
        self.deleted.clear()
        await self.ok(f"{len(self.msgs)} messages.")

    async def update(self) -> None:
        """QUIT in TRANSACTION (RFC 1939's UPDATE state): expunge what was marked, durably, then +OK."""
        expire = self.cfg.expire
        gone = set(self.deleted)
        if expire not in (None, "never"):
            horizon = time.time() - expire * 86400
            gone |= {n for n in self.retrieved if expire == 0 or self.msgs[n - 1].internaldate <= horizon}
        doomed = [self.msgs[n - 1] for n in sorted(gone)]
        seen = []
        if self.cfg.mark_seen and not self.mailbox.readonly:
            seen = [self.msgs[n - 1].uid for n in sorted(self.retrieved - gone)]
        # In a thread the session does not wait for when it is cancelled (server stopping): the
        # mailbox is closed and the lock released only once the changes are done (see release()).
        expunge_error = seen_error = None
        if doomed or seen:
            self._update_job = asyncio.ensure_future(asyncio.to_thread(apply_quit, self.mailbox, doomed, seen))
            expunge_error, seen_error = await asyncio.shield(self._update_job)
        if expunge_error is not None:   # RFC 1939: -ERR when the deletions could not be made
            log.error("%s: QUIT could not delete %d messages: %s", self.account.user, len(doomed),
                      expunge_error)
            await self.err(f"Messages not deleted: {_oneline(str(expunge_error))}", "SYS/TEMP")
            return
        if seen_error is not None:      # \Seen is a courtesy; the deletions are done
            log.warning("%s: could not mark %d retrieved messages \\Seen: %s", self.account.user,
                        len(seen), seen_error)
        if doomed:
            log.info("pop3 %s: %d messages deleted at QUIT", self.account.user, len(doomed))
        left = len(self.msgs) - len(doomed)
        await self.ok(f"Logging out, {left} message{'' if left == 1 else 's'} left.")


def apply_quit(mailbox, doomed: list, seen: list[int]) -> tuple[Exception | None, Exception | None]:
    """The UPDATE state's work (in a thread): expunge `doomed` (durable on return), then add \\Seen
    to the UIDs in `seen`; returns (expunge error, \\Seen error)."""
    try:
        if doomed:
            mailbox.expunge(doomed)
            mailbox.make_expunges_durable()   # RFC 1939's UPDATE state: done before the +OK
    except Exception as e:  # noqa: BLE001 - reported to the client as -ERR [SYS/TEMP]
        return e, None
    try:
        if seen:
            mark_seen(mailbox, seen)
    except Exception as e:  # noqa: BLE001 - logged; the deletions are done
        return None, e
    return None, None


def mark_seen(mailbox, uids: list[int]) -> None:
    """Add \\Seen to these messages, keeping the flags they have now (an IMAP client may have
    changed them during the POP3 session: the snapshot's flags are not written back)."""
    wanted = set(uids)
    now = [m for m in mailbox.sync() if m.uid in wanted and "\\Seen" not in m.flags]
    if now:
        mailbox.set_flags([(m, m.flags | {"\\Seen"}) for m in now])


class InUse(FetchdeliverError):
    """Another POP3 session has this mailbox."""


def _oneline(text: str) -> str:
    return " ".join(text.split())[:300]


A = (AUTHORIZATION,)
T = (TRANSACTION,)
ANY = (AUTHORIZATION, TRANSACTION)

COMMANDS = {
    "CAPA": (Session.cmd_capa, ANY),
    "QUIT": (Session.cmd_quit, ANY),
    "NOOP": (Session.cmd_noop, T),
    "STLS": (Session.cmd_stls, A),
    "USER": (Session.cmd_user, A),
    "PASS": (Session.cmd_pass, A),
    "AUTH": (Session.cmd_auth, A),
    "STAT": (Session.cmd_stat, T),
    "LIST": (Session.cmd_list, T),
    "UIDL": (Session.cmd_uidl, T),
    "RETR": (Session.cmd_retr, T),
    "TOP": (Session.cmd_top, T),
    "DELE": (Session.cmd_dele, T),
    "RSET": (Session.cmd_rset, T),
}
