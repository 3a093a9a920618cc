"""fetchdeliver/sasl.py: the RFC example exchanges, run through our server and client sides."""

from __future__ import annotations

import asyncio
import base64

import pytest

from fetchdeliver import sasl
from fetchdeliver.imapserver.auth import Account, hash_password, verify_password


def _rfc_exchange(mech, hash_name, password, salt_b64, c_nonce, s_nonce, client_final, server_final):
    keys = sasl.ScramKeys.from_password(password, hash_name, base64.b64decode(salt_b64), 4096)
    server = sasl.ScramServer(hash_name, nonce=s_nonce)
    assert server.client_first(f"n,,n=user,r={c_nonce}".encode()) == "user"
    first = server.server_first(keys)
    assert first == f"r={c_nonce}{s_nonce},s={salt_b64},i=4096".encode()
    assert server.client_final(client_final.encode()) == server_final.encode()
    # our client side gives the same bytes
    client = sasl.ScramClient("user", password, hash_name, nonce=c_nonce)
    assert client.first() == f"n,,n=user,r={c_nonce}".encode()
    assert client.final(first) == client_final.encode()
    client.verify(server_final.encode())
    # a wrong password makes a proof the server refuses
    wrong = sasl.ScramClient("user", "pencil!", hash_name, nonce=c_nonce)
    wrong.first()
    assert server.client_final(wrong.final(first)) is None


def test_rfc7677_scram_sha256_example():
    _rfc_exchange("SCRAM-SHA-256", "sha256", "pencil", "W22ZaJ0SNY7soEsUEjb6gQ==", "rOprNGfwEbeRWgbNEkqO",
                  "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                  "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                  "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                  "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_rfc5802_scram_sha1_example():
    _rfc_exchange("SCRAM-SHA-1", "sha1", "pencil", "QSXCR+Q6sek8bf92", "fyko+d2lbbFgONRv9qkxdawL",
                  "3rfcNHYJY1ZVvWVs7j",
                  "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
                  "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")


def test_dovecot_scram_line_roundtrip():
    # written by `doveadm pw -s SCRAM-SHA-256 -p pencil` (Dovecot 2.3.19)
    line = ("{SCRAM-SHA-256}4096,XXv/fN8Quv0g+GgmKNAUew==,ckR4oOwCfWemFFwHjVQcob61KX/yfPW9eIqP5jW4ecI=,"
            "R3e6lnTtUtWFWltfSI+iGlf7aafDcgtqOyu8VyeqftY=")
    assert verify_password("pencil", line)
    assert not verify_password("pencil ", line)
    ours = hash_password("pencil", "SCRAM-SHA-256")
    assert ours.startswith("{SCRAM-SHA-256}4096,") and verify_password("pencil", ours)
    keys = sasl.ScramKeys.parse_dovecot(ours.split("}", 1)[1])
    assert keys.dovecot() == ours.split("}", 1)[1]


@pytest.mark.parametrize("bad", [b"p=tls-unique,,n=user,r=abc", b"x,,n=user,r=abc", b"n,,r=abc",
                                 b"n,,n=us=er,r=abc", b"n,,m=ext,n=user,r=abc", b"garbage"])
def test_scram_malformed_client_first(bad):
    with pytest.raises(sasl.SaslError):
        sasl.ScramServer().client_first(bad)


def test_scram_authzid_of_another_user_is_refused():
    with pytest.raises(sasl.AuthorizationFailed):
        sasl.ScramServer().client_first(b"n,a=admin,n=user,r=abc")


def test_oauthbearer_rfc7628_example():
    # RFC 7628 section 4.1
    data = (b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
            b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01")
    assert sasl.parse_oauthbearer(data) == ("user@example.com", "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==")
    assert sasl.parse_xoauth2(b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhbHRh\x01\x01") \
        == ("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhbHRh")
    with pytest.raises(sasl.SaslError):
        sasl.parse_oauthbearer(b"n,a=user,\x01auth=Basic abc\x01\x01")
    with pytest.raises(sasl.SaslError):
        sasl.parse_oauthbearer(b"p=tls-unique,,\x01auth=Bearer abc\x01\x01")


class TokenBackend:
    def authenticate(self, user, password):
        return Account(user) if password == "pw" else None

    def validate_token(self, user, token):
        return Account("ann") if token == "good-token" else None


def _drive(mech, initial, responses, backend=None):
    """Run sasl.authenticate with scripted client responses; returns (result, challenges sent)."""
    sent = []
    queue = list(responses)

    async def exchange(challenge):
        sent.append(challenge)
        return queue.pop(0)

    async def check(user, verify):
        return await verify()

    result = asyncio.run(sasl.authenticate(mech, initial, exchange, backend or TokenBackend(), check))
    return result, sent


def test_offered_follows_the_backend_and_the_connection():
    assert sasl.offered(TokenBackend(), True) == ["PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"]
    assert sasl.offered(TokenBackend(), False) == []
    assert sasl.offered(None, True) == []


def test_token_mechanisms():
    (user, acct), sent = _drive("OAUTHBEARER", b"n,a=ann,\x01auth=Bearer good-token\x01\x01", [])
    assert user == "ann" and acct.user == "ann" and sent == []
    # a token for ann presented as bob: refused, with the RFC 7628 error challenge first
    (user, acct), sent = _drive("OAUTHBEARER", b"n,a=bob,\x01auth=Bearer good-token\x01\x01", [b"\x01"])
    assert acct is None and b'"invalid_token"' in sent[0]
    (user, acct), _ = _drive("XOAUTH2", b"user=ann\x01auth=Bearer good-token\x01\x01", [])
    assert acct.user == "ann"
    (user, acct), sent = _drive("XOAUTH2", None, [b"user=ann\x01auth=Bearer bad\x01\x01", b""])
    assert acct is None and sent[0] == b""


def test_plain_and_login():
    (user, acct), _ = _drive("PLAIN", b"\0ann\0pw", [])
    assert acct.user == "ann"
    (user, acct), sent = _drive("LOGIN", None, [b"ann", b"pw"])
    assert acct.user == "ann" and sent == [b"Username:", b"Password:"]
    with pytest.raises(sasl.Cancelled):
        _drive("LOGIN", None, [b"ann", None])
    with pytest.raises(sasl.AuthorizationFailed):
        _drive("PLAIN", b"root\0ann\0pw", [])
    with pytest.raises(sasl.SaslError):
        _drive("PLAIN", b"ann\0pw", [])
