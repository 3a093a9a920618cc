"""SASL mechanisms for every server (IMAP, ManageSieve, POP3, submission): one place, no I/O of its own.

    mechs = offered(authenticator, plaintext_ok)       # ["PLAIN", "LOGIN", "SCRAM-SHA-256", ...]
    user, account = await authenticate(mech, initial, exchange, authenticator, check)

`exchange(challenge)` sends one server challenge (the protocol base64-encodes it its own way) and
returns the client's decoded response, or None when the client cancelled ("*").
`check(user, verify)` runs the credential check `verify()` (a coroutine function returning an
Account or None) under the server's login-failure policy, e.g. netlimits.LoginThrottle.attempt.

Mechanisms:
- PLAIN (RFC 4616) and LOGIN: the password goes to `authenticator.authenticate(user, password)`.
- SCRAM-SHA-256 (RFC 7677) and SCRAM-SHA-1 (RFC 5802), without channel binding: offered when the
  authenticator has `scram_credentials(user, hash_name) -> (ScramKeys, Account) | None`
  (PasswdFileAuthenticator reads Dovecot's "{SCRAM-SHA-256}iter,salt,StoredKey,ServerKey").
- OAUTHBEARER (RFC 7628) and XOAUTH2 (Google's): offered when the authenticator has
  `validate_token(user, token) -> Account | None` (a plugin; see imapserver/plugin.py).

PLAIN, LOGIN and the bearer-token mechanisms carry a reusable secret: `offered` lists them only
where plaintext logins are allowed (TLS or loopback, or allow_plaintext_auth). SCRAM does not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable

from fetchdeliver.errors import FetchdeliverError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PLAINTEXT_MECHANISMS = ("PLAIN", "LOGIN")
SCRAM_MECHANISMS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}
TOKEN_MECHANISMS = ("OAUTHBEARER", "XOAUTH2")
SCRAM_ITERATIONS = 4096   # Dovecot's default, and RFC 7677's minimum

Exchange = Callable[[bytes], Awaitable["bytes | None"]]
Check = Callable[[str, Callable[[], Awaitable[object]]], Awaitable[object]]


class SaslError(FetchdeliverError):
    """The client's SASL message is malformed (the protocol answers BAD / NO with this text)."""


class Cancelled(SaslError):
    """The client cancelled the exchange with "*"."""

    def __init__(self) -> None:
        super().__init__("Authentication canceled.")


class AuthorizationFailed(SaslError):
    """The client asked to act as another user (an authzid that is not its own login)."""


def offered(authenticator, plaintext_ok: bool) -> list[str]:
    """The mechanisms to advertise for this authenticator on this connection."""
    out: list[str] = []
    if authenticator is None:
        return out
    if plaintext_ok:
        out += PLAINTEXT_MECHANISMS
    if callable(getattr(authenticator, "scram_credentials", None)):
        out += SCRAM_MECHANISMS
    if plaintext_ok and callable(getattr(authenticator, "validate_token", None)):
        out += TOKEN_MECHANISMS
    return out


def decode_response(line: bytes) -> bytes | None:
    """A client's base64 line: bytes, b"" for "=" (RFC 4959 empty initial response), None for "*"."""
    line = line.strip()
    if line == b"*":
        return None
    if line == b"=":
        return b""
    try:
        return base64.b64decode(line, validate=True)
    except ValueError:
        raise SaslError("the SASL response is not valid base64.") from None


