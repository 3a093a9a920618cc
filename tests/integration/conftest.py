"""Fixtures shared by the integration tests: a real Dovecot on 127.0.0.1 and test messages."""

import os

import pytest

from dovecot import Dovecot, DovecotUnavailable, closed_port


def _start(request, **kwargs):
    try:
        dc = Dovecot(**kwargs)
    except DovecotUnavailable as e:
        pytest.skip(str(e))
    try:
        dc.start()
    except BaseException:
        dc.cleanup()
        raise
    request.addfinalizer(dc.cleanup)
    return dc


@pytest.fixture
def dovecot(request):
    """A fresh Dovecot (imap + pop3; users alice/secret and bob/secret2), stopped by PID afterwards.

    Ports: dovecot.port("imap" | "imaps" | "pop3" | "pop3s"); TLS: dovecot.ca_file, dovecot.fingerprint;
    mail: dovecot.append(user, raw, folder=...), dovecot.contents(user, folder) -> {uid: (flags, raw)}.
    """
    return _start(request, users={"alice": "secret", "bob": "secret2"})


@pytest.fixture
def dovecot_apop(request):
    """Like `dovecot`, with APOP offered in the POP3 greeting."""
    return _start(request, users={"alice": "secret"}, apop=True)


@pytest.fixture
def unreachable_port():
    """A 127.0.0.1 port where nothing listens."""
    return closed_port()


def make_message(i: int, tag: str = "t", *, body_lines: int = 3, extra: bytes = b"") -> bytes:
    """A CRLF message with a unique Message-ID (servers speak CRLF, so this is what comes back)."""
    lines = [
        f"From: Sender {i} <sender{i}@example.org>",
        "To: alice@example.com",
        f"Subject: {tag} message {i}",
        f"Message-ID: <{tag}.{i}.{os.getpid()}@example.org>",
        "Date: Mon, 24 Nov 2025 10:00:00 +0000",
    ]
    head = "\r\n".join(lines).encode() + b"\r\n"
    body = b"".join(f"line {n} of message {i}\r\n".encode() for n in range(body_lines))
    return head + extra + b"\r\n" + body


@pytest.fixture
def messages():
    """make_message(i, tag, ...) as a fixture."""
    return make_message


@pytest.fixture
def oauth2_provider():
    """A test OAuth2 server (refresh-token grant + token introspection) on 127.0.0.1."""
    from oauth2_provider import Provider

    p = Provider().start()
    yield p
    p.stop()


@pytest.fixture
def dovecot_oauth2(request, oauth2_provider):
    """Dovecot that also takes XOAUTH2 / OAUTHBEARER, checking tokens with `oauth2_provider`."""
    return _start(request, users={"alice": "secret"},
                  oauth2_introspection_url=oauth2_provider.introspection_url)


PUSH_USERS = {f"user{i}": f"pw{i}" for i in range(5)}


@pytest.fixture
def dovecot_notify(request):
    """Dovecot with NOTIFY (mailbox_list_index = yes) and five users user0..user4 (passwords pw0..pw4)."""
    return _start(request, users=dict(PUSH_USERS), notify=True)


@pytest.fixture
def dovecot_no_notify(request):
    """Like `dovecot_notify` without the mailbox list index: IDLE only, no NOTIFY."""
    return _start(request, users=dict(PUSH_USERS), notify=False)


@pytest.fixture
def dovecot_outage(request):
    """Dovecot whose auth backend is down while `dovecot_outage.outage_flag` exists: LOGIN then answers
    `NO [UNAVAILABLE] Temporary authentication failure` (a real outage reply, no script)."""
    return _start(request, users={"alice": "secret"}, auth_outage=True)
