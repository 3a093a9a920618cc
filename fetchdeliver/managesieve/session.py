"""One ManageSieve connection (RFC 5804): the state machine and every command.

States: not authenticated -> authenticated (-> not authenticated again after
UNAUTHENTICATE). Replies are `OK`, `NO` or `BYE`, each with an optional
response code in parentheses and a human-readable string; a malformed or
unknown command gets NO and the session goes on (RFC 5804 has no BAD).
"""

from __future__ import annotations

import asyncio
import base64
import os

from fetchdeliver.imapserver.session import is_loopback
from fetchdeliver.managesieve.protocol import (Atom, Number, ProtocolError, Reader, TooLarge, quote,
                                               text)
from fetchdeliver.managesieve.storage import ScriptError, ScriptStore, check_name

NOT_AUTH, AUTH = "not authenticated", "authenticated"
MAX_AUTH_FAILURES = 3
MAX_ERRORS_BEFORE_LOGIN = 3   # as Pigeonhole: the third bad command before login gets BYE
MAX_LITERAL_BEFORE_LOGIN = 8192
MECHANISMS = ("PLAIN", "LOGIN")


def _log():
    import logging

    return logging.getLogger("fetchdeliver.managesieve")


class Bye(Exception):
    """End the connection after a BYE with this text (and optional response code)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class Logout(Exception):
    """LOGOUT: the OK is sent, close quietly."""


def response(kind: str, message: str = "", code: str | None = None) -> bytes:
    out = kind.encode()
    if code:
        out += b" (" + code.encode("utf-8", "replace") + b")"
    if message:
        out += b" " + quote(message)
    return out + b"\r\n"


def _args(tokens: list, spec: str, command: str) -> list:
    """Check the arguments against spec ('s' string, 'n' number, '?' the rest optional)."""
    out: list = []
    optional = False
    i = 0
    for kind in spec:
        if kind == "?":
            optional = True
            continue
        if i >= len(tokens):
            if optional:
                break
            raise ProtocolError(f"{command}: missing argument.")
        t = tokens[i]
        if kind == "s" and not isinstance(t, bytes):
            raise ProtocolError(f"{command}: expected a string (quoted or a literal), got {t!s}.")
        if kind == "n" and not isinstance(t, Number):
            raise ProtocolError(f"{command}: expected a number.")
        out.append(t)
        i += 1
    if i < len(tokens):
        raise ProtocolError(f"{command}: too many arguments.")
    return out


class Session:
    def __init__(self, server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool) -> None:
        self.server = server
        self.cfg = server.config
        self.stream = reader
        self.reader = Reader(reader, max_line=self.cfg.max_line, max_literal=MAX_LITERAL_BEFORE_LOGIN)
        self.writer = writer
        self.tls = tls
        peer = writer.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self.state = NOT_AUTH
        self.account = None
        self.store: ScriptStore | None = None
        self.auth_failures = 0
        self.errors = 0

    # -- output ------------------------------------------------------------------------------
    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def login_allowed(self) -> bool:
        return self.tls or self.cfg.allow_plaintext_auth or is_loopback(self.peer)

    def capability_lines(self) -> bytes:
        from fetchdeliver import __version__

        lines = [quote("IMPLEMENTATION") + b" " + quote(f"fetchdeliver {__version__}"),
                 quote("SIEVE") + b" " + quote(" ".join(self.server.sieve_extensions()))]
        if self.state == AUTH:
            lines.append(quote("MAXREDIRECTS") + b" " + quote(str(self.server.max_redirects())))
        if "enotify" in self.server.sieve_extensions():
            lines.append(quote("NOTIFY") + b" " + quote("mailto"))
        if self.state == NOT_AUTH:
            # No mechanism on a connection where plain-text passwords are refused (IMAP's LOGINDISABLED).
            sasl = " ".join(MECHANISMS) if self.login_allowed() else ""
            lines.append(quote("SASL") + b" " + quote(sasl))
            if self.cfg.ssl_context is not None and not self.tls:
                lines.append(quote("STARTTLS"))
        lines.append(quote("VERSION") + b" " + quote("1.0"))
        lines.append(quote("UNAUTHENTICATE"))
        return b"".join(line + b"\r\n" for line in lines)

    # -- the connection ---------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self.send(self.capability_lines() + response("OK", "fetchdeliver ManageSieve ready."))
            while True:
                try:
                    async with asyncio.timeout(self.cfg.idle_timeout):   # no extra task per command
                        tokens = await self.reader.command()
                except TimeoutError:
                    raise Bye("Disconnected for inactivity.") from None
                except TooLarge as e:
                    raise Bye(str(e)) from None
                except ProtocolError as e:
                    await self.error(f"Error in MANAGESIEVE command: {e}")
                    continue
                if not tokens:
                    await self.error("Empty command.")
                    continue
                await self.handle(tokens)
        except Bye as e:
            try:
                await self.send(response("BYE", str(e), e.code))
            except (ConnectionError, OSError):
                pass
        except Logout:
            pass
        except (ConnectionError, EOFError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                self.writer.close()
            except Exception:
                pass

    async def error(self, message: str, code: str | None = None) -> None:
        _log().debug("%s from %s: %s", self.account.user if self.account else "(not logged in)", self.peer,
                     message)
        if self.state == NOT_AUTH:
            self.errors += 1
        if self.state == NOT_AUTH and self.errors >= MAX_ERRORS_BEFORE_LOGIN:
            raise Bye("Too many invalid commands.")
        await self.send(response("NO", message, code))

    async def handle(self, tokens: list) -> None:
        name = tokens[0]
        if not isinstance(name, Atom):
            await self.error("Error in MANAGESIEVE command: expected a command name.")
            return
        entry = COMMANDS.get(name.upper())
        if entry is None:
            await self.error("Unknown command.")
            return
        func, states = entry
        if self.state not in states:
            if self.state == NOT_AUTH:
                await self.error("Authenticate first.")
            else:
                await self.error("Already authenticated.")
            return
        try:
            await func(self, tokens[1:])
        except ProtocolError as e:
            await self.error(f"Error in MANAGESIEVE command: {e}")
        except ScriptError as e:
            await self.send(response("NO", str(e), e.code))
        except OSError as e:
            _log().error("%s: %s: %s", self.account.user if self.account else "-", name.upper(), e)
            await self.send(response("NO", f"Storage error: {e.strerror or e}.", "TRYLATER"))

    # -- any state -----------------------------------------------------------------------------------
    async def cmd_capability(self, args):
        _args(args, "", "CAPABILITY")
        await self.send(self.capability_lines() + response("OK", "Capability completed."))

    async def cmd_noop(self, args):
        (tag, *_rest) = _args(args, "?s", "NOOP") or [None]
        if tag is None:
            await self.send(response("OK", "NOOP completed."))
        else:
            await self.send(b"OK (TAG " + quote(tag) + b') "Done"\r\n')

    async def cmd_logout(self, args):
        _args(args, "", "LOGOUT")
        await self.send(response("OK", "Logout completed."))
        raise Logout()

    # -- not authenticated -------------------------------------------------------------------------------
    async def cmd_starttls(self, args):
        _args(args, "", "STARTTLS")
        if self.cfg.ssl_context is None or self.tls:
            await self.error("STARTTLS is not available here.")
            return
        if self.stream._buffer:  # bytes after STARTTLS before the handshake: an injection attempt
            raise Bye("Data after STARTTLS before the TLS handshake.")
        await self.send(response("OK", "Begin TLS negotiation now."))
        await self.writer.start_tls(self.cfg.ssl_context)
        self.tls = True
        # RFC 5804 2.2: after the TLS negotiation the server re-issues its capabilities.
        await self.send(self.capability_lines() + response("OK", "TLS negotiation successful."))

    async def _client_response(self) -> bytes | None:
        """One SASL response from the client (a string); None when the client cancelled with "*"."""
        try:
            async with asyncio.timeout(self.cfg.idle_timeout):
                tokens = await self.reader.command()
        except TimeoutError:
            raise Bye("Disconnected for inactivity.") from None
        if len(tokens) != 1 or not isinstance(tokens[0], bytes):
            raise ProtocolError("expected one string as the SASL response.")
        if tokens[0] == b"*":
            return None
        try:
            return base64.b64decode(tokens[0], validate=True)
        except ValueError:
            raise ProtocolError("the SASL response is not valid base64.") from None

    async def cmd_authenticate(self, args):
        mech, *initial = _args(args, "s?s", "AUTHENTICATE")
        mech = text(mech).upper()
        if mech not in MECHANISMS:
            await self.error(f"Unsupported authentication mechanism {mech}.")
            return
        if not self.login_allowed():
            await self.error("Plaintext authentication is disabled on this connection; use STARTTLS "
                             "or the TLS port.", "ENCRYPT-NEEDED")
            return
        try:
            first = base64.b64decode(initial[0], validate=True) if initial else None
        except ValueError:
            raise ProtocolError("the initial SASL response is not valid base64.") from None
        if mech == "PLAIN":
            if first is None:
                await self.send(b'""\r\n')
                first = await self._client_response()
                if first is None:
                    await self.send(response("NO", "Authentication canceled."))
                    return
            parts = first.split(b"\0")
            if len(parts) != 3:
                await self.error("Invalid SASL PLAIN response.")
                return
            authzid, user, password = parts
            if authzid and authzid != user:
                await self.send(response("NO", "Proxy authorization is not supported."))
                return
        else:  # LOGIN
            user, password = first, None
            if user is None:
                await self.send(quote(base64.b64encode(b"Username:")) + b"\r\n")
                user = await self._client_response()
            if user is not None:
                await self.send(quote(base64.b64encode(b"Password:")) + b"\r\n")
                password = await self._client_response()
            if user is None or password is None:
                await self.send(response("NO", "Authentication canceled."))
                return
        await self._login(user.decode("utf-8", "replace"), password.decode("utf-8", "replace"))

    async def _login(self, user: str, password: str) -> None:
        try:
            account = await asyncio.to_thread(self.server.authenticate, user, password)
        except Exception as e:
            _log().error("authentication backend failed: %s", e)
            await self.send(response("NO", "Authentication is temporarily unavailable.", "TRYLATER"))
            return
        if account is None:
            self.auth_failures += 1
            _log().warning("failed login for %r from %s", user, self.peer)
            await asyncio.sleep(self.cfg.login_failure_delay)
            if self.auth_failures >= MAX_AUTH_FAILURES:
                raise Bye("Too many failed logins.")
            await self.send(response("NO", "Authentication failed."))
            return
        try:
            store = self.server.store_for(account)
        except Exception as e:
            _log().error("no Sieve script storage for %s: %s", user, e)
            await self.send(response("NO", f"Script storage unavailable: {e}", "TRYLATER"))
            return
        self.account, self.store, self.state = account, store, AUTH
        self.errors = 0
        self.reader.max_literal = self.cfg.max_literal
        _log().info("%s logged in from %s", user, self.peer)
        await self.send(response("OK", "Logged in."))

    # -- authenticated ---------------------------------------------------------------------------------
    async def cmd_unauthenticate(self, args):
        _args(args, "", "UNAUTHENTICATE")
        self.account, self.store, self.state = None, None, NOT_AUTH
        self.errors = 0
        self.reader.max_literal = MAX_LITERAL_BEFORE_LOGIN
        await self.send(response("OK", "Unauthenticate completed."))

    async def cmd_listscripts(self, args):
        _args(args, "", "LISTSCRIPTS")
        # Small local reads are done in the loop; compiling and fsyncing go to a thread (one hop each).
        names, active = self.store.names(), self.store.active()
        out = b"".join(quote(n) + (b" ACTIVE" if n == active else b"") + b"\r\n" for n in names)
        await self.send(out + response("OK", "Listscripts completed."))

    def _name(self, raw: bytes) -> str:
        name = text(raw)
        check_name(name)
        return name

    def _oversized(self) -> None:
        if self.reader.oversized:
            raise ScriptError(f"Script is too large (max {self.cfg.max_script_size} bytes).", "QUOTA/MAXSIZE")

    async def _compile(self, script: bytes, path: str, display: str) -> str | None:
        """None when `script` compiles, else the errors as `fetchdeliver sieve check` prints them."""
        return await asyncio.to_thread(self.server.compile_errors, script, path, display)

    async def cmd_putscript(self, args):
        raw_name, script = _args(args, "ss", "PUTSCRIPT")
        name = self._name(raw_name)
        self._oversized()
        store = self.store
        store.check_space(name, len(script))

        def check_and_store() -> str | None:
            errors = self.server.compile_errors(script, store.path(name), name)
            if not errors:
                store.put(name, script)
            return errors

        errors = await asyncio.to_thread(check_and_store)
        if errors:
            await self.send(response("NO", errors))
            return
        _log().info("%s: stored script %r (%d bytes)", self.account.user, name, len(script))
        await self.send(response("OK", "Putscript completed."))

    async def cmd_checkscript(self, args):
        (script,) = _args(args, "s", "CHECKSCRIPT")
        self._oversized()
        if self.cfg.max_script_size and len(script) > self.cfg.max_script_size:
            raise ScriptError(f"Script is too large (max {self.cfg.max_script_size} bytes).", "QUOTA/MAXSIZE")
        errors = await self._compile(script, os.path.join(self.store.dir, "script"), "script")
        if errors:
            await self.send(response("NO", errors))
            return
        await self.send(response("OK", "Script is valid."))

    async def cmd_getscript(self, args):
        (raw_name,) = _args(args, "s", "GETSCRIPT")
        data = self.store.get(self._name(raw_name))
        await self.send(b"{%d}\r\n" % len(data) + data + b"\r\n" + response("OK", "Getscript completed."))

    async def cmd_setactive(self, args):
        (raw_name,) = _args(args, "s", "SETACTIVE")
        name = text(raw_name)
        store = self.store

        def check_and_activate() -> str | None:
            if name:
                check_name(name)
                # A script written by another tool may not compile: it never becomes the active one.
                errors = self.server.compile_errors(store.get(name), store.path(name), name)
                if errors:
                    return errors
            store.set_active(name)
            return None

        errors = await asyncio.to_thread(check_and_activate)
        if errors:
            await self.send(response("NO", errors))
            return
        _log().info("%s: active script is now %r", self.account.user, name or None)
        await self.send(response("OK", "Setactive completed."))

    async def cmd_deletescript(self, args):
        (raw_name,) = _args(args, "s", "DELETESCRIPT")
        await asyncio.to_thread(self.store.delete, self._name(raw_name))
        await self.send(response("OK", "Deletescript completed."))

    async def cmd_renamescript(self, args):
        old, new = _args(args, "ss", "RENAMESCRIPT")
        old_name, new_name = self._name(old), self._name(new)
        await asyncio.to_thread(self.store.rename, old_name, new_name)
        await self.send(response("OK", "Renamescript completed."))

    async def cmd_havespace(self, args):
        raw_name, size = _args(args, "sn", "HAVESPACE")
        self.store.check_space(self._name(raw_name), int(size))
        await self.send(response("OK", "Putscript would succeed."))


ANY = (NOT_AUTH, AUTH)
COMMANDS = {
    "CAPABILITY": (Session.cmd_capability, ANY),
    "NOOP": (Session.cmd_noop, ANY),
    "LOGOUT": (Session.cmd_logout, ANY),
    "STARTTLS": (Session.cmd_starttls, (NOT_AUTH,)),
    "AUTHENTICATE": (Session.cmd_authenticate, (NOT_AUTH,)),
    "UNAUTHENTICATE": (Session.cmd_unauthenticate, (AUTH,)),
    "LISTSCRIPTS": (Session.cmd_listscripts, (AUTH,)),
    "PUTSCRIPT": (Session.cmd_putscript, (AUTH,)),
    "CHECKSCRIPT": (Session.cmd_checkscript, (AUTH,)),
    "GETSCRIPT": (Session.cmd_getscript, (AUTH,)),
    "SETACTIVE": (Session.cmd_setactive, (AUTH,)),
    "DELETESCRIPT": (Session.cmd_deletescript, (AUTH,)),
    "RENAMESCRIPT": (Session.cmd_renamescript, (AUTH,)),
    "HAVESPACE": (Session.cmd_havespace, (AUTH,)),
}
