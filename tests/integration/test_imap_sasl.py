"""SASL over IMAP AUTHENTICATE (fetchdeliver/sasl.py): SCRAM-SHA-256 with scramp (a SCRAM client nobody
here wrote) through Python's imaplib, passwd-file lines written by Dovecot's own `doveadm pw`, and
OAUTHBEARER / XOAUTH2 through imapclient with a token-validating plugin backend."""

from __future__ import annotations

import base64
import imaplib
import shutil
import subprocess

import imapclient
import pytest
import scramp

from fetchdeliver.imapserver.auth import Account, PasswdFileAuthenticator, set_password
from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer
from imap_helpers import RawClient, make_server


def scram_login(port: int, user: str, password: str, mech: str = "SCRAM-SHA-256") -> imaplib.IMAP4:
    """imaplib AUTHENTICATE with scramp's client; raises imaplib.IMAP4.error on NO."""
    client = scramp.ScramClient([mech], user, password)
    steps = iter([lambda _c: client.get_client_first(),
                  lambda c: (client.set_server_first(c.decode()), client.get_client_final())[1],
                  lambda c: (client.set_server_final(c.decode()), "")[1]])
    conn = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        conn.authenticate(mech, lambda challenge: next(steps)(challenge).encode())
    except BaseException:
        conn.shutdown()
        raise
    return conn


@pytest.fixture
def srv(tmp_path):
    server, maildir, passwd = make_server(tmp_path, users={"alice": "secret", "carol": "crypted"})
    server.passwd = passwd
    yield server
    server.stop()


def _doveadm_line(password: str) -> str:
    exe = shutil.which("doveadm")
    if exe is None:
        pytest.skip("doveadm is not installed (apt-get install dovecot-core)")
    return subprocess.run([exe, "pw", "-s", "SCRAM-SHA-256", "-p", password], check=True,
                          capture_output=True, text=True, timeout=60).stdout.strip()


def test_scram_sha256_with_a_passwd_line_from_doveadm(srv):
    line = _doveadm_line("pencil")
    assert line.startswith("{SCRAM-SHA-256}4096,")
    with open(srv.passwd, "a") as f:
        f.write(f"user:{line}::::::\n")
    caps = RawClient(srv.port()).greeting
    assert b"AUTH=SCRAM-SHA-256" in caps and b"AUTH=SCRAM-SHA-1" in caps
    conn = scram_login(srv.port(), "user", "pencil")
    assert conn.state == "AUTH"
    assert conn.select("INBOX")[0] == "OK"
    conn.logout()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        scram_login(srv.port(), "user", "pencil2")
    # the same line also serves LOGIN with the password
    conn = imaplib.IMAP4("127.0.0.1", srv.port(), timeout=30)
    assert conn.login("user", "pencil")[0] == "OK"
    conn.logout()


def test_scram_with_our_passwd_and_plain_lines(srv):
    set_password(srv.passwd, "ann", "pencil", "SCRAM-SHA-256")     # what `fetchdeliver passwd -s` writes
    with open(srv.passwd, "a") as f:
        f.write("plainuser:{PLAIN}topsecret::::::\n")
    scram_login(srv.port(), "ann", "pencil").logout()
    scram_login(srv.port(), "plainuser", "topsecret").logout()
    scram_login(srv.port(), "plainuser", "topsecret", "SCRAM-SHA-1").logout()
    # a SHA256-CRYPT hash cannot serve SCRAM, an unknown user fails the same way as a wrong password
    for user, pw in (("carol", "crypted"), ("nobody", "x"), ("ann", "wrong")):
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            scram_login(srv.port(), user, pw)


def test_scram_against_dovecot_too(request, tmp_path):
    """The test's SCRAM client logs in to the real Dovecot the same way (the differential)."""
    from conftest import _start

    dc = _start(request, users={"alice": "secret"}, extra_mechanisms="scram-sha-256")
    conn = scram_login(dc.port("imap"), "alice", "secret")
    assert conn.select("INBOX")[0] == "OK"
    conn.logout()
    with pytest.raises(imaplib.IMAP4.error):
        scram_login(dc.port("imap"), "alice", "wrong")


