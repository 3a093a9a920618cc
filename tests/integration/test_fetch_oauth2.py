"""OAuth2 logins (XOAUTH2, OAUTHBEARER) against Dovecot's oauth2 passdb, with the built-in refresh-token
flow against a test authorization server: tokens are cached until they expire and refreshed when the
server refuses them."""

import pytest

from conftest import make_message
from fetchsetup import FetchSetup, counts, originals, lf


def oauth_account(setup, provider, protocol="imap", **keys):
    return setup.account("gmail", protocol, "implicit", oauth2_token_url=provider.token_url,
                         oauth2_client_id=provider.client_id, oauth2_client_secret=provider.client_secret,
                         oauth2_refresh_token="refresh-1", **keys)


@pytest.mark.parametrize("protocol,mechanism", [("imap", "xoauth2"), ("imap", "oauthbearer"),
                                                ("pop3", "xoauth2"), ("pop3", "oauthbearer")])
def test_refresh_flow_logs_in_and_caches_the_token(tmp_path, dovecot_oauth2, oauth2_provider,
                                                   fetchdeliver_cmd, protocol, mechanism):
    setup = FetchSetup(tmp_path, dovecot_oauth2, fetchdeliver_cmd)
    oauth_account(setup, oauth2_provider, protocol, oauth2_mechanism=mechanism)
    first = make_message(1, "oauth")
    dovecot_oauth2.append("alice", first)
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "gmail") == (1, 1, 0, 0)
    assert f"method={mechanism.upper()}" in dovecot_oauth2.read_log()
    assert len(oauth2_provider.grants) == 1
    assert oauth2_provider.grants[0]["refresh_token"] == "refresh-1"

    # The access token is still valid: the next connect uses the cached one.
    second = make_message(2, "oauth")
    dovecot_oauth2.append("alice", second)
    r = setup.run()
    assert counts(r.stdout, "gmail") == (1, 1, 0, 0), r.stderr
    assert len(oauth2_provider.grants) == 1

    # The server stops accepting it before its announced expiry: refresh once and carry on.
    oauth2_provider.revoke_all()
    third = make_message(3, "oauth")
    dovecot_oauth2.append("alice", third)
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "gmail") == (1, 1, 0, 0)
    assert len(oauth2_provider.grants) == 2
    assert sorted(originals(setup.delivered())) == sorted(lf([first, second, third]))


def test_token_about_to_expire_is_refreshed_at_connect(tmp_path, dovecot_oauth2, oauth2_provider,
                                                       fetchdeliver_cmd):
    oauth2_provider.expires_in = 30     # below the refresh margin: never worth reusing
    setup = FetchSetup(tmp_path, dovecot_oauth2, fetchdeliver_cmd)
    oauth_account(setup, oauth2_provider)
    for _ in range(2):
        r = setup.run()
        assert r.returncode == 0, r.stderr
    assert len(oauth2_provider.grants) == 2


def test_rotated_refresh_token_is_used_next_time(tmp_path, dovecot_oauth2, oauth2_provider, fetchdeliver_cmd):
    oauth2_provider.rotate = True
    oauth2_provider.expires_in = 30
    setup = FetchSetup(tmp_path, dovecot_oauth2, fetchdeliver_cmd)
    oauth_account(setup, oauth2_provider)
    for _ in range(3):
        r = setup.run()
        assert r.returncode == 0, r.stderr
    used = [g["refresh_token"] for g in oauth2_provider.grants]
    assert used[0] == "refresh-1" and len(set(used)) == 3   # each refresh used the newest one


def test_revoked_refresh_token_is_one_clear_error(tmp_path, dovecot_oauth2, oauth2_provider, fetchdeliver_cmd):
    oauth2_provider.valid_refresh = {"something-else"}
    setup = FetchSetup(tmp_path, dovecot_oauth2, fetchdeliver_cmd)
    oauth_account(setup, oauth2_provider)
    r = setup.run()
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("fetchdeliver: gmail: AUTHENTICATE XOAUTH2: OAuth2 token refresh at ")
    assert "HTTP 400: invalid_grant refresh token revoked" in lines[0]


def test_token_command(tmp_path, dovecot_oauth2, oauth2_provider, fetchdeliver_cmd):
    """oauth2_token_command: whatever prints a valid access token (here: one the provider issued)."""
    status, body = oauth2_provider._token({"grant_type": "refresh_token", "client_id": "fd-client",
                                           "client_secret": "s3cret", "refresh_token": "refresh-1"})
    assert status == 200
    setup = FetchSetup(tmp_path, dovecot_oauth2, fetchdeliver_cmd)
    setup.account("ms", "imap", "implicit", oauth2_token_command=f"echo {body['access_token']}")
    dovecot_oauth2.append("alice", make_message(1, "cmd"))
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "ms") == (1, 1, 0, 0)
