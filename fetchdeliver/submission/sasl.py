"""AUTH mechanisms for the submission server, checked by the IMAP server's Authenticator.

A mechanism is `async def mech(exchange, initial) -> Account | None`:

    exchange.challenge(data: bytes) -> bytes | None     send "334 base64(data)", read the answer
                                                         (None: the client cancelled with "*" or
                                                         sent bad base64; already answered)
    exchange.verify_password(user, password) -> Account | None
                                                         the configured Authenticator, off the loop
    exchange.authenticator                              the Authenticator itself (a SCRAM or
                                                         OAUTHBEARER mechanism asks it for what it needs)

`initial` is the decoded initial response (RFC 4954), b"" for "=", None when absent.
More mechanisms (SCRAM-SHA-256, OAUTHBEARER, XOAUTH2) plug in by adding to MECHANISMS; the
server advertises what is there, in this order.
"""

from __future__ import annotations

import binascii
from base64 import b64decode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.imapserver.auth import Account


class BadResponse(Exception):
    """The client's SASL message is malformed (answered 501 5.5.2)."""


def decode_initial(arg: str) -> bytes:
    """RFC 4954: "=" is an empty initial response; anything else is base64."""
    if arg == "=":
        return b""
    try:
        return b64decode(arg.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise BadResponse("cannot decode the base64 initial response") from None


def _text(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise BadResponse("user name and password must be UTF-8") from None


async def plain(exchange, initial: bytes | None) -> "Account | None":
    """RFC 4616: [authzid] NUL authcid NUL password; an authzid other than the user is refused."""
    data = initial if initial is not None else await exchange.challenge(b"")
    if data is None:
        return None
    parts = data.split(b"\0")
    if len(parts) != 3:
        raise BadResponse("PLAIN expects authzid NUL user NUL password")
    authzid, user, password = (_text(p) for p in parts)
    if authzid and authzid != user:
        return None  # no proxy logins
    return await exchange.verify_password(user, password)


async def login(exchange, initial: bytes | None) -> "Account | None":
    """The LOGIN mechanism (draft-murchison-sasl-login): user name, then password, each base64."""
    user = initial if initial else await exchange.challenge(b"Username:")
    if user is None:
        return None
    password = await exchange.challenge(b"Password:")
    if password is None:
        return None
    return await exchange.verify_password(_text(user), _text(password))


MECHANISMS = {"PLAIN": plain, "LOGIN": login}
