"""passwd-file schemes: hashes made by Dovecot's `doveadm pw` verify here, and ours verify in Dovecot."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from fetchdeliver.imapserver.auth import (PasswdFileAuthenticator, hash_password, mail_location, parse_passwd,
                                          supported_schemes, verify_password)

DOVEADM = shutil.which("doveadm")
needs_doveadm = pytest.mark.skipif(DOVEADM is None, reason="doveadm not installed (dovecot-core)")


@needs_doveadm
@pytest.mark.parametrize("scheme", ["PLAIN", "SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2ID", "SSHA512"])
def test_dovecot_hashes_verify(scheme):
    if scheme in ("BLF-CRYPT", "ARGON2ID") and scheme not in supported_schemes():
        pytest.skip(f"{scheme} cannot be checked on this platform")
    r = subprocess.run([DOVEADM, "pw", "-s", scheme, "-p", "pä ss"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    hashed = r.stdout.strip()
    assert verify_password("pä ss", hashed)
    assert not verify_password("pä sS", hashed)


@needs_doveadm
@pytest.mark.parametrize("scheme", ["SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2ID"])
def test_our_hashes_verify_in_dovecot(scheme):
    if scheme not in supported_schemes():
        pytest.skip(f"{scheme} is not available on this platform")
    hashed = hash_password("secret", scheme)
    assert hashed.startswith("{" + scheme + "}")
    r = subprocess.run([DOVEADM, "pw", "-t", hashed, "-p", "secret"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "verified" in r.stdout + r.stderr


def test_scrypt_roundtrip_and_passwd_file(tmp_path):
    h = hash_password("pw", "SCRYPT")
    assert verify_password("pw", h) and not verify_password("px", h)
    users = parse_passwd(f"alice:{h}:1000:1000::/home/alice::userdb_mail=maildir:~/Mail:LAYOUT=fs\n"
                         "# comment\nbob:{PLAIN}x\n")
    assert mail_location(users["alice"]) == "maildir:/home/alice/Mail"
    assert mail_location(users["bob"]) is None
    f = tmp_path / "passwd"
    f.write_text("bob:{PLAIN}x\n")
    auth = PasswdFileAuthenticator(str(f))
    assert auth.authenticate("bob", "x").user == "bob"
    assert auth.authenticate("bob", "y") is None and auth.authenticate("carol", "x") is None
