"""`fetchdeliver oauth2 authorize ACCOUNT` against a real authorization server on 127.0.0.1 (the test
provider, speaking RFC 8628 device grants and authorization codes with PKCE), then a real Dovecot login
(XOAUTH2 through its oauth2 passdb) with the stored refresh token."""

from __future__ import annotations

import glob
import os
import stat
import subprocess
import urllib.request

import pytest
from conftest import make_message
from fetchsetup import FetchSetup, counts


def account(setup, provider, **keys):
    return setup.account("m365", "imap", "implicit", oauth2_authorize_url=provider.authorize_url,
                         oauth2_device_url=provider.device_url, oauth2_token_url=provider.token_url,
                         oauth2_client_id=provider.client_id, oauth2_client_secret=provider.client_secret,
                         **keys)


def authorize(setup, *args) -> subprocess.Popen:
    return subprocess.Popen(setup.cmd + ["oauth2", "authorize", "m365", "-c", setup.config, "--timeout", "60",
                                         *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(p: subprocess.Popen, marker: str) -> str:
    lines = []
    while True:
        line = p.stdout.readline()
        if not line:
            raise AssertionError(f"exited before printing {marker!r}: {''.join(lines)}{p.stderr.read()}")
        lines.append(line)
        if marker in line:
            return line


def finish(p: subprocess.Popen) -> str:
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, out + err
    return out


def fetch_one(setup, dovecot) -> None:
    dovecot.append("alice", make_message(1, "oauth-first"))
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "m365") == (1, 1, 0, 0)
    assert "method=XOAUTH2" in dovecot.read_log()


def test_device_grant_then_fetch_with_the_stored_refresh_token(tmp_path, dovecot_oauth2, oauth2_provider,
                                                               fetchdeliver_cmd):
    setup = FetchSetup(tmp_path, dovecot_oauth2, fetchdeliver_cmd)
    account(setup, oauth2_provider)
    r = setup.run()
    assert r.returncode != 0 and "run `fetchdeliver oauth2 authorize m365`" in r.stderr, r.stderr
    p = authorize(setup, "--method", "device")
    uri = read_until(p, "open ").split("open ", 1)[1].strip()
    code = read_until(p, "enter the code:").rsplit(":", 1)[1].strip()
    # The user signs in on another device and enters the code; until then the command polls (pending).
    with urllib.request.urlopen(f"{uri}?user_code={code}", timeout=10) as resp:
        assert resp.read() == b"approved"
    out = finish(p)
    assert "m365: authorized; the refresh token is stored in " in out
    (stored,) = glob.glob(os.path.join(setup.state_dir, "oauth2", "refresh-*.json"))
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o600
    grants = [g["grant_type"] for g in oauth2_provider.grants]
    assert grants[-1] == "urn:ietf:params:oauth:grant-type:device_code"
    assert "slow_down" not in out
    fetch_one(setup, dovecot_oauth2)
    assert oauth2_provider.grants[-1]["grant_type"] == "refresh_token"


def test_loopback_redirect_with_pkce_then_fetch(tmp_path, dovecot_oauth2, oauth2_provider, fetchdeliver_cmd):
    setup = FetchSetup(tmp_path, dovecot_oauth2, fetchdeliver_cmd)
    account(setup, oauth2_provider)
    p = authorize(setup, "--method", "loopback", "--no-browser")
    link = read_until(p, "/authorize?").strip()
    assert "code_challenge_method=S256" in link and "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in link
    # The browser: the provider signs the test user in and redirects to fetchdeliver's loopback listener.
    with urllib.request.urlopen(link, timeout=10) as resp:
        assert b"fetchdeliver is authorized" in resp.read()
    finish(p)
    form = [g for g in oauth2_provider.grants if g["grant_type"] == "authorization_code"][-1]
    assert len(form["code_verifier"]) >= 43
    fetch_one(setup, dovecot_oauth2)


def test_token_store_command_and_refresh_token_command(tmp_path, dovecot_oauth2, oauth2_provider,
                                                       fetchdeliver_cmd):
    vault = tmp_path / "vault"
    setup = FetchSetup(tmp_path, dovecot_oauth2, fetchdeliver_cmd)
    account(setup, oauth2_provider, oauth2_token_store_command=f"umask 077; cat > {vault}",
            oauth2_refresh_token_command=f"cat {vault}")
    p = authorize(setup, "--method", "device")
    uri = read_until(p, "open ").split("open ", 1)[1].strip()
    code = read_until(p, "enter the code:").rsplit(":", 1)[1].strip()
    urllib.request.urlopen(f"{uri}?user_code={code}", timeout=10).read()
    out = finish(p)
    assert "stored in oauth2_token_store_command" in out
    assert vault.read_text().startswith("rt-")
    assert not glob.glob(os.path.join(setup.state_dir, "oauth2", "refresh-*.json"))
    fetch_one(setup, dovecot_oauth2)


def test_a_wrong_pkce_verifier_is_refused_by_the_provider(oauth2_provider):
    # The provider really checks PKCE: an authorization code is worthless without its verifier.
    import json
    import urllib.parse

    from fetchdeliver.oauth2_authorize import pkce_pair

    verifier, challenge = pkce_pair()
    q = urllib.parse.urlencode({"response_type": "code", "client_id": oauth2_provider.client_id,
                                "redirect_uri": "http://127.0.0.1:9/", "code_challenge": challenge,
                                "code_challenge_method": "S256", "state": "s"})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(f"{oauth2_provider.authorize_url}?{q}", timeout=10)
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(e.value.headers["Location"]).query)["code"][0]
    form = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code, "client_id": oauth2_provider.client_id,
                                   "redirect_uri": "http://127.0.0.1:9/", "code_verifier": verifier + "x"}).encode()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(oauth2_provider.token_url, data=form), timeout=10)
    assert json.loads(e.value.read())["error_description"] == "PKCE verification failed"
