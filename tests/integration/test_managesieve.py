"""ManageSieve (RFC 5804): the real `sieve-connect` against `fetchdeliver managesieve`, deliveries that
follow the activated script (deliver, LMTP), a differential session against Pigeonhole's
dovecot-managesieved, and protocol errors that leave the server serving."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time

import pytest
from managesieve_support import SieveClient, SieveDovecot, literal

from fetchdeliver.managesieve.server import ServerConfig, ThreadedServer
from fetchdeliver.managesieve.storage import ScriptError, ScriptStore

pytestmark = pytest.mark.timeout(120)

FOLDER_SCRIPT = b'require "fileinto";\nif header :contains "subject" "invoice" {\n  fileinto "Invoices";\n}\n'
OTHER_SCRIPT = b'require "fileinto";\nif header :contains "subject" "invoice" {\n  fileinto "Bills";\n}\n'
BROKEN_SCRIPT = b'require "fileinto";\nif header :contains "subject" {\n  fileinto "X";\n}\n'


def _env():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return dict(os.environ, PYTHONPATH=root)


def _passwd(tmp_path, users: dict[str, str]) -> str:
    path = tmp_path / "passwd"
    lines = []
    for user, pw in users.items():
        home = tmp_path / "home" / user
        home.mkdir(parents=True, exist_ok=True)
        lines.append(f"{user}:{{PLAIN}}{pw}::::{home}::\n")
    path.write_text("".join(lines))
    return str(path)


def _new(folder) -> list[str]:
    d = os.path.join(str(folder), "new")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def _wait(cond, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def server(tmp_path):
    """An in-process server for alice/secret (home tmp_path/home/alice), 3 scripts of 200 bytes at most."""
    passwd = _passwd(tmp_path, {"alice": "secret", "bob": "pw2"})
    from fetchdeliver.imapserver.auth import PasswdFileAuthenticator

    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                       login_failure_delay=0, max_scripts=3, max_script_size=200)
    srv = ThreadedServer(cfg).start()
    yield srv
    srv.stop()


# -- sieve-connect, then deliveries follow the script --------------------------------------------------

def _sieve_connect(port: int, *args: str, password: str = "secret") -> subprocess.CompletedProcess:
    exe = shutil.which("sieve-connect")
    if exe is None:
        pytest.skip("sieve-connect is not installed (apt-get install sieve-connect)")
    return subprocess.run([exe, "--server", "127.0.0.1", "--port", str(port), "--user", "alice",
                           "--passwordfd", "0", "--clearchan", "--notlsverify", *args],
                          input=password + "\n", capture_output=True, text=True, timeout=60)


def _deliver(config: str, raw: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fetchdeliver", "deliver", "-c", config, "-a", "alice@example.org"],
                          input=raw, capture_output=True, timeout=60, env=_env())


def test_sieve_connect_uploads_checks_activates_and_deliver_follows(tmp_path):
    passwd = _passwd(tmp_path, {"alice": "secret"})
    home = tmp_path / "home" / "alice"
    maildir = tmp_path / "Maildir"
    conf = tmp_path / "config.toml"
    conf.write_text(f'[delivery]\nmaildir = "{maildir}"\nrules = "{home}/.dovecot.sieve"\n'
                    f'state_dir = "{tmp_path / "state"}"\n\n'
                    f'[managesieve]\npasswd_file = "{passwd}"\nlogin_failure_delay = "0s"\n')
    proc = subprocess.Popen([sys.executable, "-m", "fetchdeliver", "managesieve", "-c", str(conf),
                             "--listen", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True, env=_env())
    try:
        line = proc.stderr.readline()
        assert "listening on 127.0.0.1:" in line, line
        port = int(line.rsplit(":", 1)[1])
        invoice = b"From: shop@example.org\nTo: alice@example.org\nSubject: invoice 42\n\nPay up.\n"

        # No active script yet: delivery keeps the message in INBOX, quietly.
        r = _deliver(str(conf), invoice)
        assert r.returncode == 0, r.stderr
        assert len(_new(maildir)) == 1 and b"rules not used" not in r.stderr

        local = tmp_path / "filter.sieve"
        local.write_bytes(FOLDER_SCRIPT)
        r = _sieve_connect(port, "--checkscript", "--localsieve", str(local))
        assert r.returncode == 0, r.stdout + r.stderr
        r = _sieve_connect(port, "--upload", "--localsieve", str(local), "--remotesieve", "mine")
        assert r.returncode == 0, r.stdout + r.stderr
        r = _sieve_connect(port, "--activate", "--remotesieve", "mine")
        assert r.returncode == 0, r.stdout + r.stderr
        r = _sieve_connect(port, "--list")
        assert r.returncode == 0 and "mine" in r.stdout, r.stdout + r.stderr
        # Pigeonhole's layout: the script file and the active link to it.
        assert (home / "sieve" / "mine.sieve").read_bytes() == FOLDER_SCRIPT
        assert os.readlink(home / ".dovecot.sieve") == "sieve/mine.sieve"

        r = _deliver(str(conf), invoice)
        assert r.returncode == 0, r.stderr
        assert len(_new(maildir / ".Invoices")) == 1 and len(_new(maildir)) == 1

        # A script with an error: refused with line and column, never stored, the active one stays.
        bad = tmp_path / "bad.sieve"
        bad.write_bytes(BROKEN_SCRIPT)
        r = _sieve_connect(port, "--upload", "--localsieve", str(bad), "--remotesieve", "mine")
        assert r.returncode != 0
        assert "mine:2:" in r.stdout + r.stderr, r.stdout + r.stderr
        assert (home / "sieve" / "mine.sieve").read_bytes() == FOLDER_SCRIPT
        r = _sieve_connect(port, "--checkscript", "--localsieve", str(bad))
        assert r.returncode != 0 and "script:2:" in r.stdout + r.stderr, r.stdout + r.stderr

        # Replacing the active script is picked up by the next delivery.
        local.write_bytes(OTHER_SCRIPT)
        r = _sieve_connect(port, "--upload", "--localsieve", str(local), "--remotesieve", "mine")
        assert r.returncode == 0, r.stdout + r.stderr
        r = _deliver(str(conf), invoice)
        assert r.returncode == 0, r.stderr
        assert len(_new(maildir / ".Bills")) == 1

        r = _sieve_connect(port, "--deactivate")
        assert r.returncode == 0, r.stdout + r.stderr
        assert not os.path.lexists(home / ".dovecot.sieve")
        r = _sieve_connect(port, "--download", "--remotesieve", "mine", "--localsieve", str(tmp_path / "got"))
        assert r.returncode == 0 and (tmp_path / "got").read_bytes() == OTHER_SCRIPT, r.stdout + r.stderr
        r = _sieve_connect(port, "--delete", "--remotesieve", "mine")
        assert r.returncode == 0, r.stdout + r.stderr
        assert not (home / "sieve" / "mine.sieve").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_lmtp_server_follows_activation_without_restart(tmp_path, server):
    from lmtp_support import Server, write_config

    home = tmp_path / "home" / "alice"
    maildir = tmp_path / "alice-mail"
    cfg = write_config(tmp_path, f"""
        [lmtp]
        listen = "127.0.0.1:0"

        [[recipient]]
        address = "alice@example.org"
        maildir = "{maildir}"
        rules = "{home}/.dovecot.sieve"
    """)
    lmtp = Server(cfg)
    try:
        def send(i: int) -> None:
            with smtplib.LMTP("127.0.0.1", lmtp.port) as c:
                c.sendmail("shop@example.org", ["alice@example.org"],
                           f"From: shop@example.org\r\nSubject: invoice {i}\r\n\r\nbody\r\n".encode())

        send(1)
        assert len(_new(maildir)) == 1
        c = SieveClient(server.port())
        assert c.login("alice", "secret").kind == "OK"
        assert c.cmd(b'PUTSCRIPT "f" ' + literal(FOLDER_SCRIPT)).kind == "OK"
        assert c.cmd(b'SETACTIVE "f"').kind == "OK"
        send(2)
        assert len(_new(maildir / ".Invoices")) == 1
        assert c.cmd(b'PUTSCRIPT "f" ' + literal(OTHER_SCRIPT)).kind == "OK"
        send(3)
        assert len(_new(maildir / ".Bills")) == 1
        assert c.cmd(b'PUTSCRIPT "g" ' + literal(FOLDER_SCRIPT)).kind == "OK"
        assert c.cmd(b'SETACTIVE "g"').kind == "OK"
        send(4)
        assert len(_new(maildir / ".Invoices")) == 2
        # Broken by hand on disk (not through ManageSieve): logged, and the working rules stay.
        (home / "sieve" / "g.sieve").write_bytes(BROKEN_SCRIPT)
        send(5)
        assert len(_new(maildir / ".Invoices")) == 3
        assert c.cmd(b'SETACTIVE ""').kind == "OK"
        send(6)
        assert len(_new(maildir)) == 2 and len(_new(maildir / ".Invoices")) == 3
        c.cmd(b"LOGOUT")
    finally:
        lmtp.stop()


# -- the differential session against Pigeonhole ----------------------------------------------------------

SESSION = [
    b"CAPABILITY",
    b'NOOP "tag1"',
    b"NOOP",
    b"LISTSCRIPTS",
    b'PUTSCRIPT "one" ' + literal(b"keep;\r\n"),
    b'PUTSCRIPT "two" ' + literal(b'require "fileinto";\r\nfileinto "X";\r\n'),
    b'PUTSCRIPT "three" {5}\r\nkeep;',           # a synchronizing literal: accepted as it is
    b'PUTSCRIPT "four" "keep;"',                  # over the script count quota
    b'PUTSCRIPT "two" ' + literal(b"stop;\r\n"),  # replacing one is no new script
    b'PUTSCRIPT "one" ' + literal(b"#" * 300),    # over the size quota
    b'PUTSCRIPT "one" ' + literal(b"if true {\r\n  keep\r\n"),   # does not compile
    b'PUTSCRIPT "one" ' + literal(b"frobnicate;\r\n"),
    b"CHECKSCRIPT " + literal(b"keep;\r\n"),
    b"CHECKSCRIPT " + literal(b"if;\r\n"),
    b'CHECKSCRIPT "discard;"',
    b'GETSCRIPT "one"',
    b'GETSCRIPT "two"',
    b'GETSCRIPT "nope"',
    b'SETACTIVE "nope"',
    b'SETACTIVE "one"',
    b"LISTSCRIPTS",
    b'DELETESCRIPT "one"',
    b'DELETESCRIPT "nope"',
    b'RENAMESCRIPT "one" "two"',
    b'RENAMESCRIPT "nope" "x"',
    b'RENAMESCRIPT "one" "uno"',
    b"LISTSCRIPTS",
    b'GETSCRIPT "uno"',
    b'HAVESPACE "new" 10',
    b'HAVESPACE "uno" 10',
    b'HAVESPACE "uno" 100000',
    b'HAVESPACE "uno" "ten"',
    b'PUTSCRIPT "a/b" "keep;"',
    b'PUTSCRIPT "bad\x01name" "keep;"',
    b'SETACTIVE ""',
    b"LISTSCRIPTS",
    b'DELETESCRIPT "three"',
    b'DELETESCRIPT "uno"',
    b"LISTSCRIPTS",
    b"FROBNICATE",
    b'PUTSCRIPT "x"',
    b'PUTSCRIPT "x" "keep;" "extra"',
    b'PUTSCRIPT "x" "unterminated',
    b'AUTHENTICATE "PLAIN"',
    b"STARTTLS",
    b'NOOP "still here"',
    b"LOGOUT",
]


def _shape(reply) -> tuple:
    """What must agree: OK/NO/BYE, the response code's name, and the data lines (scripts, capabilities)."""
    return reply.kind, reply.code_name


