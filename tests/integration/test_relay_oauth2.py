"""The outbound relay logs in with XOAUTH2 / OAUTHBEARER, its access token from the same OAuth2 code as
the IMAP/POP3 accounts (the refresh-token grant at a test authorization server on 127.0.0.1, cached
until it expires, refreshed when refused). The relay is fetchdeliver's own submission server, which
checks each token at the same authorization server (RFC 7662 introspection); it relays to a sink."""

from __future__ import annotations

import json
import textwrap
import urllib.parse
import urllib.request

import pytest
from submission_support import World, wait_for

from fetchdeliver.config import ConfigErrors, Settings, parse_file
from fetchdeliver.outbound.queue import OutboundQueue

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

RAW = (b"From: Alice <alice@example.org>\nTo: carol@remote.example\nSubject: token\n"
       b"Message-ID: <oauth-relay@example.org>\n\nSent with a bearer token.\n")


@pytest.fixture
def relay_world(tmp_path, oauth2_provider):
    """Our submission server trusting tokens the test provider vouches for (its users: alice, bob)."""
    w = World(tmp_path / "relay", submission=f'oauth2_introspection_url = "{oauth2_provider.introspection_url}"\n')
    yield w
    w.stop()


def sender_queue(tmp_path, text: str) -> OutboundQueue:
    path = tmp_path / "sender.toml"
    path.write_text(textwrap.dedent(text) + f'\n[delivery]\nstate_dir = "{tmp_path}/sender-state"\n')
    return OutboundQueue.from_settings(Settings(parse_file(str(path)), str(path)))


def oauth_config(world, provider, mechanism: str) -> str:
    return f"""
        [relay]
        host = "127.0.0.1"
        port = {world.port}
        tls = "none"
        oauth2_account = "work"
        oauth2_mechanism = "{mechanism}"

        [[account]]
        name = "work"
        protocol = "imap"
        host = "imap.invalid"
        user = "alice"
        oauth2_token_url = "{provider.token_url}"
        oauth2_client_id = "{provider.client_id}"
        oauth2_client_secret = "{provider.client_secret}"
        oauth2_refresh_token = "refresh-1"
        """


def send_one(q: OutboundQueue, world, n: int) -> None:
    before = len(world.sink.messages)
    raw = RAW.replace(b"<oauth-relay@", f"<oauth-relay-{n}@".encode())
    q.enqueue("alice@example.org", "carol@remote.example", raw)
    counts = q.run_once()
    assert counts["sent"] == 1, [i.last_error for i in q.items()]
    got = wait_for(lambda: world.sink.messages[before:], what="the submission server to relay the message")
    assert b"(authenticated as alice)" in got[0].data
    assert got[0].data.endswith(raw.replace(b"\n", b"\r\n"))


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_relay_token_from_an_accounts_grant_is_cached_and_refreshed(tmp_path, oauth2_provider, relay_world,
                                                                    mechanism):
    q = sender_queue(tmp_path, oauth_config(relay_world, oauth2_provider, mechanism))
    send_one(q, relay_world, 1)
    assert [g["refresh_token"] for g in oauth2_provider.grants] == ["refresh-1"]
    introspected = oauth2_provider.introspections
    assert introspected == 1        # the submission server asked the issuer about the token

    # Still valid: the cached access token is used again, no new grant.
    send_one(q, relay_world, 2)
    assert len(oauth2_provider.grants) == 1 and oauth2_provider.introspections == introspected + 1

    # The issuer revokes it before its announced expiry: the server refuses, the relay refreshes once.
    oauth2_provider.revoke_all()
    send_one(q, relay_world, 3)
    assert len(oauth2_provider.grants) == 2


def test_expired_token_is_refreshed_before_connecting(tmp_path, oauth2_provider, relay_world):
    oauth2_provider.expires_in = 30     # below the refresh margin: never reused
    q = sender_queue(tmp_path, oauth_config(relay_world, oauth2_provider, "xoauth2"))
    send_one(q, relay_world, 1)
    send_one(q, relay_world, 2)
    assert len(oauth2_provider.grants) == 2
    assert oauth2_provider.introspections == 2   # no refused attempt in between


