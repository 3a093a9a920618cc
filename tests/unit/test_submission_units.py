"""The submission server's pieces without a network: the [submission] table, SASL decoding, the
user's addresses, the rate limit and the header additions."""

from __future__ import annotations

import textwrap

import pytest

from fetchdeliver.config import ConfigErrors, Settings, parse_file
from fetchdeliver.imapserver.auth import Account
from fetchdeliver.message import Message
from fetchdeliver.submission import headers, sasl
from fetchdeliver.submission.identity import Directory, RateLimiter
from fetchdeliver.submission.settings import parse_rate


def _cfg(tmp_path, text: str):
    p = tmp_path / "config.toml"
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_config_errors_name_the_file_and_key(tmp_path):
    path = _cfg(tmp_path, """
        [submission]
        rate_limit = "lots"
        max_recipients = 0
        aliases = { alice = ["not an address"] }
        tls_listen = "127.0.0.1:465"
        colour = "blue"
        """)
    with pytest.raises(ConfigErrors) as e:
        parse_file(path)
    text = str(e.value)
    for key in ("submission.rate_limit", "submission.max_recipients", "submission.aliases", "submission.colour"):
        assert f"{path}: {key}:" in text, text


def test_tls_listen_needs_a_certificate(tmp_path):
    with pytest.raises(ConfigErrors) as e:
        parse_file(_cfg(tmp_path, '[submission]\ntls_listen = "127.0.0.1:465"\n'))
    assert "submission.tls_listen: tls_listen needs cert and key" in str(e.value)


def test_parse_rate():
    assert parse_rate("200/1h") == (200, 3600)
    assert parse_rate("5/90s") == (5, 90)
    assert parse_rate("0") == (0, 0)
    for bad in ("200", "x/1h", "5/0s", "5/soon"):
        with pytest.raises(ValueError):
            parse_rate(bad)


class _Scram:
    def authenticate(self, user, password):
        return None

    def scram_credentials(self, user, hash_name):
        return None


class _Tokens(_Scram):
    def validate_token(self, user, token):
        return None


def test_mechanisms_are_the_shared_ones():
    """PLAIN/LOGIN only where plain text is allowed; SCRAM and the token mechanisms by what the
    authenticator can do (fetchdeliver/sasl.py runs them; tests/unit/test_sasl.py tests them)."""
    assert sasl.mechanisms(_Scram(), True) == ["PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert sasl.mechanisms(_Scram(), False) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert sasl.mechanisms(_Tokens(), True) == ["PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-1",
                                                "OAUTHBEARER", "XOAUTH2"]
    assert sasl.mechanisms(None, True) == ["PLAIN", "LOGIN"]
    assert sasl.decode_initial("=") == b""
    assert sasl.decode_initial("AGEAYg==") == b"\0a\0b"
    with pytest.raises(sasl.BadResponse):
        sasl.decode_initial("not base64!")


def test_a_users_addresses(tmp_path):
    path = _cfg(tmp_path, f"""
        [[recipient]]
        address = ["alice@example.org", "alice@old.example"]
        maildir = "{tmp_path}/alice"

        [[recipient]]
        address = ["bob@example.net"]
        maildir = "{tmp_path}/bob"
        """)
    d = Directory(Settings(parse_file(path), path), None, {"alice": ["postmaster@example.org", "@example.com"]})
    a = d.identity(Account("alice", "maildir:" + str(tmp_path / "alice"), extra={"address": "a.smith@example.org"}))
    for ok in ("alice@example.org", "ALICE@old.example", "<a.smith@example.org>", "postmaster@example.org",
               "anyone@example.com"):
        assert a.owns(ok), ok
    for bad in ("bob@example.net", "", "alice@example.net", "x@sub.example.com"):
        assert not a.owns(bad), bad
    # the login name as an address finds its [[recipient]] table
    b = d.identity(Account("bob@example.net"))
    assert b.owns("bob@example.net") and not b.owns("alice@example.org")
    assert d.local_target("bob@example.net").addresses == ["bob@example.net"]
    assert d.local_target("carol@remote.example") is None


def test_rate_limiter_window():
    r = RateLimiter(2, 60)
    assert r.allows("alice", now=0)
    r.record("alice", now=0)
    r.record("alice", now=10)
    assert not r.allows("alice", now=59) and r.allows("bob", now=59)
    assert r.allows("alice", now=60.5)
    assert RateLimiter(0, 0).allows("alice")


@pytest.mark.parametrize("raw,eol", [(b"From: a@b\r\nSubject: x\r\n\r\nbody\r\n", "\r\n"),
                                     (b"From: a@b\nSubject: x\n\nbody\n", "\n")])
def test_added_headers_go_on_top_with_the_messages_line_ends(raw, eol):
    m = Message(raw)
    lines = headers.additions(m, hostname="mail.test", received=None)
    assert [x.split(":")[0] for x in lines] == ["Message-ID", "Date"]
    out = headers.prepend(raw, lines)
    assert out.endswith(raw)
    top = out[: len(out) - len(raw)].decode()
    assert top.count(eol) == 2 and (eol == "\r\n" or "\r" not in top)
    assert headers.additions(Message(out), hostname="mail.test", received=None) == []


def test_from_addresses_every_one():
    m = Message(b"From: Alice <alice@example.org>, =?utf-8?q?B=C3=B6b?= <BOB@example.net>\r\n\r\n")
    assert headers.from_addresses(m) == ["alice@example.org", "bob@example.net"]
    assert headers.from_addresses(Message(b"Subject: none\r\n\r\n")) == []
