"""JMAP pieces that need no server: account keys, the session resource, URL templates, the event
stream parser, HTTP error wording and the watermark in the state database. The protocol itself is
tested against a real Cyrus in tests/integration/test_fetch_jmap.py."""

from __future__ import annotations

import io

import pytest

from fetchdeliver.sources.accounts import Account
from fetchdeliver.config import ConfigErrors, validate
from fetchdeliver.sources.base import SourceError
from fetchdeliver.sources.jmap import MAIL, JmapClient, Session, expand, http_error
from fetchdeliver.sources.throttle import classify

ACC = {"name": "a", "protocol": "jmap", "host": "jmap.example.org", "user": "u@example.org", "password": "p"}


def _account(**keys) -> Account:
    return Account(validate({"account": [dict(ACC, **keys)]}, "/cfg.toml")["account"][0])


def _errors(**keys) -> str:
    with pytest.raises(Exception) as e:
        validate({"account": [dict(ACC, **keys)]}, "/cfg.toml")
    return str(e.value)


def test_jmap_account_defaults_and_session_url():
    a = _account()
    assert (a.protocol, a.tls, a.port, a.keep_crlf, a.after) == ("jmap", "implicit", 443, True, "keep")
    assert JmapClient(a).session_url() == "https://jmap.example.org/.well-known/jmap"
    a = _account(tls="none", port=8080, keep_crlf=False)
    assert JmapClient(a).session_url() == "http://jmap.example.org:8080/.well-known/jmap"
    assert a.keep_crlf is False
    a = _account(session_url="https://api.fastmail.com/jmap/session", idle=True, after="move:Archive")
    assert JmapClient(a).session_url() == "https://api.fastmail.com/jmap/session"
    assert (a.idle, a.after, a.move_to) == (True, "move", "Archive")


def test_jmap_account_key_errors_name_the_key():
    assert "account[0] (a).tls: JMAP speaks HTTPS" in _errors(tls="starttls")
    assert "account[0] (a).session_url: only used by JMAP accounts" in _errors(protocol="imap",
                                                                                session_url="https://x/")
    assert "account[0] (a).session_url: expected an http(s) URL" in _errors(session_url="ftp://x/")
    assert "account[0] (a).notify: only used by IMAP push (idle = true); remove it from a JMAP account" in \
        _errors(notify=True)
    with pytest.raises(ConfigErrors):
        validate({"account": [dict(ACC, protocol="pop3", idle=True, session_url="https://x/")]}, "/cfg.toml")


# A session resource as Fastmail documents it (absolute URLs, primaryAccounts, several accounts).
FASTMAIL_LIKE_SESSION = {
    "username": "u@example.org",
    "apiUrl": "https://api.example.org/jmap/api/",
    "downloadUrl": "https://www.example.org/jmap/download/{accountId}/{blobId}/{name}?type={type}",
    "uploadUrl": "https://api.example.org/jmap/upload/{accountId}/",
    "eventSourceUrl": "https://api.example.org/jmap/event/",
    "state": "cyrus-0;p-5",
    "capabilities": {"urn:ietf:params:jmap:core": {"maxObjectsInGet": 4096, "maxObjectsInSet": 4096},
                     MAIL: {}, "urn:ietf:params:jmap:submission": {}},
    "accounts": {"u1": {"name": "u@example.org", "isPersonal": True, "isReadOnly": False,
                        "accountCapabilities": {MAIL: {}}},
                 "u2": {"name": "shared", "isPersonal": False, "isReadOnly": True,
                        "accountCapabilities": {MAIL: {}}}},
    "primaryAccounts": {MAIL: "u1", "urn:ietf:params:jmap:submission": "u1"},
}

# Cyrus 3.6 as it answers at /jmap (relative URLs; this session was recorded from the test server).
CYRUS_SESSION = {
    "username": "alice", "apiUrl": "/jmap/", "downloadUrl": "/jmap/download/{accountId}/{blobId}/{name}?accept={type}",
    "uploadUrl": "/jmap/upload/{accountId}/",
    "eventSourceUrl": "/jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}", "state": "0",
    "capabilities": {"urn:ietf:params:jmap:core": {"maxObjectsInGet": 4096}, MAIL: {}},
    "accounts": {"alice": {"name": "alice", "isPrimary": True, "isReadOnly": False,
                           "accountCapabilities": {MAIL: {}}}},
    "primaryAccounts": {MAIL: "alice"},
}


