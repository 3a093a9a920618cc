"""SASL SCRAM-SHA-256 over ManageSieve (RFC 5804) with scramp's client: ours and Pigeonhole's, the same way."""

from __future__ import annotations

import base64

import pytest
import scramp
from dovecot import DovecotUnavailable
from managesieve_support import SieveClient, SieveDovecot

from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password
from fetchdeliver.managesieve.server import ServerConfig, ThreadedServer


def scram_login(port: int, user: str, password: str):
    """(reply, challenges seen): AUTHENTICATE "SCRAM-SHA-256" with an initial response."""
    c = SieveClient(port)
    client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
    first = base64.b64encode(client.get_client_first().encode()).decode()
    c.send(f'AUTHENTICATE "SCRAM-SHA-256" "{first}"\r\n'.encode())
    server_first = c._full_line()
    assert server_first.startswith(b'"'), server_first
    client.set_server_first(base64.b64decode(server_first.strip(b'"')).decode())
    c.send(b'"' + base64.b64encode(client.get_client_final().encode()) + b'"\r\n')
    line = c._full_line()
    if line.startswith(b'"'):          # the server signature as a last challenge
        client.set_server_final(base64.b64decode(line.strip(b'"')).decode())
        c.send(b'""\r\n')
        return c, c.read_reply()
    c.buf = line + b"\r\n" + c.buf
    reply = c.read_reply()
    if reply.kind == "OK" and reply.code and reply.code.startswith("SASL"):   # success data in OK (SASL "...")
        client.set_server_final(base64.b64decode(reply.code.split('"')[1]).decode())
    return c, reply


def test_scram_login_ours_and_pigeonhole(tmp_path):
    home = tmp_path / "home" / "alice"
    home.mkdir(parents=True)
    passwd = str(tmp_path / "passwd")
    set_password(passwd, "alice", "secret", "SCRAM-SHA-256")
    with open(passwd) as f:
        line = f.read().strip().rstrip(":")
    with open(passwd, "w") as f:
        f.write(f"{line}::::{home}::\n")
    srv = ThreadedServer(ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                                      login_failure_delay=0)).start()
    try:
        c, reply = scram_login(srv.port(), "alice", "secret")
        assert reply.kind == "OK", reply
        assert c.cmd(b"LISTSCRIPTS").kind == "OK"
        c.close()
        c, reply = scram_login(srv.port(), "alice", "wrong")
        assert reply.kind == "NO"
        c.close()
    finally:
        srv.stop()
    try:
        dc = SieveDovecot({"alice": "secret"}, extra_mechanisms="scram-sha-256")
    except DovecotUnavailable as e:
        pytest.skip(str(e))
    try:
        dc.start()
        c, reply = scram_login(dc.port("sieve"), "alice", "secret")
        assert reply.kind == "OK", reply
        c.close()
    finally:
        dc.cleanup()