def test_scram_malformed_and_cancelled(srv):
    r = RawClient(srv.port())
    assert r.command("a1", b"AUTHENTICATE SCRAM-SHA-256 " + base64.b64encode(b"p=tls-unique,,n=a,r=x")
                     )[-1].startswith(b"a1 BAD")
    r.send(b"a2 AUTHENTICATE SCRAM-SHA-256\r\n")
    assert r.line() == b"+ \r\n"
    r.send(base64.b64encode(b"n,,n=alice,r=abcdef") + b"\r\n")
    first = base64.b64decode(r.line()[2:])
    assert first.startswith(b"r=abcdef") and b",s=" in first and b",i=4096" in first
    r.send(b"*\r\n")
    assert r.line().startswith(b"a2 BAD")
    assert r.command("a3", b"AUTHENTICATE CRAM-MD5")[-1].startswith(b"a3 NO")
    r.close()


class TokenBackend(PasswdFileAuthenticator):
    """A plugin backend (imapserver/plugin.py) with a token validator: token "tok-USER" is USER's."""

    def validate_token(self, user: str, token: str):
        owner = token[4:] if token.startswith("tok-") else None
        entry = self.users().get(owner) if owner else None
        return Account(owner, None) if entry is not None else None


@pytest.fixture
def token_srv(tmp_path):
    _, maildir, passwd = make_server(tmp_path)
    _.stop()
    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=TokenBackend(passwd),
                       default_mail="maildir:" + maildir, login_failure_delay=0)
    server = ThreadedServer(cfg).start()
    yield server
    server.stop()


def test_oauthbearer_and_xoauth2_with_imapclient(token_srv):
    port = token_srv.port()
    c = imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30)
    assert {b"AUTH=OAUTHBEARER", b"AUTH=XOAUTH2", b"AUTH=PLAIN"} <= set(c.capabilities())
    c.oauthbearer_login("alice", "tok-alice")
    assert c.select_folder("INBOX")[b"EXISTS"] == 3
    c.logout()
    c = imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30)
    c.oauth2_login("alice", "tok-alice")
    c.logout()
    for login in (lambda c: c.oauthbearer_login("alice", "tok-nobody"),
                  lambda c: c.oauthbearer_login("bob", "tok-alice"),      # alice's token, as bob
                  lambda c: c.oauth2_login("alice", "forged")):
        c = imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30)
        with pytest.raises(imapclient.exceptions.LoginError):
            login(c)
        c.shutdown()


def test_oauthbearer_error_challenge_is_rfc7628(token_srv):
    r = RawClient(token_srv.port())
    msg = base64.b64encode(b"n,a=alice,\x01auth=Bearer bad\x01\x01")
    r.send(b"a1 AUTHENTICATE OAUTHBEARER " + msg + b"\r\n")
    line = r.line()
    assert line.startswith(b"+ ") and b'"status": "invalid_token"' in base64.b64decode(line[2:])
    r.send(base64.b64encode(b"\x01") + b"\r\n")
    assert r.line().startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    r.close()


def test_fetchdeliver_passwd_writes_a_scram_line_dovecot_verifies(tmp_path):
    import sys

    exe = shutil.which("doveadm")
    if exe is None:
        pytest.skip("doveadm is not installed (apt-get install dovecot-core)")
    path = str(tmp_path / "passwd")
    out = subprocess.run([sys.executable, "-m", "fetchdeliver", "passwd", "-f", path, "-s", "SCRAM-SHA-256",
                          "--stdin", "bob"], input="pencil\n", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    with open(path) as f:
        stored = f.read().split(":")[1]
    assert stored.startswith("{SCRAM-SHA-256}4096,")
    ok = subprocess.run([exe, "pw", "-t", stored, "-p", "pencil"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "(verified)" in ok.stdout, ok.stdout + ok.stderr
    bad = subprocess.run([exe, "pw", "-t", stored, "-p", "pencil!"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
