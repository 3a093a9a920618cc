"""Commands of the not-authenticated state: STARTTLS (RFC 3501 6.2.1), LOGIN, AUTHENTICATE (SASL,
with SASL-IR, RFC 4959). The settings decide what CAPABILITY says here: STARTTLS when a certificate
is configured and the connection is plain, the AUTH= mechanisms, LOGINDISABLED where plaintext
logins are refused."""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fetchdeliver import sasl
from fetchdeliver.imapserver.commands.registry import AUTH, NOT_AUTH, Bye, NoArgs, command, no_args
from fetchdeliver.imapserver.protocol import Parser, oneline
from fetchdeliver.netlimits import LoginThrottled

if TYPE_CHECKING:
    from fetchdeliver.imapserver.session import Session

MAX_AUTH_FAILURES = 3
_SASL_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


def _log() -> logging.Logger:
    return logging.getLogger("fetchdeliver.imapserver")


def _starttls_capability(s: Session) -> list[str]:
    return ["STARTTLS"] if s.state == NOT_AUTH and s.cfg.ssl_context is not None and not s.tls else []


@command("STARTTLS", (NOT_AUTH,), parse=no_args, dynamic=_starttls_capability)
async def starttls(s: Session, tag: str, args: NoArgs) -> None:
    if s.cfg.ssl_context is None or s.tls:
        await s.send(f"{tag} BAD STARTTLS is not available here.\r\n".encode())
        return
    if s.reader._buffer:  # type: ignore[attr-defined]  # bytes before the handshake: an injection attempt
        raise Bye("Data after STARTTLS before the TLS handshake.")
    await s.send(f"{tag} OK Begin TLS negotiation now.\r\n".encode())
    await s.writer.start_tls(s.cfg.ssl_context)
    s.tls = True


@dataclass(frozen=True)
class LoginArgs:
    user: bytes
    password: bytes


def parse_login(p: Parser, uid: bool = False) -> LoginArgs:
    p.sp()
    user = p.astring()
    p.sp()
    password = p.astring()
    p.end()
    return LoginArgs(user, password)


def _logindisabled_capability(s: Session) -> list[str]:
    return ["LOGINDISABLED"] if s.state == NOT_AUTH and not s.login_allowed() else []


@command("LOGIN", (NOT_AUTH,), parse=parse_login, dynamic=_logindisabled_capability)
async def login(s: Session, tag: str, args: LoginArgs) -> None:
    if not s.login_allowed():
        await s.send(f"{tag} NO [PRIVACYREQUIRED] Plaintext login is disabled on this "
                     f"connection; use STARTTLS or the TLS port.\r\n".encode())
        return
    await complete_login(s, tag, args.user.decode("utf-8", "replace"), args.password.decode("utf-8", "replace"))


@dataclass(frozen=True)
class AuthenticateArgs:
    mechanism: str
    initial: bytes | None     # SASL-IR: the initial response as sent (base64 or "="), or None


def parse_authenticate(p: Parser, uid: bool = False) -> AuthenticateArgs:
    p.sp()
    mech = p.atom().upper()
    initial = None
    if not p.at_end():
        p.sp()
        initial = p._run(_SASL_CHARS)
    p.end()
    return AuthenticateArgs(mech, initial)


def _auth_capabilities(s: Session) -> list[str]:
    if s.state != NOT_AUTH:
        return []
    return ["AUTH=" + m for m in sasl.offered(s.cfg.authenticator, s.login_allowed())]


@command("AUTHENTICATE", (NOT_AUTH,), parse=parse_authenticate, capabilities=("SASL-IR",),
         dynamic=_auth_capabilities)
async def authenticate(s: Session, tag: str, args: AuthenticateArgs) -> None:
    mech, initial = args.mechanism, args.initial
    if mech not in sasl.offered(s.cfg.authenticator, True):
        await s.send(f"{tag} NO Unsupported authentication mechanism {mech}.\r\n".encode())
        return
    if mech not in sasl.offered(s.cfg.authenticator, s.login_allowed()):
        await s.send(f"{tag} NO [PRIVACYREQUIRED] Plaintext authentication is disabled on this "
                     f"connection; use STARTTLS or the TLS port.\r\n".encode())
        return

    async def exchange(challenge: bytes) -> bytes | None:
        await s.send(b"+ " + base64.b64encode(challenge) + b"\r\n")
        return sasl.decode_response(await s.read_line())

    async def check(user, verify):
        return await s.server.throttle.attempt(s.peer, user, verify)

    async def sasl_login():
        first = None if initial is None else sasl.decode_response(initial)
        if first is None and initial is not None:
            raise sasl.Cancelled()
        return await sasl.authenticate(mech, first, exchange, s.cfg.authenticator, check)

    try:
        await complete_login(s, tag, "", sasl_login=sasl_login)
    except sasl.AuthorizationFailed as e:
        await s.send(f"{tag} NO [AUTHORIZATIONFAILED] {e}\r\n".encode())
    except sasl.SaslError as e:
        await s.send(f"{tag} BAD {e}\r\n".encode())


async def complete_login(s: Session, tag: str, user: str, password: str = "", sasl_login=None) -> None:
    """Check the login (throttled), open the account's store, and enter the authenticated state."""
    try:
        if sasl_login is not None:    # AUTHENTICATE: fetchdeliver/sasl.py, under the same throttle
            user, account = await sasl_login()
        else:
            account = await s.server.check_login(s.peer, user, password)  # delays after failures
    except LoginThrottled as e:
        s.auth_failures += 1
        await s.send(f"{tag} NO [UNAVAILABLE] {e}\r\n".encode())
        if s.auth_failures >= MAX_AUTH_FAILURES:
            raise Bye("Too many failed logins.") from None
        return
    except sasl.SaslError:
        raise
    except Exception as e:
        _log().error("authentication backend failed: %s", e)
        await s.send(f"{tag} NO [UNAVAILABLE] Authentication is temporarily unavailable.\r\n".encode())
        return
    if account is None:
        s.auth_failures += 1
        _log().warning("failed login for %r from %s", user, s.peer)
        await s.send(f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n".encode())
        if s.auth_failures >= MAX_AUTH_FAILURES:
            raise Bye("Too many failed logins.")
        return
    try:
        s.storage = s.server.storage_for(account)
    except Exception as e:
        _log().error("no mail store for %s: %s", user, e)
        await s.send(f"{tag} NO [UNAVAILABLE] Mail store unavailable: {oneline(str(e))}\r\n"
                     .encode("utf-8", "replace"))
        return
    s.account = account
    s.state = AUTH
    await s.send(f"{tag} OK [CAPABILITY {s.capabilities()}] Logged in.\r\n".encode())
