"""[[account]] validation: the documented shape loads, every mistake names file, account and key."""

import os
import stat

import pytest

from fetchdeliver.sources.accounts import Account, from_settings
from fetchdeliver.sources.credentials import SecretError, oauthbearer_string, xoauth2_string
from fetchdeliver.config import ConfigError, Settings, parse_file

DOCUMENTED = """
[delivery]
maildir = "~/Mail"
rules = "~/.config/fetchdeliver/rules.sieve"
state_dir = "~/.local/state/fetchdeliver"

[[account]]
name = "work"
protocol = "imap"
host = "imap.example.com"
port = 993
tls = "implicit"
user = "me@example.com"
password_command = "pass show mail/work"
folders = ["INBOX"]
after = "keep"
"""


def write(tmp_path, text):
    p = tmp_path / "config.toml"
    p.write_text(text)
    return str(p)


def account_config(tmp_path, **keys):
    base = {"name": "work", "protocol": "imap", "host": "mail.example.com", "user": "me",
            "password": "pw"}
    base.update(keys)
    base = {k: v for k, v in base.items() if v is not None}
    lines = ["[[account]]"]
    for k, v in base.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, int):
            lines.append(f"{k} = {v}")
        elif isinstance(v, list):
            lines.append(f"{k} = [{', '.join(repr(x).replace(chr(39), chr(34)) for x in v)}]")
        else:
            lines.append(f'{k} = "{v}"')
    return write(tmp_path, "\n".join(lines) + "\n")


def test_documented_example_loads(tmp_path):
    path = write(tmp_path, DOCUMENTED)
    data = parse_file(path)
    (acc,) = from_settings(Settings(data, path))
    assert (acc.name, acc.protocol, acc.host, acc.port, acc.tls) == ("work", "imap", "imap.example.com", 993,
                                                                     "implicit")
    assert acc.folders == ["INBOX"] and acc.after == "keep" and acc.initial == "all"
    assert acc.rules == os.path.expanduser("~/.config/fetchdeliver/rules.sieve")   # the global default
    assert acc.recipient == "me@example.com"
    assert acc.default_mailbox == "INBOX"


@pytest.mark.parametrize("protocol,tls,port", [("imap", None, 993), ("imap", "starttls", 143),
                                               ("pop3", None, 995), ("pop3", "starttls", 110),
                                               ("pop3", "none", 110)])
def test_default_ports(tmp_path, protocol, tls, port):
    data = parse_file(account_config(tmp_path, protocol=protocol, tls=tls))
    (acc,) = from_settings(Settings(data))
    assert acc.port == port


def test_without_tls_port_143_means_starttls_never_plaintext(tmp_path):
    (acc,) = from_settings(Settings(parse_file(account_config(tmp_path, port=143))))
    assert acc.tls == "starttls"


def test_move_policy(tmp_path):
    (acc,) = from_settings(Settings(parse_file(account_config(tmp_path, after="move:Archive/2025"))))
    assert acc.after == "move" and acc.move_to == "Archive/2025"


@pytest.mark.parametrize("keys,key,words", [
    ({"protocol": "smtp"}, "protocol", "must be one of"),
    ({"tls": "yes"}, "tls", "must be one of"),
    ({"port": 0}, "port", "between 1 and 65535"),
    ({"after": "archive"}, "after", "move:FOLDER"),
    ({"after": "move:"}, "after", "needs a folder"),
    ({"fingerprint": "abc"}, "fingerprint", "64 hex digits"),
    ({"initial": "some"}, "initial", "must be one of"),
    ({"folders": []}, "folders", "at least one"),
    ({"host": "mail example"}, "host", "not a host"),
    ({"hostname": "x"}, "hostname", "unknown key"),
    ({"oauth2_token_url": "ftp://x"}, "oauth2_token_url", "http(s) URL"),
])
def test_bad_values_name_the_key(tmp_path, keys, key, words):
    path = account_config(tmp_path, **keys)
    with pytest.raises(ConfigError) as e:
        parse_file(path)
    text = str(e.value)
    assert path in text and f"account[0] (work).{key}" in text and words in text, text