def _capabilities(reply) -> dict[str, str]:
    caps = {}
    for line in reply.lines:
        parts = line.split(b'" "', 1)
        key = parts[0].strip(b'"').decode()
        caps[key] = parts[1].rstrip(b'"').decode() if len(parts) > 1 else ""
    return caps


def _run_session(port: int, user: str, password: str) -> tuple[list, list]:
    c = SieveClient(port)
    replies = [c.greeting]
    replies.append(c.login(user, password))
    for cmd in SESSION:
        replies.append(c.cmd(cmd))
    c.close()
    return replies


def test_differential_session_against_pigeonhole(tmp_path):
    from dovecot import DovecotUnavailable

    try:
        dc = SieveDovecot({"alice": "secret"}, max_scripts=3, max_script_size="200")
    except DovecotUnavailable as e:
        pytest.skip(str(e))
    try:
        dc.start()
        theirs = _run_session(dc.port("sieve"), "alice", "secret")
        their_home = dc.home("alice")
        their_files = sorted(os.listdir(os.path.join(their_home, "sieve")))
    finally:
        dc.cleanup()
    passwd = _passwd(tmp_path, {"alice": "secret"})
    from fetchdeliver.imapserver.auth import PasswdFileAuthenticator

    srv = ThreadedServer(ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                                      login_failure_delay=0, max_scripts=3, max_script_size=200)).start()
    try:
        ours = _run_session(srv.port(), "alice", "secret")
    finally:
        srv.stop()
    labels = ["greeting", "login", *SESSION]
    mismatches = []
    for label, a, b in zip(labels, ours, theirs):
        if _shape(a) != _shape(b):
            mismatches.append(f"{label!r}: ours {a!r}, Pigeonhole {b!r}")
        elif label not in (b"CAPABILITY", "greeting") and sorted(a.lines) != sorted(b.lines):
            mismatches.append(f"{label!r}: data lines differ: ours {a.lines!r}, Pigeonhole {b.lines!r}")
    assert not mismatches, "\n".join(mismatches)
    assert len(ours) == len(theirs) == len(labels)
    # Capabilities: the same SIEVE extension set and NOTIFY; SASL before login only.
    ours_caps, their_caps = _capabilities(ours[0]), _capabilities(theirs[0])
    assert set(ours_caps["SIEVE"].split()) == set(their_caps["SIEVE"].split())
    assert ours_caps["SASL"] == their_caps["SASL"] == "PLAIN LOGIN"
    for key in ("NOTIFY", "VERSION"):
        assert ours_caps[key] == their_caps[key], key
    ours_after = _capabilities(ours[labels.index(b"CAPABILITY")])
    their_after = _capabilities(theirs[labels.index(b"CAPABILITY")])
    assert "SASL" not in ours_after and "SASL" not in their_after
    assert "MAXREDIRECTS" not in ours_caps and ours_after["MAXREDIRECTS"] == their_after["MAXREDIRECTS"]
    # Compile errors name line and column, as `fetchdeliver sieve check` prints them.
    assert ours[labels.index(SESSION[10])].text.startswith(b"one:3:")
    # The same files are left in the same layout (the quota refusals stored nothing).
    our_files = sorted(os.listdir(tmp_path / "home" / "alice" / "sieve"))
    assert [f for f in our_files if f != "tmp"] == [f for f in their_files if f != "tmp"] == ["two.sieve"]


