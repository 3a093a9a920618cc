"""JMAP in the daemon (EventSource push, `fetchdeliver status`) and Bearer auth, against the real Cyrus.

Debian's Cyrus httpd has no push (built without Wslay, its EventSource answers 204 No Content), so
the pushing server is the real Cyrus behind jmap_front.py's CyrusPushEventSource, which reproduces
the event stream of a Cyrus built with push; every other request goes to Cyrus unchanged. Bearer
tokens are taken by the front's BearerTokenAccess (Fastmail-like) and checked with the test OAuth2
provider.
"""

from __future__ import annotations

import pytest
from fetchsetup import counts
from jmap_front import JmapFront
from jmap_support import JmapSetup, bodies, cyrus, msg, user  # noqa: F401  (cyrus, user: fixtures)
from test_daemon import DaemonProc, status, wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def daemons():
    started: list[DaemonProc] = []
    yield started
    for d in started:
        d.kill()


def _front(request, cyrus, **kwargs) -> JmapFront:
    front = JmapFront(cyrus, **kwargs).start()
    request.addfinalizer(front.stop)
    return front


def _daemon(tmp_path, setup, cmd, daemons) -> DaemonProc:
    d = DaemonProc(cmd + ["-v", "-v"], setup.config, str(tmp_path / "daemon.log"))
    daemons.append(d)
    d.wait_log(r"ready: ")
    return d


def test_eventsource_push_wakes_the_daemon(request, tmp_path, cyrus, user, fetchdeliver_cmd, daemons):
    front = _front(request, cyrus)
    cyrus.append(user, msg(0))
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, port=front.port, idle=True, poll="1h",
                      after="mark-seen")
    d = _daemon(tmp_path, setup, fetchdeliver_cmd, daemons)
    d.wait_log(r"jm: JMAP EventSource connected: new mail is fetched as it arrives")
    wait_for(lambda: len(setup.delivered()) == 1, 30, "the first pass", proc=d)
    out = status(setup)
    assert "jm (idle, poll every 1h):" in out, out
    assert "      INBOX: pushed (JMAP EventSource (RFC 8620 7.3), one connection for every folder)" in out, out
    # No pass is due for an hour: only the push brings each new message.
    for i in range(1, 4):
        cyrus.append(user, msg(i))
        wait_for(lambda i=i: len(setup.delivered()) == i + 1, 30, f"delivery of message {i} by push", proc=d)
    assert bodies(setup.delivered()) == sorted(msg(i) for i in range(4))
    assert front.streams == 1 and front.stream_count == 1
    wait_for(lambda: all(b"\\Seen" in f for f, _ in cyrus.messages(user).values()), 20, "$seen on every message")
    assert "errors:    none" in status(setup)
    # The server ends the stream: the daemon connects again at once, and push goes on.
    front.drop_streams()
    wait_for(lambda: front.stream_count == 2 and front.streams == 1, 30, "a new EventSource connection", proc=d)
    cyrus.append(user, msg(4))
    wait_for(lambda: len(setup.delivered()) == 5, 30, "delivery by push after the reconnect", proc=d)
    assert "errors:    none" in status(setup)     # a stream the server ended is not an error
    assert "EventSource: the server ended the event stream; connecting again" in d.log()
    assert d.stop()[0] == 0


def test_without_push_the_account_is_polled_and_status_says_why(request, tmp_path, cyrus, user, fetchdeliver_cmd,
                                                                daemons):
    # Debian's Cyrus as it is: eventSourceUrl in the session, 204 No Content behind it.
    cyrus.append(user, msg(0))
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, idle=True, poll="2s")
    d = _daemon(tmp_path, setup, fetchdeliver_cmd, daemons)
    out = wait_for(lambda: (lambda t: t if "INBOX: polled (the JMAP server does not push" in t else None)(
        status(setup)), 20, "the push plan in status", proc=d)
    assert ("      INBOX: polled (the JMAP server does not push (EventSource answered HTTP 204); polled every 2s)"
            in out), out
    wait_for(lambda: len(setup.delivered()) == 1, 30, "the first pass", proc=d)
    cyrus.append(user, msg(1))
    wait_for(lambda: len(setup.delivered()) == 2, 30, "delivery by polling", proc=d)
    assert "errors:    none" in status(setup)
    assert d.stop()[0] == 0


def test_bearer_token_from_the_oauth2_refresh_flow(request, tmp_path, cyrus, user, fetchdeliver_cmd,
                                                   oauth2_provider):
    oauth2_provider.user = user
    front = _front(request, cyrus, eventsource=False, introspection_url=oauth2_provider.introspection_url)
    cyrus.append(user, msg(0))
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, port=front.port, password=None,
                      oauth2_token_url=oauth2_provider.token_url, oauth2_client_id=oauth2_provider.client_id,
                      oauth2_client_secret=oauth2_provider.client_secret, oauth2_refresh_token="refresh-1")
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    assert front.bearer_requests >= 3 and len(oauth2_provider.grants) == 1
    # The provider revokes the cached token: refused once, refreshed, and the pass goes on.
    oauth2_provider.revoke_all()
    cyrus.append(user, msg(1))
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    assert len(oauth2_provider.grants) == 2
    assert bodies(setup.delivered()) == [msg(0), msg(1)]
    # A refresh token the provider does not know: a clear error, nothing delivered.
    setup.keys["oauth2_refresh_token"] = "stolen"
    setup.keys["name"] = "jm2"
    setup.write()
    r = setup.run()
    assert r.returncode == 1
    assert "fetchdeliver: jm2: JMAP login: OAuth2 token refresh at" in r.stderr, r.stderr


def test_a_pass_with_nothing_new_costs_one_api_request(request, tmp_path, cyrus, user, fetchdeliver_cmd):
    front = _front(request, cyrus, eventsource=False)
    cyrus.append(user, msg(0))
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, port=front.port)
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    front.requests.clear()
    r = setup.run()
    assert counts(r.stdout, "jm") == (0, 0, 0, 0), r.stdout + r.stderr
    # Session discovery (the well-known URL redirects to Cyrus' session), then Mailbox/get and
    # Email/changes in one API request.
    assert front.requests == ["GET /.well-known/jmap", "GET /jmap", "POST /jmap/"]