@pytest.mark.parametrize("keys,key,words", [
    ({"protocol": "pop3", "after": "mark-seen"}, "after", 'POP3 accounts take "keep" or "delete"'),
    ({"protocol": "pop3", "after": "move:X"}, "after", "POP3"),
    ({"protocol": "pop3", "folders": ["INBOX"]}, "folders", "POP3 has no folders"),
    ({"apop": True}, "apop", "POP3 login"),
    ({"password": None}, "password", "no secret"),
    ({"password_command": "pass x"}, "password", "more than one secret"),
    ({"password": None, "oauth2_token_url": "https://t", "oauth2_client_id": "c"}, "oauth2_refresh_token",
     "missing: oauth2_refresh_token"),
    ({"oauth2_client_secret": "s"}, "oauth2_client_secret", "refresh-token flow"),
    ({"tls": "none", "fingerprint": "ab" * 32}, "fingerprint", 'tls = "none"'),
    ({"tls": "none", "ca_file": "/ca.pem"}, "ca_file", 'tls = "none"'),
    ({"oauth2_mechanism": "oauthbearer"}, "oauth2_mechanism", "only used with"),
])
def test_cross_key_rules(tmp_path, keys, key, words):
    path = account_config(tmp_path, **keys)
    with pytest.raises(ConfigError) as e:
        parse_file(path)
    text = str(e.value)
    assert f"account[0] (work).{key}" in text and words in text, text


def test_missing_required_keys_and_duplicate_names(tmp_path):
    path = write(tmp_path, '[[account]]\nname = "a"\nprotocol = "imap"\npassword = "x"\n')
    with pytest.raises(ConfigError) as e:
        parse_file(path)
    assert "account[0] (a).host: missing required key" in str(e.value)
    assert "account[0] (a).user: missing required key" in str(e.value)
    one = 'name = "a"\nprotocol = "imap"\nhost = "h"\nuser = "u"\npassword = "p"\n'
    path = write(tmp_path, f"[[account]]\n{one}\n[[account]]\n{one}")
    with pytest.raises(ConfigError) as e:
        parse_file(path)
    assert "account[1] (a).name: duplicate account name (also account[0])" in str(e.value)


def test_fingerprint_is_normalised(tmp_path):
    colons = ":".join(["AB"] * 32)
    (acc,) = from_settings(Settings(parse_file(account_config(tmp_path, fingerprint=colons))))
    assert acc.pins == ["ab" * 32] and acc.verify is False


def test_password_command_runs_at_use_and_reports_failures(tmp_path):
    acc = Account({"name": "w", "protocol": "imap", "host": "h", "user": "u",
                   "password_command": "printf 'pa ss\\nsecond line\\n'"})
    assert acc.password() == "pa ss"
    bad = Account({"name": "w", "protocol": "imap", "host": "h", "user": "u",
                   "password_command": "echo 'no such entry' >&2; exit 3"})
    with pytest.raises(SecretError) as e:
        bad.password()
    assert "exit status 3: no such entry" in str(e.value)


def test_sasl_strings():
    assert xoauth2_string("me@x.org", "tok") == b"user=me@x.org\x01auth=Bearer tok\x01\x01"
    assert oauthbearer_string("me@x.org", "tok", "imap.x.org", 993) == \
        b"n,a=me@x.org,\x01host=imap.x.org\x01port=993\x01auth=Bearer tok\x01\x01"


