"""One failing account gives one clear error line and a non-zero exit; the other accounts still deliver."""

import trustme
import pytest

from conftest import make_message
from fetchsetup import FetchSetup, counts, originals, lf


def bad_account(setup, dovecot, kind, protocol, tmp_path, unreachable_port):
    if kind == "wrong-password":
        return setup.account("bad", protocol, "implicit", password="not-the-password")
    if kind == "fingerprint-mismatch":
        return setup.account("bad", protocol, "implicit", ca_file=None, fingerprint="ab" * 32)
    if kind == "untrusted-ca":
        other = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        return setup.account("bad", protocol, "implicit", ca_file=str(other))
    if kind == "system-cas-only":
        return setup.account("bad", protocol, "starttls", ca_file=None)
    if kind == "unreachable":
        acc = setup.account("bad", protocol, "implicit")
        acc["port"] = unreachable_port
        setup.write()
        return acc
    if kind == "password-command-fails":
        return setup.account("bad", protocol, "implicit", password=None,
                             password_command="echo 'gpg: decryption failed' >&2; exit 2")
    raise AssertionError(kind)


EXPECTED = {
    "wrong-password": ("server said", "authentication failed"),
    "fingerprint-mismatch": ("fingerprint", "ab:ab:ab"),
    "untrusted-ca": ("certificate not trusted", "unable to get local issuer certificate"),
    "system-cas-only": ("TLS: certificate not trusted", "unable to get local issuer certificate"),
    "unreachable": ("connection refused", "127.0.0.1:"),
    "password-command-fails": ("password_command", "exit status 2: gpg: decryption failed"),
}


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_failing_account_is_reported_and_others_still_run(tmp_path, dovecot, fetchdeliver_cmd,
                                                          unreachable_port, kind, protocol):
    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd)
    bad_account(setup, dovecot, kind, protocol, tmp_path, unreachable_port)
    setup.account("good", protocol, "implicit", user="bob")
    dovecot.append("alice", make_message(1, "for-bad"))
    good = [make_message(i, "for-good") for i in range(2)]
    dovecot.append_many("bob", good)

    r = setup.run()
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr                       # one clear line
    line = lines[0]
    assert line.startswith("fetchdeliver: bad: "), line    # names the account
    for word in EXPECTED[kind]:
        assert word.lower() in line.lower(), line
    assert "Traceback" not in r.stderr
    assert "bad: " not in r.stdout                          # no summary for an account that got nothing
    assert counts(r.stdout, "good") == (2, 2, 0, 0)
    assert sorted(originals(setup.delivered())) == sorted(lf(good))
    assert len(dovecot.contents("alice")) == 1             # nothing touched on the failing side


def test_error_line_names_the_command(tmp_path, dovecot, fetchdeliver_cmd):
    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd)
    setup.account("bad", "imap", "starttls", password="nope")
    r = setup.run()
    assert r.returncode != 0
    assert r.stderr.startswith("fetchdeliver: bad: LOGIN: server said: [AUTHENTICATIONFAILED]"), r.stderr
    setup.accounts[0]["protocol"] = "pop3"
    setup.accounts[0]["port"] = dovecot.port("pop3")
    setup.write()
    r = setup.run()
    assert r.stderr.startswith("fetchdeliver: bad: PASS: server said: -ERR [AUTH] Authentication failed"), \
        r.stderr


def test_plaintext_needs_tls_none_spelled_out(tmp_path, dovecot, fetchdeliver_cmd):
    """Without `tls`, port 143 means STARTTLS, never plaintext: a server without STARTTLS is refused."""
    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd)
    acc = setup.account("work", "imap", "starttls")
    del acc["tls"]
    setup.write()
    dovecot.append("alice", make_message(1, "tls"))
    r = setup.run()
    # The port is not 143, so the default is implicit TLS, which the plain listener cannot speak.
    assert r.returncode != 0
    assert r.stderr.startswith("fetchdeliver: work: TLS connect: "), r.stderr
    assert setup.delivered() == []