def test_pigeonhole_scripts_are_served_as_they_are(tmp_path):
    """Scripts a user stored through Pigeonhole (its files, its active link) are listed, fetched and kept active."""
    from dovecot import DovecotUnavailable

    try:
        dc = SieveDovecot({"alice": "secret"})
    except DovecotUnavailable as e:
        pytest.skip(str(e))
    try:
        dc.start()
        c = SieveClient(dc.port("sieve"))
        assert c.login("alice", "secret").kind == "OK"
        assert c.cmd(b'PUTSCRIPT "work" ' + literal(FOLDER_SCRIPT)).kind == "OK"
        assert c.cmd(b'PUTSCRIPT "home" "keep;"').kind == "OK"
        assert c.cmd(b'SETACTIVE "work"').kind == "OK"
        their_list = c.cmd(b"LISTSCRIPTS").lines
        c.cmd(b"LOGOUT")
        home = tmp_path / "home" / "alice"
        shutil.copytree(dc.home("alice"), home, symlinks=True)
    finally:
        dc.cleanup()
    (tmp_path / "passwd").write_text(f"alice:{{PLAIN}}secret::::{home}::\n")
    from fetchdeliver.imapserver.auth import PasswdFileAuthenticator

    srv = ThreadedServer(ServerConfig(listen=["127.0.0.1:0"], login_failure_delay=0,
                                      authenticator=PasswdFileAuthenticator(str(tmp_path / "passwd")))).start()
    try:
        c = SieveClient(srv.port())
        assert c.login("alice", "secret").kind == "OK"
        assert sorted(c.cmd(b"LISTSCRIPTS").lines) == sorted(their_list) == [b'"home"', b'"work" ACTIVE']
        assert c.cmd(b'GETSCRIPT "work"').lines == [b"{" + FOLDER_SCRIPT + b"}"]
        c.cmd(b"LOGOUT")
    finally:
        srv.stop()
    # And delivery runs the script Pigeonhole activated.
    conf = tmp_path / "config.toml"
    conf.write_text(f'[delivery]\nmaildir = "{tmp_path / "Maildir"}"\nrules = "{home}/.dovecot.sieve"\n'
                    f'state_dir = "{tmp_path / "state"}"\n')
    r = _deliver(str(conf), b"From: a@example.org\nSubject: invoice 7\n\nhi\n")
    assert r.returncode == 0 and len(_new(tmp_path / "Maildir" / ".Invoices")) == 1, r.stderr


