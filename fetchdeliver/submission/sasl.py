"""AUTH for the submission server: the mechanisms of fetchdeliver/sasl.py (the IMAP server's),
checked by the IMAP server's Authenticator through the server's login throttle (netlimits).

PLAIN and LOGIN where plain-text passwords are allowed; SCRAM-SHA-256/SCRAM-SHA-1 where the
authenticator has SCRAM credentials (a passwd-file line from `doveadm pw -s SCRAM-SHA-256` or
`fetchdeliver passwd -s SCRAM-SHA-256`); OAUTHBEARER/XOAUTH2 where it validates tokens.
"""

from __future__ import annotations

import binascii
from base64 import b64decode

from fetchdeliver import sasl as shared
from fetchdeliver.errors import FetchdeliverError

PLAINTEXT_MECHANISMS = shared.PLAINTEXT_MECHANISMS


class BadResponse(FetchdeliverError):
    """The client's SASL message is malformed (answered 501 5.5.2)."""


def decode_initial(arg: str) -> bytes:
    """RFC 4954: "=" is an empty initial response; anything else is base64."""
    if arg == "=":
        return b""
    try:
        return b64decode(arg.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise BadResponse("cannot decode the base64 initial response") from None


def mechanisms(authenticator, plaintext_ok: bool) -> list[str]:
    """The mechanisms to offer: PLAIN and LOGIN where plain-text passwords are allowed, then what
    fetchdeliver/sasl.py offers for this authenticator besides (SCRAM, OAUTHBEARER, XOAUTH2)."""
    extra = [m for m in shared.offered(authenticator, plaintext_ok) if m not in PLAINTEXT_MECHANISMS]
    return (list(PLAINTEXT_MECHANISMS) if plaintext_ok else []) + extra