def test_oauth2_cache_is_private(tmp_path):
    """The access-token cache is written 0600 in the state dir (checked through a real HTTP server)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"access_token": "AT", "expires_in": 3600}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        settings = Settings({"delivery": {"state_dir": str(tmp_path / "state")}})
        acc = Account({"name": "g", "protocol": "imap", "host": "h", "user": "u",
                       "oauth2_token_url": f"http://127.0.0.1:{srv.server_address[1]}/token",
                       "oauth2_client_id": "c", "oauth2_refresh_token": "r"}, settings)
        assert acc.access_token() == "AT"
        files = list((tmp_path / "state" / "oauth2").iterdir())
        assert len(files) == 1
        assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
        assert json.loads(files[0].read_text())["access_token"] == "AT"
    finally:
        srv.shutdown()
        srv.server_close()


def test_pins_spki_verify_and_tls_min_version(tmp_path):
    import base64
    import hashlib

    import trustme
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from fetchdeliver.sources.tls import spki_der

    cert = trustme.CA().issue_cert("example.org")
    pem = cert.cert_chain_pems[0].bytes()
    c = x509.load_pem_x509_certificate(pem)
    want = c.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert spki_der(c.public_bytes(serialization.Encoding.DER)) == want
    with pytest.raises(ValueError):
        spki_der(b"\x30\x03\x02\x01\x01")
    pin = "sha256//" + base64.b64encode(hashlib.sha256(want).digest()).decode()
    (acc,) = from_settings(Settings(parse_file(account_config(
        tmp_path, fingerprint=[pin, ":".join(["CD"] * 32)], verify=True, ca_file="/ca.pem", tls_min_version="1.3"))))
    assert acc.pins == [pin, "cd" * 32] and acc.verify is True and acc.tls_min_version == "1.3"
    import ssl

    both = Account({"name": "w", "protocol": "imap", "host": "h", "user": "u", "password": "p",
                    "fingerprint": [pin], "verify": True, "tls_min_version": "1.3"})
    ctx = both.ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    pinned_only = Account({"name": "w", "protocol": "imap", "host": "h", "user": "u", "password": "p",
                           "fingerprint": [pin]})
    ctx = pinned_only.ssl_context()
    assert ctx.verify_mode == ssl.CERT_NONE and ctx.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("keys,key,words", [
    ({"fingerprint": "sha256//abc"}, "fingerprint", "SPKI pin sha256//BASE64"),
    ({"fingerprint": []}, "fingerprint", "non-empty list"),
    ({"verify": False}, "verify", "needs a fingerprint pin"),
    ({"tls_min_version": "1.1"}, "tls_min_version", "must be one of"),
])
def test_bad_tls_keys(tmp_path, keys, key, words):
    path = account_config(tmp_path, **keys)
    with pytest.raises(ConfigError) as e:
        parse_file(path)
    assert f"account[0] (work).{key}" in str(e.value) and words in str(e.value), str(e.value)


@pytest.mark.parametrize("keys,key,words", [
    ({"password": None, "oauth2_provider": "gmail"}, "oauth2_client_id", "your own oauth2_client_id"),
    ({"password": None, "oauth2_authorize_url": "https://a/auth", "oauth2_client_id": "c"}, "oauth2_token_url",
     "oauth2_provider"),
    ({"password": None, "oauth2_provider": "outlook"}, "oauth2_provider", "must be one of"),
    ({"oauth2_token_store_command": "pass insert x"}, "oauth2_token_store_command", "only used with"),
    ({"oauth2_provider": "microsoft", "oauth2_client_id": "c"}, "password", "more than one secret"),
])
def test_oauth2_authorize_keys(tmp_path, keys, key, words):
    path = account_config(tmp_path, **keys)
    with pytest.raises(ConfigError) as e:
        parse_file(path)
    assert f"account[0] (work).{key}" in str(e.value) and words in str(e.value), str(e.value)


def test_oauth2_presets_and_stored_grant(tmp_path):
    (acc,) = from_settings(Settings(parse_file(account_config(
        tmp_path, password=None, oauth2_provider="microsoft", oauth2_client_id="c"))))
    ep = acc.oauth2_endpoints()
    assert ep["device_url"].startswith("https://login.microsoftonline.com/") and "offline_access" in ep["scope"]
    assert acc.uses_oauth2 and acc.uses_oauth2_flow
    with pytest.raises(SecretError) as e:
        acc.refresh_token()
    assert "run `fetchdeliver oauth2 authorize work`" in str(e.value)
