"""COMPRESS=DEFLATE (RFC 4978) through Python's imaplib with zlib on the client side."""

from __future__ import annotations

import imaplib
import zlib

import pytest

from imap_helpers import MULTIPART, RawClient, make_server

imaplib.Commands.setdefault("COMPRESS", ("AUTH", "SELECTED"))   # RFC 4978; imaplib does not know it


class DeflateIMAP4(imaplib.IMAP4):
    """imaplib with RFC 4978 on top: raw DEFLATE both ways once COMPRESS DEFLATE is answered OK."""

    compressing = False

    def compress(self) -> None:
        typ, data = self._simple_command("COMPRESS", "DEFLATE")
        assert typ == "OK", data
        self._z_out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._z_in = zlib.decompressobj(-15)
        self._inbuf = b""
        self.compressed_in = self.compressed_out = 0
        self.compressing = True

    def send(self, data: bytes) -> None:
        if self.compressing:
            data = self._z_out.compress(data) + self._z_out.flush(zlib.Z_SYNC_FLUSH)
            self.compressed_out += len(data)
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise imaplib.IMAP4.abort("connection closed")
        self.compressed_in += len(chunk)
        self._inbuf += self._z_in.decompress(chunk)

    def read(self, size: int) -> bytes:
        if not self.compressing:
            return super().read(size)
        while len(self._inbuf) < size:
            self._fill()
        out, self._inbuf = self._inbuf[:size], self._inbuf[size:]
        return out

    def readline(self) -> bytes:
        if not self.compressing:
            return super().readline()
        while b"\n" not in self._inbuf:
            self._fill()
        i = self._inbuf.index(b"\n") + 1
        out, self._inbuf = self._inbuf[:i], self._inbuf[i:]
        return out


@pytest.fixture
def srv(tmp_path):
    server, maildir, passwd = make_server(tmp_path, n_plain=20, extra=[MULTIPART])
    yield server
    server.stop()


def _bodies(conn) -> list[bytes]:
    typ, data = conn.fetch("1:*", "(BODY.PEEK[])")
    assert typ == "OK"
    return [part[1] for part in data if isinstance(part, tuple)]


def test_compress_deflate_fetch_append_and_capabilities(srv):
    plain = imaplib.IMAP4("127.0.0.1", srv.port(), timeout=30)
    assert "COMPRESS=DEFLATE" not in plain.capabilities     # offered after login, as Dovecot
    plain.login("alice", "secret")
    plain.select("INBOX")
    want = _bodies(plain)
    plain.logout()

    conn = DeflateIMAP4("127.0.0.1", srv.port(), timeout=30)
    conn.login("alice", "secret")
    typ, caps = conn.capability()
    assert b"COMPRESS=DEFLATE" in caps[0].split()
    conn.compress()
    typ, caps = conn.capability()
    assert typ == "OK" and b"COMPRESS=DEFLATE" not in caps[0].split()
    assert conn.select("INBOX")[0] == "OK"
    assert _bodies(conn) == want and len(want) == 21
    # the answers really came compressed: the client inflated far more than it received
    assert conn.compressed_in < sum(len(b) for b in want) / 2
    big = b"From: a@example.org\r\nSubject: big\r\n\r\n" + b"line of text to compress\r\n" * 40000
    assert conn.append("INBOX", None, None, big)[0] == "OK"
    typ, data = conn.fetch("22", "(BODY.PEEK[])")
    assert data[0][1] == big
    typ, data = conn._simple_command("COMPRESS", "DEFLATE")
    assert typ == "NO" and b"COMPRESSIONACTIVE" in data[0]
    conn.logout()


def test_compress_before_login_and_unknown_mechanism(srv):
    r = RawClient(srv.port())
    assert r.command("a1", b"COMPRESS DEFLATE")[-1].startswith(b"a1 BAD")
    assert r.command("a2", b"LOGIN alice secret")[-1].startswith(b"a2 OK")
    assert r.command("a3", b"COMPRESS LZ4")[-1].startswith(b"a3 BAD")
    r.close()


def test_garbage_and_a_deflate_bomb_end_only_that_connection(srv):
    # not a DEFLATE stream at all
    r = RawClient(srv.port())
    assert r.command("a1", b"LOGIN alice secret")[-1].startswith(b"a1 OK")
    assert r.command("a2", b"COMPRESS DEFLATE")[-1].startswith(b"a2 OK")
    r.send(b"\xff" * 64)
    r.sock.settimeout(30)
    assert r.f.read() == b""      # the server drops the connection without a word (EOF)
    r.close()
    # 200 MB of one line in ~200 KB compressed: refused as a too-long line, not held in memory
    r = RawClient(srv.port())
    assert r.command("b1", b"LOGIN alice secret")[-1].startswith(b"b1 OK")
    assert r.command("b2", b"COMPRESS DEFLATE")[-1].startswith(b"b2 OK")
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"A" * (1 << 20)
    try:
        for _ in range(200):
            r.send(z.compress(chunk))
        r.send(z.flush(zlib.Z_SYNC_FLUSH))
    except OSError:
        pass        # the server may close first
    r.close()
    # everyone else is still served
    conn = imaplib.IMAP4("127.0.0.1", srv.port(), timeout=30)
    conn.login("alice", "secret")
    assert conn.select("INBOX")[0] == "OK"
    conn.logout()


def test_mbsync_syncs_over_compress(tmp_path):
    """isync 1.4 sends COMPRESS DEFLATE whenever the server offers it: a real client of the wrapper."""
    import os
    import shutil
    import subprocess

    from test_imap_mbsync import _conf, _local

    if shutil.which("mbsync") is None:
        pytest.skip("mbsync not installed (apt-get install isync)")
    server, maildir, _passwd = make_server(tmp_path, n_plain=200)
    try:
        local = str(tmp_path / "local")
        os.makedirs(local)
        conf = str(tmp_path / "mbsyncrc")
        _conf(conf, server.port(), local)
        r = subprocess.run(["mbsync", "-Dn", "-c", conf, "-a"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"mbsync failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        out = r.stdout + r.stderr
        assert "COMPRESS DEFLATE" in out and "OK DEFLATE active" in out, out[-3000:]
        got = _local(os.path.join(local, "INBOX"))
        assert len(got) == 200 and "m number 200" in got
    finally:
        server.stop()