# -- protocol errors: NO (or BYE for that connection) and the server keeps serving ------------------------

def test_protocol_errors_get_no_and_the_session_goes_on(server):
    c = SieveClient(server.port())
    assert c.login("alice", "secret").kind == "OK"
    for bad in (b"FROBNICATE", b'PUTSCRIPT "x" {abc+}', b"PUTSCRIPT {3+}\r\nabc", b'GETSCRIPT "a" "b"',
                b'"quoted-command"', b"LISTSCRIPTS extra", b'HAVESPACE "x" 99999999999',
                b'PUTSCRIPT "\xff\xfe" "keep;"', b'CHECKSCRIPT "keep;" "x"', b"NOOP 12"):
        r = c.cmd(bad)
        assert r.kind == "NO", (bad, r)
    # An oversized literal is read and dropped: the session stays in step.
    r = c.cmd(b'PUTSCRIPT "big" ' + literal(b"#" * 5000))
    assert (r.kind, r.code) == ("NO", "QUOTA/MAXSIZE")
    assert c.cmd(b'NOOP "alive"').code == 'TAG "alive"'
    # Names: '/', '..', control characters, empty.
    for name in (b"a/b", b"..", b"x..y", b"tab\there", b""):
        r = c.cmd(b'PUTSCRIPT ' + literal(name) + b' "keep;"')
        assert r.kind == "NO", (name, r)
    assert c.cmd(b"LISTSCRIPTS").lines == []
    # A line longer than the limit ends this connection with BYE; others are served.
    c.send(b"NOOP " + b"x" * 20000 + b"\r\n")
    assert c.read_reply().kind == "BYE"
    c2 = SieveClient(server.port())
    assert c2.login("alice", "secret").kind == "OK"
    assert c2.cmd(b"LISTSCRIPTS").kind == "OK"
    c2.cmd(b"LOGOUT")