async def authenticate(mech: str, initial: bytes | None, exchange: Exchange, authenticator,
                       check: Check) -> tuple[str, object]:
    """Run mechanism `mech`: (user, Account) on success, (user, None) for wrong credentials.

    Raises Cancelled, AuthorizationFailed, SaslError (malformed), and whatever `check` raises
    (LoginThrottled) or the authenticator raises (backend unavailable)."""
    import asyncio

    mech = mech.upper()

    async def ask(challenge: bytes) -> bytes:
        got = await exchange(challenge)
        if got is None:
            raise Cancelled()
        return got

    if mech == "PLAIN":
        data = initial if initial is not None else await ask(b"")
        parts = data.split(b"\0")
        if len(parts) != 3:
            raise SaslError("Invalid SASL PLAIN response.")
        authzid, user_b, password_b = parts
        if authzid and authzid != user_b:
            raise AuthorizationFailed("Proxy authorization is not supported.")
        user, password = _text(user_b), _text(password_b)
        return user, await check(user, lambda: asyncio.to_thread(authenticator.authenticate, user, password))
    if mech == "LOGIN":
        user_b = initial if initial else await ask(b"Username:")
        password_b = await ask(b"Password:")
        user, password = _text(user_b), _text(password_b)
        return user, await check(user, lambda: asyncio.to_thread(authenticator.authenticate, user, password))
    if mech in SCRAM_MECHANISMS and callable(getattr(authenticator, "scram_credentials", None)):
        return await _scram(mech, initial, ask, authenticator, check)
    if mech in TOKEN_MECHANISMS and callable(getattr(authenticator, "validate_token", None)):
        data = initial if initial is not None else await ask(b"")
        user, token = (parse_oauthbearer if mech == "OAUTHBEARER" else parse_xoauth2)(data)

        async def verify():
            account = await asyncio.to_thread(authenticator.validate_token, user, token)
            if account is not None and user and account.user != user:
                return None    # a token of someone else
            return account

        account: Any = await check(user, verify)   # the authenticator's Account (has .user)
        if account is None:
            # RFC 7628 3.2.2: an error challenge, the client answers "\x01" (XOAUTH2: ""), then NO.
            status = {"status": "invalid_token", "schemes": "bearer", "scope": "email"}
            await exchange(json.dumps(status).encode())
            return user, None
        return account.user, account
    raise SaslError(f"Unsupported authentication mechanism {mech}.")


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


# -- OAUTHBEARER / XOAUTH2 -----------------------------------------------------------------------

def parse_oauthbearer(data: bytes) -> tuple[str, str]:
    """(authzid user, token) from an RFC 7628 client response: "n,a=USER,\\x01auth=Bearer TOKEN\\x01\\x01"."""
    text = _text(data)
    gs2, sep, rest = text.partition("\x01")
    if not sep or not (rest.endswith("\x01\x01") or rest == "\x01"):
        raise SaslError("Invalid OAUTHBEARER response.")
    fields = gs2.split(",")
    if len(fields) < 3 or fields[0] not in ("n", "y"):
        raise SaslError("Invalid OAUTHBEARER GS2 header (channel binding is not supported).")
    user = ""
    if fields[1].startswith("a="):
        user = _saslname(fields[1][2:])
    elif fields[1]:
        raise SaslError("Invalid OAUTHBEARER GS2 header.")
    return user, _bearer(rest)


def parse_xoauth2(data: bytes) -> tuple[str, str]:
    """(user, token) from "user=USER\\x01auth=Bearer TOKEN\\x01\\x01"."""
    text = _text(data)
    kv = dict(item.partition("=")[::2] for item in text.split("\x01") if item)
    if "user" not in kv:
        raise SaslError("Invalid XOAUTH2 response.")
    return kv["user"], _bearer(text)


def _bearer(kvpairs: str) -> str:
    for item in kvpairs.split("\x01"):
        key, _, value = item.partition("=")
        if key == "auth":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    raise SaslError("the response has no auth=Bearer token.")


# -- SCRAM (RFC 5802, RFC 7677) --------------------------------------------------------------------