def test_session_fastmail_like_absolute_urls_and_primary_account():
    s = Session(FASTMAIL_LIKE_SESSION, "https://api.example.org/jmap/session")
    assert s.account_id == "u1"
    assert s.api_url == "https://api.example.org/jmap/api/"
    assert s.event_source_url == "https://api.example.org/jmap/event/"
    url = expand(s.download_url, {"accountId": "u1", "blobId": "G1/2", "name": "message.eml",
                                  "type": "message/rfc822"})
    assert url == "https://www.example.org/jmap/download/u1/G1%2F2/message.eml?type=message%2Frfc822"


def test_session_cyrus_relative_urls_and_missing_primary_accounts():
    s = Session(CYRUS_SESSION, "http://127.0.0.1:8008/jmap")
    assert (s.account_id, s.api_url) == ("alice", "http://127.0.0.1:8008/jmap/")
    doc = dict(CYRUS_SESSION)
    del doc["primaryAccounts"]
    assert Session(doc, "http://127.0.0.1:8008/jmap").account_id == "alice"


def test_session_without_mail_is_a_permanent_error():
    doc = dict(CYRUS_SESSION, capabilities={"urn:ietf:params:jmap:core": {}})
    with pytest.raises(SourceError) as e:
        Session(doc, "http://h/jmap")
    assert str(e.value) == ("JMAP session: the server does not offer urn:ietf:params:jmap:mail "
                            "(capabilities: urn:ietf:params:jmap:core)")
    assert e.value.temporary is False


def test_http_errors_are_worded_for_users_and_for_the_back_off():
    e = http_error("JMAP Email/get", 401, b'{"type":"about:blank","title":"Unauthorized"}', {})
    assert str(e) == "JMAP Email/get: login refused (HTTP 401: about:blank Unauthorized)" and not e.temporary
    e = http_error("JMAP download", 429, b"slow down", {"Retry-After": "30"})
    assert str(e) == "JMAP download: [THROTTLED] HTTP 429: slow down (Retry-After 30)"
    assert classify(str(e)).kind == "THROTTLED"
    assert classify(str(http_error("JMAP session", 503, b"", {}))).kind == "UNAVAILABLE"
    assert http_error("JMAP x", 500, b"", {}).temporary is True


class _Push:
    """The parts of JmapPush._read/_event under test, without a server."""

    def __init__(self):
        from fetchdeliver.sources.jmap_push import JmapPush

        self.mails = []
        self.push = JmapPush(_account(idle=True), poll="5m", on_mail=self.mails.append,
                             on_state=lambda *a: None, on_plan=lambda *a: None, renew=60)


def test_event_stream_parser_fires_once_per_new_email_state():
    p = _Push()
    stream = io.BytesIO(
        b": keep-alive comment\n\n"
        b"event: ping\ndata: {\"interval\":30}\n\n"
        b"event: state\nid: 5\ndata: {\"@type\":\"StateChange\",\"changed\":{\"a\":{\"Email\":\"5\"}}}\n\n"
        b"event: state\r\ndata: {\"changed\":{\"a\":{\"Email\":\"5\",\"Mailbox\":\"9\"}}}\r\n\r\n"
        b"data: {\"changed\":{\"other\":{\"Email\":\"7\"}}}\n\n"
        b"event: state\ndata: {\"changed\":\ndata: {\"a\":{\"Email\":\"6\"}}}\n\n")
    with pytest.raises(SourceError) as e:
        p.push._read(stream, "a")
    assert str(e.value) == "EventSource: the server ended the event stream"
    # State 5 (once: the repeat is not news), another account's change ignored, multi-line data joined.
    assert p.mails == [None, None]


def test_event_stream_reading_stops_with_the_watcher():
    p = _Push()
    p.push.stop_event.set()
    p.push._read(io.BytesIO(b"event: state\ndata: {}\n\n"), "a")
    assert p.mails == []


def test_watermark_in_the_state_database(tmp_path):
    from fetchdeliver.state import POP3_FOLDER, Pending, State

    with State(str(tmp_path)) as st:
        assert st.jmap_sync_point("acct") is None
        st.set_jmap_sync_point("acct", ("u1", "mb1,mb2", "state-7"))
        assert st.jmap_sync_point("acct")[:3] == ("u1", "mb1,mb2", "state-7")
        # Email ids are recorded like UIDLs when a delivery completes.
        p = Pending("fdtok", POP3_FOLDER, None, "Mabc", ("<x@y>", 10, "d" * 64), 1.0)
        st.add_pending("acct", [p])
        st.complete("acct", delivered=[p])
        assert st.pop3_seen("acct") == {"Mabc"}
        st.set_jmap_sync_point("acct", None)
        assert st.jmap_sync_point("acct") is None