def test_relay_and_fetch_share_the_accounts_token_cache(tmp_path, oauth2_provider, relay_world):
    from fetchdeliver.sources.accounts import from_settings

    q = sender_queue(tmp_path, oauth_config(relay_world, oauth2_provider, "xoauth2"))
    path = tmp_path / "sender.toml"
    account, = from_settings(Settings(parse_file(str(path)), str(path)))
    token = account.access_token()          # what `fetch` would log in with
    send_one(q, relay_world, 1)
    assert len(oauth2_provider.grants) == 1 and token in oauth2_provider.active


def _issue_token(provider) -> str:
    form = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": "refresh-1",
                                   "client_id": provider.client_id, "client_secret": provider.client_secret})
    with urllib.request.urlopen(provider.token_url, data=form.encode(), timeout=10) as r:
        return json.load(r)["access_token"]


def test_token_command(tmp_path, oauth2_provider, relay_world):
    token_file = tmp_path / "token"
    token_file.write_text(_issue_token(oauth2_provider) + "\n")
    q = sender_queue(tmp_path, f"""
        [relay]
        host = "127.0.0.1"
        port = {relay_world.port}
        tls = "none"
        user = "alice"
        oauth2_token_command = "cat {token_file}"
        oauth2_mechanism = "oauthbearer"
        """)
    send_one(q, relay_world, 1)


def test_refused_token_is_deferred_with_the_servers_words_not_bounced(tmp_path, oauth2_provider, relay_world):
    q = sender_queue(tmp_path, f"""
        [relay]
        host = "127.0.0.1"
        port = {relay_world.port}
        tls = "none"
        user = "alice"
        oauth2_token_command = "echo not-a-token"
        """)
    q.enqueue("alice@example.org", "carol@remote.example", RAW)
    assert q.run_once()["deferred"] == 1
    item, = q.items()
    assert f"relay 127.0.0.1:{relay_world.port} refused the XOAUTH2 login of 'alice': 535" in item.last_error
    assert "invalid_token" in item.last_error
    assert relay_world.sink.messages == []


def test_token_of_another_user_is_refused(tmp_path, oauth2_provider, relay_world):
    oauth2_provider.user = "bob"        # the grant is bob's; the relay logs in as alice
    q = sender_queue(tmp_path, oauth_config(relay_world, oauth2_provider, "xoauth2"))
    q.enqueue("alice@example.org", "carol@remote.example", RAW)
    assert q.run_once()["deferred"] == 1
    assert "refused the XOAUTH2 login of 'alice'" in q.items()[0].last_error
    assert len(oauth2_provider.grants) == 2     # refreshed once, refused again: no loop
    assert relay_world.sink.messages == []


@pytest.mark.parametrize("account,words", [
    ('name = "work"\nprotocol = "imap"\nhost = "h"\nuser = "u"\npassword = "x"', "account 'work' has no OAuth2 settings"),
    ('name = "other"\nprotocol = "imap"\nhost = "h"\nuser = "u"\noauth2_token_command = "x"',
     "names no [[account]] (accounts: 'other')"),
])
def test_relay_oauth2_account_must_name_an_oauth2_account(tmp_path, account, words):
    path = tmp_path / "c.toml"
    path.write_text(f'[relay]\nhost = "127.0.0.1"\noauth2_account = "work"\n\n[[account]]\n{account}\n')
    with pytest.raises(ConfigErrors) as e:
        parse_file(str(path))
    assert "relay.oauth2_account" in str(e.value) and words in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize("keys,key,words", [
    ('user = "a"\npassword = "p"\noauth2_account = "w"', "relay.oauth2_account", "set one of"),
    ('oauth2_token_command = "x"', "relay.user", "an OAuth2 token needs a user"),
    ('user = "a"\npassword = "p"\noauth2_mechanism = "xoauth2"', "relay.oauth2_mechanism", "only used with"),
    ('oauth2_mechanism = "plain"\noauth2_account = "w"', "relay.oauth2_mechanism", "xoauth2"),
])
def test_relay_oauth2_config_errors_name_the_key(tmp_path, keys, key, words):
    path = tmp_path / "c.toml"
    path.write_text(f'[relay]\nhost = "127.0.0.1"\n{keys}\n')
    with pytest.raises(ConfigErrors) as e:
        parse_file(str(path))
    assert key in str(e.value) and words in str(e.value) and str(path) in str(e.value)


def test_submission_introspection_config_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[submission]\noauth2_client_id = "x"\n')
    with pytest.raises(ConfigErrors) as e:
        parse_file(str(path))
    assert "submission.oauth2_client_id" in str(e.value) and "oauth2_introspection_url" in str(e.value)