class ScramKeys:
    """What a server stores for SCRAM: iterations, salt, StoredKey, ServerKey."""

    __slots__ = ("hash_name", "iterations", "salt", "stored_key", "server_key")

    def __init__(self, hash_name: str, iterations: int, salt: bytes, stored_key: bytes,
                 server_key: bytes) -> None:
        self.hash_name = hash_name
        self.iterations = iterations
        self.salt = salt
        self.stored_key = stored_key
        self.server_key = server_key

    @classmethod
    def from_password(cls, password: str, hash_name: str = "sha256", salt: bytes | None = None,
                      iterations: int = SCRAM_ITERATIONS) -> "ScramKeys":
        salt = os.urandom(16) if salt is None else salt
        salted = hashlib.pbkdf2_hmac(hash_name, password.encode("utf-8"), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hash_name).digest()
        server_key = hmac.new(salted, b"Server Key", hash_name).digest()
        return cls(hash_name, iterations, salt, hashlib.new(hash_name, client_key).digest(), server_key)

    @classmethod
    def parse_dovecot(cls, secret: str, hash_name: str = "sha256") -> "ScramKeys":
        """Dovecot's "{SCRAM-SHA-256}" secret: "ITER,base64(salt),base64(StoredKey),base64(ServerKey)"."""
        try:
            iterations, salt, stored, server = secret.strip().split(",")
            return cls(hash_name, int(iterations), base64.b64decode(salt, validate=True),
                       base64.b64decode(stored, validate=True), base64.b64decode(server, validate=True))
        except ValueError:
            raise ValueError("expected ITERATIONS,SALT,STOREDKEY,SERVERKEY (base64)") from None

    def dovecot(self) -> str:
        """The secret in Dovecot's format (without the "{SCRAM-...}" prefix)."""
        b64 = base64.b64encode
        return (f"{self.iterations},{b64(self.salt).decode()},{b64(self.stored_key).decode()},"
                f"{b64(self.server_key).decode()}")

    def matches_password(self, password: str) -> bool:
        other = ScramKeys.from_password(password, self.hash_name, self.salt, self.iterations)
        return hmac.compare_digest(other.stored_key, self.stored_key)


def _saslname(s: str) -> str:
    if "=" in s.replace("=2C", "").replace("=3D", ""):
        raise SaslError("invalid '=' escape in a SASL name.")
    return s.replace("=2C", ",").replace("=3D", "=")


def _attrs(msg: str) -> list[tuple[str, str]]:
    out = []
    for part in msg.split(","):
        if len(part) < 2 or part[1] != "=":
            raise SaslError(f"malformed SCRAM attribute {part[:20]!r}.")
        out.append((part[0], part[2:]))
    return out


class ScramServer:
    """The server side of one SCRAM exchange, without I/O (RFC 5802 section 5)."""

    def __init__(self, hash_name: str = "sha256", nonce: str | None = None) -> None:
        self.hash_name = hash_name
        self.server_nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.user = ""
        self.authzid = ""

    def client_first(self, data: bytes) -> str:
        """Parse client-first-message; returns the user name."""
        text = _text(data)
        fields = text.split(",", 2)
        if len(fields) != 3:
            raise SaslError("malformed SCRAM client-first-message.")
        cbind, authzid, bare = fields
        if cbind.startswith("p="):
            raise SaslError("channel binding is not supported (no -PLUS mechanism is offered).")
        if cbind not in ("n", "y"):
            raise SaslError("malformed SCRAM GS2 header.")
        if authzid:
            if not authzid.startswith("a="):
                raise SaslError("malformed SCRAM GS2 header.")
            self.authzid = _saslname(authzid[2:])
        self.gs2_header = f"{cbind},{authzid},"
        attrs = _attrs(bare)
        if attrs and attrs[0][0] == "m":
            raise SaslError("SCRAM mandatory extensions are not supported.")
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r" or not attrs[1][1]:
            raise SaslError("SCRAM client-first-message needs n= and r=.")
        self.user = _saslname(attrs[0][1])
        if self.authzid and self.authzid != self.user:
            raise AuthorizationFailed("Proxy authorization is not supported.")
        self.client_first_bare = bare
        self.nonce = attrs[1][1] + self.server_nonce
        return self.user

    def server_first(self, keys: ScramKeys) -> bytes:
        self.keys = keys
        self.server_first_message = (f"r={self.nonce},s={base64.b64encode(keys.salt).decode()},"
                                     f"i={keys.iterations}")
        return self.server_first_message.encode()

    def client_final(self, data: bytes) -> bytes | None:
        """Check client-final-message: the server-final-message ("v=...") if the proof is right, else None."""
        text = _text(data)
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise SaslError("SCRAM client-final-message has no proof.")
        attrs = dict(_attrs(without_proof))
        if attrs.get("r") != self.nonce:
            raise SaslError("SCRAM nonce mismatch.")
        try:
            cbind = base64.b64decode(attrs.get("c", ""), validate=True)
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError:
            raise SaslError("SCRAM c= or p= is not valid base64.") from None
        if cbind != self.gs2_header.encode():
            raise SaslError("SCRAM channel-binding data does not match the GS2 header.")
        auth_message = f"{self.client_first_bare},{self.server_first_message},{without_proof}".encode()
        keys = self.keys
        signature = hmac.new(keys.stored_key, auth_message, self.hash_name).digest()
        if len(proof) != len(signature):
            return None
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if not hmac.compare_digest(hashlib.new(self.hash_name, client_key).digest(), keys.stored_key):
            return None
        server_signature = hmac.new(keys.server_key, auth_message, self.hash_name).digest()
        return b"v=" + base64.b64encode(server_signature)