def test_before_login(server):
    c = SieveClient(server.port())
    assert c.cmd(b"LISTSCRIPTS").kind == "NO"
    assert c.cmd(b'PUTSCRIPT "x" "keep;"').kind == "NO"
    assert c.cmd(b"FROBNICATE").kind == "BYE"    # the third bad command before login, as Pigeonhole
    c = SieveClient(server.port())
    assert c.login("alice", "wrong").kind == "NO"
    assert c.cmd(b'AUTHENTICATE "DIGEST-MD5"').kind == "NO"
    # A literal before login is small: a large one ends the connection.
    c.send(b'AUTHENTICATE "PLAIN" {100000+}\r\n')
    assert c.read_reply().kind == "BYE"


def test_authenticate_plain_and_login_with_continuations_then_unauthenticate(server):
    c = SieveClient(server.port())
    c.send(b'AUTHENTICATE "PLAIN"\r\n')
    assert c._line() == b'""'
    c.send(b'"' + base64.b64encode(b"\0alice\0secret") + b'"\r\n')
    assert c.read_reply().kind == "OK"
    assert c.cmd(b"UNAUTHENTICATE").kind == "OK"
    assert c.cmd(b"LISTSCRIPTS").kind == "NO"
    c.send(b'AUTHENTICATE "LOGIN"\r\n')
    assert base64.b64decode(c._line().strip(b'"')) == b"Username:"
    c.send(b"{%d+}\r\n" % len(base64.b64encode(b"bob")) + base64.b64encode(b"bob") + b"\r\n")
    assert base64.b64decode(c._line().strip(b'"')) == b"Password:"
    c.send(b'"' + base64.b64encode(b"pw2") + b'"\r\n')
    assert c.read_reply().kind == "OK"
    assert c.cmd(b'PUTSCRIPT "b" "keep;"').kind == "OK"
    c.send(b'UNAUTHENTICATE\r\nAUTHENTICATE "PLAIN"\r\n"*"\r\n')
    assert c.read_reply().kind == "OK"
    assert c._line() == b'""'
    assert c.read_reply().kind == "NO"        # cancelled
    c.send(b'AUTHENTICATE "LOGIN"\r\n"*"\r\n')
    assert base64.b64decode(c._line().strip(b'"')) == b"Username:"
    assert c.read_reply().kind == "NO"        # cancelled at the first step
    assert c.cmd(b"NOOP").kind == "OK"
    c.cmd(b"LOGOUT")


