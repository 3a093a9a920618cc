"""TLS pinning and versions against the real Dovecot (trustme certificates): several pins, SHA-256
certificate fingerprints and SPKI pins (`sha256//BASE64`), a pin together with chain verification
(`verify = true`), and `tls_min_version` (refused by a real `openssl s_server` that stops at TLS 1.2)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import subprocess
import time

import pytest
from conftest import make_message
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from dovecot import free_ports
from fetchsetup import FetchSetup, counts, lf, originals


def spki_pin(dc) -> str:
    cert = x509.load_pem_x509_certificate(dc.cert.cert_chain_pems[0].bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode()


WRONG_FP = ":".join(["AB"] * 32)
WRONG_SPKI = "sha256//" + base64.b64encode(b"\x01" * 32).decode()


def _run(tmp_path, dc, cmd, protocol, **keys):
    setup = FetchSetup(tmp_path, dc, cmd)
    setup.account("tls", protocol, "implicit", **keys)
    raw = make_message(1, f"tls-{protocol}")
    dc.append("alice", raw)
    return setup, setup.run(), raw


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_list_of_pins_any_matching_spki_or_fingerprint(tmp_path, dovecot, fetchdeliver_cmd, protocol):
    setup, r, raw = _run(tmp_path, dovecot, fetchdeliver_cmd, protocol, ca_file=None,
                         fingerprint=[WRONG_FP, spki_pin(dovecot)])
    assert r.returncode == 0, r.stderr
    assert counts(r.stdout, "tls") == (1, 1, 0, 0) and originals(setup.delivered()) == [lf(raw)]
    # The certificate's own fingerprint, in a list after a wrong SPKI pin, works as well.
    setup.accounts[0]["fingerprint"] = [WRONG_SPKI, dovecot.fingerprint]
    setup.write()
    r = setup.run()
    assert r.returncode == 0, r.stderr


def test_no_pin_matching_is_refused_naming_what_the_server_has(tmp_path, dovecot, fetchdeliver_cmd):
    setup, r, _ = _run(tmp_path, dovecot, fetchdeliver_cmd, "imap", ca_file=None, fingerprint=[WRONG_FP, WRONG_SPKI])
    assert r.returncode != 0 and setup.count_delivered() == 0
    line = r.stderr.strip()
    assert line.startswith("fetchdeliver: tls: TLS: the server's certificate has SHA-256 fingerprint "), line
    assert spki_pin(dovecot) in line and WRONG_SPKI in line and "neither is pinned" in line, line


def test_pin_with_verify_true_also_needs_a_trusted_chain(tmp_path, dovecot, fetchdeliver_cmd):
    # Right pin, but verify = true and the test CA is not among the system CAs: refused.
    setup, r, _ = _run(tmp_path, dovecot, fetchdeliver_cmd, "imap", ca_file=None, verify=True,
                       fingerprint=spki_pin(dovecot))
    assert r.returncode != 0 and "certificate not trusted" in r.stderr, r.stderr
    assert setup.count_delivered() == 0
    # Right pin and a trusted chain: delivered.
    setup.accounts[0]["ca_file"] = dovecot.ca_file
    setup.write()
    r = setup.run()
    assert r.returncode == 0, r.stderr
    assert setup.count_delivered() == 1
    # Trusted chain but the wrong pin: refused (the pin is checked on top of the chain).
    dovecot.append("alice", make_message(2, "tls-more"))
    setup.accounts[0]["fingerprint"] = WRONG_SPKI
    setup.write()
    r = setup.run()
    assert r.returncode != 0 and "neither is pinned" in r.stderr, r.stderr
    assert setup.count_delivered() == 1


def test_tls_min_version_1_3_against_dovecot(tmp_path, dovecot, fetchdeliver_cmd):
    setup, r, raw = _run(tmp_path, dovecot, fetchdeliver_cmd, "imap", tls_min_version="1.3")
    assert r.returncode == 0, r.stderr
    assert originals(setup.delivered()) == [lf(raw)]


@contextlib.contextmanager
def tls12_only_server(dc):
    """`openssl s_server` with Dovecot's test certificate, speaking at most TLS 1.2."""
    port = free_ports(1)[0]
    p = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", dc.cert_file,
                          "-key", dc.cert_file, "-tls1_2", "-quiet"], stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            assert p.poll() is None and time.monotonic() < deadline, "openssl s_server did not start"
            time.sleep(0.05)  # polling for readiness
        yield port
    finally:
        p.kill()
        p.wait(10)


def test_tls_min_version_refuses_a_server_stopping_at_tls_1_2(tmp_path, dovecot, fetchdeliver_cmd):
    if not os.path.exists("/usr/bin/openssl"):
        pytest.skip("openssl is not installed")
    with tls12_only_server(dovecot) as port:
        setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd)
        setup.account("tls", "imap", "implicit", port=port, tls_min_version="1.3", timeout=10)
        r = setup.run(timeout=60)
    assert r.returncode != 0
    line = r.stderr.strip()
    assert line.startswith("fetchdeliver: tls: TLS connect: TLS failed: "), line
    assert "version" in line.lower() or "protocol" in line.lower(), line