class ScramClient:
    """The client side of SCRAM (for our fetchers and tests): first() -> final(server_first) -> verify(server_final)."""

    def __init__(self, user: str, password: str, hash_name: str = "sha256", nonce: str | None = None) -> None:
        self.user = user
        self.password = password
        self.hash_name = hash_name
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()

    def first(self) -> bytes:
        name = self.user.replace("=", "=3D").replace(",", "=2C")
        self.bare = f"n={name},r={self.nonce}"
        return f"n,,{self.bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        text = _text(server_first)
        attrs = dict(_attrs(text))
        if not attrs.get("r", "").startswith(self.nonce):
            raise SaslError("the server's nonce does not extend ours.")
        keys = ScramKeys.from_password(self.password, self.hash_name, base64.b64decode(attrs["s"]),
                                       int(attrs["i"]))
        salted = hashlib.pbkdf2_hmac(self.hash_name, self.password.encode(), keys.salt, keys.iterations)
        client_key = hmac.new(salted, b"Client Key", self.hash_name).digest()
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={attrs['r']}"
        auth_message = f"{self.bare},{text},{without_proof}".encode()
        signature = hmac.new(keys.stored_key, auth_message, self.hash_name).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.expected = b"v=" + base64.b64encode(hmac.new(keys.server_key, auth_message, self.hash_name).digest())
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        if not hmac.compare_digest(server_final, self.expected):
            raise SaslError("the server's SCRAM signature is wrong: it does not know the password.")


def _decoy_keys(user: str, hash_name: str) -> ScramKeys:
    """Keys for an unknown user: a salt stable per user, so a probe cannot tell users apart."""
    global _DECOY_SECRET
    if _DECOY_SECRET is None:
        _DECOY_SECRET = os.urandom(32)
    salt = hmac.new(_DECOY_SECRET, user.encode("utf-8", "replace"), "sha256").digest()[:16]
    size = hashlib.new(hash_name).digest_size
    return ScramKeys(hash_name, SCRAM_ITERATIONS, salt, os.urandom(size), os.urandom(size))


_DECOY_SECRET: bytes | None = None


async def _scram(mech: str, initial: bytes | None, ask, authenticator, check) -> tuple[str, object]:
    import asyncio

    hash_name = SCRAM_MECHANISMS[mech]
    server = ScramServer(hash_name)
    user = server.client_first(initial if initial else await ask(b""))
    found = await asyncio.to_thread(authenticator.scram_credentials, user, hash_name)
    keys, account = found if found else (_decoy_keys(user, hash_name), None)
    final = await ask(server.server_first(keys))

    verdict: list[bytes] = []

    async def verify():
        if account is None:
            return None
        signature = server.client_final(final)
        if signature is None:
            return None
        verdict.append(signature)
        return account

    if account is None:
        server.client_final(final)     # still reject a malformed message as malformed
    result = await check(user, verify)
    if result is None:
        return user, None
    # RFC 5802: the server signature, as a last challenge the client answers with an empty response.
    await ask(verdict[0])
    return user, result