def test_starttls_reissues_capabilities_and_plaintext_rules(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    passwd = _passwd(tmp_path, {"alice": "secret"})
    from fetchdeliver.imapserver.auth import PasswdFileAuthenticator

    srv = ThreadedServer(ServerConfig(listen=["127.0.0.1:0"], tls_listen=["127.0.0.1:0"], ssl_context=ctx,
                                      authenticator=PasswdFileAuthenticator(passwd), login_failure_delay=0)).start()
    try:
        c = SieveClient(srv.port())
        assert b'"STARTTLS"' in c.greeting.lines
        assert c.cmd(b"STARTTLS").kind == "OK"
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        c.sock = client_ctx.wrap_socket(c.sock, server_hostname="127.0.0.1")
        again = c.read_reply()
        assert again.kind == "OK" and b'"STARTTLS"' not in again.lines and b'"SASL" "PLAIN LOGIN"' in again.lines
        assert c.login("alice", "secret").kind == "OK"
        c.cmd(b"LOGOUT")
        raw = socket.create_connection(("127.0.0.1", srv.port(tls=True)), 30)
        tls = SieveClient.__new__(SieveClient)
        tls.sock, tls.buf = client_ctx.wrap_socket(raw, server_hostname="127.0.0.1"), b""
        assert tls.read_reply().kind == "OK"
        assert tls.login("alice", "secret").kind == "OK"
        tls.cmd(b"LOGOUT")
    finally:
        srv.stop()


def test_plaintext_auth_refused_off_loopback_without_tls():
    """The peer address decides (LOGINDISABLED rules as in IMAP); a remote peer cannot be made on 127.0.0.1,
    so the session is given a writer that reports one."""
    import asyncio

    from fetchdeliver.managesieve.server import Server
    from fetchdeliver.managesieve.session import Session

    class RemotePeerWriter:
        def __init__(self):
            self.out = b""

        def get_extra_info(self, name):
            return ("192.0.2.7", 40000) if name == "peername" else None

        def write(self, data):
            self.out += data

        async def drain(self):
            pass

        def close(self):
            pass

    async def run(allow: bool) -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(b'AUTHENTICATE "PLAIN" "' + base64.b64encode(b"\0alice\0secret") + b'"\r\nLOGOUT\r\n')
        reader.feed_eof()
        w = RemotePeerWriter()
        srv = Server(ServerConfig(listen=[], allow_plaintext_auth=allow, login_failure_delay=0))
        await Session(srv, reader, w, tls=False).run()
        return w.out

    out = asyncio.run(run(False))
    assert b'"SASL" ""\r\n' in out and b"NO (ENCRYPT-NEEDED)" in out
    out = asyncio.run(run(True))
    assert b'"SASL" "PLAIN LOGIN"' in out and b"ENCRYPT-NEEDED" not in out


# -- the store --------------------------------------------------------------------------------------------

def test_store_layout_quota_names_and_a_hand_written_active_file(tmp_path):
    store = ScriptStore(str(tmp_path), max_scripts=2, max_script_size=10)
    (tmp_path / ".dovecot.sieve").write_bytes(b"keep;\n")     # written by hand, before ManageSieve
    store.put("a", b"keep;")
    with pytest.raises(ScriptError) as e:
        store.put("b", b"x" * 11)
    assert e.value.code == "QUOTA/MAXSIZE"
    store.put("b", b"stop;")
    with pytest.raises(ScriptError) as e:
        store.put("c", b"keep;")
    assert e.value.code == "QUOTA/MAXSCRIPTS"
    store.max_scripts = 0
    store.set_active("a")
    # The hand-written file is kept as a script, not overwritten.
    assert (tmp_path / "sieve" / "dovecot.orig.sieve").read_bytes() == b"keep;\n"
    assert os.readlink(tmp_path / ".dovecot.sieve") == "sieve/a.sieve"
    store.rename("a", "z")
    assert store.active() == "z" and os.readlink(tmp_path / ".dovecot.sieve") == "sieve/z.sieve"
    assert store.names() == ["b", "dovecot.orig", "z"]
    assert os.listdir(tmp_path / "sieve" / "tmp") == []
    for name in ("a/b", "..", "a..b", "x\ny", "\x7f", ""):
        with pytest.raises(ScriptError):
            store.put(name, b"keep;")


def test_config_table_and_daemon_listener(tmp_path, fetchdeliver_cmd):
    passwd = _passwd(tmp_path, {"alice": "secret"})
    conf = tmp_path / "config.toml"
    # No script is active yet (no .dovecot.sieve): neither `config check` nor the daemon complains.
    conf.write_text(f'[delivery]\nmaildir = "{tmp_path / "Maildir"}"\nstate_dir = "{tmp_path / "state"}"\n'
                    f'rules = "{tmp_path}/sieve-homes/alice/.dovecot.sieve"\n\n'
                    f'[managesieve]\nlisten = "127.0.0.1:0"\npasswd_file = "{passwd}"\nmax_scripts = 5\n'
                    f'sieve_dir = "{tmp_path}/sieve-homes/%u"\nlogin_failure_delay = "0s"\n')
    r = subprocess.run([*fetchdeliver_cmd, "config", "check", "-c", str(conf)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[managesieve]\nmax_scripts = "lots"\nsieve_dir = "relative"\n')
    r = subprocess.run([*fetchdeliver_cmd, "config", "check", "-c", str(bad)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 78 and "managesieve.max_scripts" in r.stderr and "managesieve.sieve_dir" in r.stderr
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*fetchdeliver_cmd, "daemon", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        import re

        def port():
            m = re.search(r"managesieve: listening on 127\.0\.0\.1:(\d+)", log.read_text())
            if proc.poll() is not None:
                raise AssertionError(log.read_text())
            return m and int(m.group(1))
        _wait(port, 30, "the daemon's managesieve listener")
        c = SieveClient(port())
        assert c.login("alice", "secret").kind == "OK"
        assert c.cmd(b'PUTSCRIPT "s" "keep;"').kind == "OK"
        c.cmd(b"LOGOUT")
        assert (tmp_path / "sieve-homes" / "alice" / "sieve" / "s.sieve").read_bytes() == b"keep;"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_daemon_fetch_runs_the_active_script_without_restart(tmp_path, dovecot, fetchdeliver_cmd):
    """The daemon fetches from Dovecot with `rules = "~/.dovecot.sieve"`; a script activated over the daemon's own
    ManageSieve listener steers the next message, with no reload or restart."""
    import re

    from conftest import make_message
    from fetchsetup import FetchSetup, toml_value

    passwd = _passwd(tmp_path, {"alice": "secret"})
    home = tmp_path / "home" / "alice"
    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd, rules=str(home / ".dovecot.sieve"))
    setup.account("work", "imap", poll="1s", after="delete")
    with open(setup.config, "a") as f:
        f.write(f'\n[managesieve]\nlisten = "127.0.0.1:0"\npasswd_file = {toml_value(passwd)}\n'
                'login_failure_delay = "0s"\n')
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*fetchdeliver_cmd, "daemon", "-c", setup.config], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        def port():
            if proc.poll() is not None:
                raise AssertionError(log.read_text())
            m = re.search(r"managesieve: listening on 127\.0\.0\.1:(\d+)", log.read_text())
            return m and int(m.group(1))
        _wait(port, 30, "the daemon's managesieve listener")
        inbox, invoices = tmp_path / "Mail", tmp_path / "Mail" / ".Invoices"
        dovecot.append("alice", make_message(1, "invoice"))
        _wait(lambda: len(_new(inbox)) == 1, 30, "message 1 in INBOX (no active script)")
        c = SieveClient(port())
        assert c.login("alice", "secret").kind == "OK"
        assert c.cmd(b'PUTSCRIPT "f" ' + literal(FOLDER_SCRIPT)).kind == "OK"
        assert c.cmd(b'SETACTIVE "f"').kind == "OK"
        c.cmd(b"LOGOUT")
        dovecot.append("alice", make_message(2, "invoice"))
        _wait(lambda: len(_new(invoices)) == 1, 30, "message 2 filed by the activated script")
        assert len(_new(inbox)) == 1
        assert "rules not used" not in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def _tls_login_session(port: int, ca_file: str) -> list:
    """STARTTLS, the capabilities sent again, AUTHENTICATE "LOGIN" by continuations, a few commands."""
    c = SieveClient(port)
    replies = [c.greeting, c.cmd(b"STARTTLS")]
    ctx = ssl.create_default_context(cafile=ca_file)
    c.sock = ctx.wrap_socket(c.sock, server_hostname="127.0.0.1")
    replies.append(c.read_reply())                      # RFC 5804 2.2: capabilities after the handshake
    replies.append(c.cmd(b"STARTTLS"))                  # not twice
    c.send(b'AUTHENTICATE "LOGIN"\r\n')
    challenges = [c._line()]
    c.send(b'"' + base64.b64encode(b"alice") + b'"\r\n')
    challenges.append(c._line())
    c.send(b"{%d+}\r\n" % len(base64.b64encode(b"secret")) + base64.b64encode(b"secret") + b"\r\n")
    replies.append(c.read_reply())
    replies.append(c.cmd(b"LISTSCRIPTS"))
    replies.append(c.cmd(b'AUTHENTICATE "PLAIN" "AGFsaWNlAHNlY3JldA=="'))  # already logged in
    replies.append(c.cmd(b"LOGOUT"))
    c.close()
    return [challenges, *replies]


def test_differential_starttls_and_login_mechanism_against_pigeonhole(tmp_path):
    from dovecot import DovecotUnavailable

    try:
        dc = SieveDovecot({"alice": "secret"})
    except DovecotUnavailable as e:
        pytest.skip(str(e))
    try:
        dc.start()
        theirs = _tls_login_session(dc.port("sieve"), dc.ca_file)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(dc.cert_file)
        passwd = _passwd(tmp_path, {"alice": "secret"})
        from fetchdeliver.imapserver.auth import PasswdFileAuthenticator

        srv = ThreadedServer(ServerConfig(listen=["127.0.0.1:0"], ssl_context=ctx, login_failure_delay=0,
                                          authenticator=PasswdFileAuthenticator(passwd))).start()
        try:
            ours = _tls_login_session(srv.port(), dc.ca_file)
        finally:
            srv.stop()
    finally:
        dc.cleanup()
    assert [base64.b64decode(x.strip(b'"')) for x in ours[0]] == \
        [base64.b64decode(x.strip(b'"')) for x in theirs[0]] == [b"Username:", b"Password:"]
    labels = ["greeting", "STARTTLS", "after TLS", "STARTTLS again", "AUTHENTICATE LOGIN", "LISTSCRIPTS",
              "AUTHENTICATE again", "LOGOUT"]
    for label, a, b in zip(labels, ours[1:], theirs[1:]):
        assert _shape(a) == _shape(b), (label, a, b)
    for i in (0, 2):
        caps_ours, caps_theirs = _capabilities(ours[1 + i]), _capabilities(theirs[1 + i])
        assert ("STARTTLS" in caps_ours) == ("STARTTLS" in caps_theirs) == (i == 0), (i, caps_ours, caps_theirs)
        assert caps_ours["SASL"] == caps_theirs["SASL"]


def test_sieve_connect_over_starttls_verifying_the_certificate(tmp_path):
    trustme = pytest.importorskip("trustme")
    if shutil.which("sieve-connect") is None:
        pytest.skip("sieve-connect is not installed (apt-get install sieve-connect)")
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    passwd = _passwd(tmp_path, {"alice": "secret"})
    from fetchdeliver.imapserver.auth import PasswdFileAuthenticator

    srv = ThreadedServer(ServerConfig(listen=["127.0.0.1:0"], ssl_context=ctx, login_failure_delay=0,
                                      authenticator=PasswdFileAuthenticator(passwd))).start()
    try:
        (tmp_path / "s.sieve").write_bytes(FOLDER_SCRIPT)
        r = subprocess.run(["sieve-connect", "--server", "127.0.0.1", "--port", str(srv.port()), "--user", "alice",
                            "--passwordfd", "0", "--tlscafile", str(tmp_path / "ca.pem"), "--debug", "--upload",
                            "--localsieve", str(tmp_path / "s.sieve"), "--remotesieve", "tls"],
                           input="secret\n", capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "TLS activated" in r.stderr and "Putscript completed" in r.stderr, r.stderr
        assert (tmp_path / "home" / "alice" / "sieve" / "tls.sieve").read_bytes() == FOLDER_SCRIPT
    finally:
        srv.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
def test_files_belong_to_the_passwd_file_user_when_run_as_root(tmp_path):
    import pwd

    nobody = pwd.getpwnam("nobody")
    home = tmp_path / "home" / "alice"
    home.mkdir(parents=True)
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    (tmp_path / "passwd").write_text(f"alice:{{PLAIN}}secret:{nobody.pw_uid}:{nobody.pw_gid}::{home}::\n")
    from fetchdeliver.imapserver.auth import PasswdFileAuthenticator

    srv = ThreadedServer(ServerConfig(listen=["127.0.0.1:0"], login_failure_delay=0,
                                      authenticator=PasswdFileAuthenticator(str(tmp_path / "passwd")))).start()
    try:
        c = SieveClient(srv.port())
        assert c.login("alice", "secret").kind == "OK"
        assert c.cmd(b'PUTSCRIPT "s" "keep;"').kind == "OK"
        assert c.cmd(b'SETACTIVE "s"').kind == "OK"
        c.cmd(b"LOGOUT")
    finally:
        srv.stop()
    for path in (home / "sieve", home / "sieve" / "s.sieve", home / ".dovecot.sieve"):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid), path
