"""The POP3 server against real clients (poplib, fetchmail, getmail6, `fetchdeliver fetch`) and, answer for
answer, against Dovecot's pop3d serving a copy of the same Maildir."""

from __future__ import annotations

import base64
import os
import poplib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from dovecot import DovecotUnavailable
from pop3_support import AWKWARD, LineClient, Pop3Dovecot, make_pop3_server, plain

from fetchdeliver.storage.maildir import MaildirStore

FD = str(Path(sys.executable).with_name("fetchdeliver"))
FETCHMAIL = shutil.which("fetchmail")
GETMAIL = shutil.which("getmail")


def _files(maildir: str) -> list[str]:
    return sorted(n.split(":")[0] for sub in ("new", "cur") for n in os.listdir(os.path.join(maildir, sub)))


def _fill(maildir: str, n_plain: int = 4) -> list[bytes]:
    store = MaildirStore(maildir)
    raws = [plain(i) for i in range(1, n_plain + 1)]
    for raw in raws:
        store.deliver(raw)
    return raws


@pytest.fixture
def srv(tmp_path):
    maildir = str(tmp_path / "Maildir")
    raws = _fill(maildir)
    server = make_pop3_server(tmp_path, maildir)
    server.maildir = maildir
    server.raws = raws
    yield server
    server.stop()


@pytest.fixture
def pop3_dovecot(request):
    try:
        dc = Pop3Dovecot({"alice": "secret"})
    except DovecotUnavailable as e:
        pytest.skip(str(e))
    try:
        dc.start()
    except BaseException:
        dc.cleanup()
        raise
    request.addfinalizer(dc.cleanup)
    return dc


def _wire(raw: bytes) -> bytes:
    """What poplib hands back for a message: lines without their CRLF, dot-unstuffed."""
    return raw.replace(b"\r\n", b"\n")


# -- poplib ---------------------------------------------------------------------------------------

def test_poplib_session(srv):
    c = poplib.POP3("127.0.0.1", srv.port(), timeout=30)
    caps = c.capa()
    for cap in ("TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"):
        assert cap in caps
    assert caps["SASL"] == ["PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert "STLS" not in caps and "EXPIRE" not in caps and "LOGIN-DELAY" not in caps
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        c.user("alice")
        c.pass_("wrong")
    c.user("alice")
    assert c.pass_("secret").startswith(b"+OK")
    count, total = c.stat()
    assert count == 4
    sizes = [int(x.split()[1]) for x in c.list()[1]]
    assert sum(sizes) == total
    for n, raw in enumerate(srv.raws, 1):
        resp, lines, _octets = c.retr(n)
        assert b"\n".join(lines) + b"\n" == raw           # poplib undoes the dot-stuffing
        assert sizes[n - 1] == len(raw) + raw.count(b"\n")  # the size with CRLF line ends
    head = c.top(1, 0)[1]
    assert head[-1] == b"" and b"Subject: m number 1" in head and b"body of m 1" not in head
    assert c.top(1, 1)[1][-1] == b"body of m 1"
    uidls = [x.split()[1] for x in c.uidl()[1]]
    assert len(set(uidls)) == 4 and all(len(u) == 16 for u in uidls)
    assert c.dele(2).startswith(b"+OK")
    with pytest.raises(poplib.error_proto):
        c.retr(2)
    assert c.stat() == (3, total - sizes[1])
    assert c.rset().startswith(b"+OK") and c.stat()[0] == 4
    c.dele(2)
    assert c.noop().startswith(b"+OK")
    assert c.quit().startswith(b"+OK")
    assert len(_files(srv.maildir)) == 3
    # The next session: the same UIDLs for the messages left (stable), message 2's gone.
    c = poplib.POP3("127.0.0.1", srv.port(), timeout=30)
    c.user("alice")
    c.pass_("secret")
    assert [x.split()[1] for x in c.uidl()[1]] == [uidls[0], uidls[2], uidls[3]]
    c.quit()


def test_stored_messages_untouched_and_retrieved_marked_seen(srv):
    before = {n: open(os.path.join(srv.maildir, "new", n), "rb").read()
              for n in os.listdir(os.path.join(srv.maildir, "new"))}
    c = poplib.POP3("127.0.0.1", srv.port(), timeout=30)
    c.user("alice")
    c.pass_("secret")
    c.retr(1)
    c.top(2, 3)
    c.quit()
    after = {}
    for sub in ("new", "cur"):
        for n in os.listdir(os.path.join(srv.maildir, sub)):
            after[n.split(":2,")[0]] = (n, open(os.path.join(srv.maildir, sub, n), "rb").read())
    assert {k: v[1] for k, v in after.items()} == before     # byte-exact: CRLF and dots only on the wire
    seen = sorted(k for k, (name, _) in after.items() if name.endswith(":2,S"))
    assert len(seen) == 1   # RETR marks \Seen at QUIT, TOP does not


def test_sasl_plain_and_login(srv):
    c = LineClient(srv.port())
    blob = base64.b64encode(b"\0alice\0secret").decode()
    assert c.cmd(f"AUTH PLAIN {blob}")[0].startswith(b"+OK")
    c.cmd("QUIT")
    c.close()
    c = LineClient(srv.port())
    assert c.cmd("AUTH PLAIN")[0] == b"+ \r\n"
    assert c.cmd(base64.b64encode(b"\0alice\0nope").decode())[0].startswith(b"-ERR [AUTH] ")
    assert c.cmd("AUTH LOGIN")[0] == b"+ " + base64.b64encode(b"Username:") + b"\r\n"
    assert c.cmd(base64.b64encode(b"alice").decode())[0] == b"+ " + base64.b64encode(b"Password:") + b"\r\n"
    assert c.cmd(base64.b64encode(b"secret").decode())[0].startswith(b"+OK")
    assert c.cmd("STAT")[0] == b"+OK 4 %d\r\n" % sum(len(r) + r.count(b"\n") for r in srv.raws)
    c.cmd("QUIT")
    c.close()
    c = LineClient(srv.port())
    assert c.cmd("AUTH LOGIN")[0].startswith(b"+ ")
    assert c.cmd("*")[0].startswith(b"-ERR")
    status, body = c.cmd("AUTH", multi=True)
    # the passwd file can serve SCRAM too (fetchdeliver/sasl.py): offered after PLAIN and LOGIN
    assert status.startswith(b"+OK") and body == b"PLAIN\r\nLOGIN\r\nSCRAM-SHA-256\r\nSCRAM-SHA-1\r\n.\r\n"
    c.close()


def _doveadm_scram_line(password: str) -> str:
    exe = shutil.which("doveadm")
    if exe is None:
        pytest.skip("doveadm is not installed (apt-get install dovecot-core)")
    return subprocess.run([exe, "pw", "-s", "SCRAM-SHA-256", "-p", password], check=True,
                          capture_output=True, text=True, timeout=60).stdout.strip()


def _scram_auth(conn: poplib.POP3, user: str, password: str, mech: str = "SCRAM-SHA-256") -> bytes:
    """RFC 5034 AUTH over poplib with scramp's client (a SCRAM client nobody here wrote)."""
    import scramp

    client = scramp.ScramClient([mech], user, password)
    first = base64.b64encode(client.get_client_first().encode()).decode()
    resp = conn._shortcmd(f"AUTH {mech} {first}")     # "+ server-first"
    assert resp.startswith(b"+ ")
    client.set_server_first(base64.b64decode(resp[2:]).decode())
    resp = conn._shortcmd(base64.b64encode(client.get_client_final().encode()).decode())
    assert resp.startswith(b"+ ")                     # "+ server-final" (v=...), then an empty response
    client.set_server_final(base64.b64decode(resp[2:]).decode())   # raises unless the server proved the key
    return conn._shortcmd("")


def test_sasl_scram_sha256_with_a_passwd_line_from_doveadm(srv):
    line = _doveadm_scram_line("pencil")
    assert line.startswith("{SCRAM-SHA-256}4096,")
    with open(srv.passwd, "a") as f:
        f.write(f"alice2:{line}::::::\n")
    conn = poplib.POP3("127.0.0.1", srv.port(), timeout=30)
    caps = conn.capa()
    assert caps["SASL"] == ["PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert _scram_auth(conn, "alice2", "pencil").startswith(b"+OK")
    assert conn.stat()[0] == 4
    conn.quit()
    # the wrong password: the server's proof is never sent, the answer is -ERR [AUTH]
    import scramp

    conn = poplib.POP3("127.0.0.1", srv.port(), timeout=30)
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice2", "wrong")
    resp = conn._shortcmd("AUTH SCRAM-SHA-256 " + base64.b64encode(client.get_client_first().encode()).decode())
    client.set_server_first(base64.b64decode(resp[2:]).decode())
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        conn._shortcmd(base64.b64encode(client.get_client_final().encode()).decode())
    conn.quit()
    # a SHA256-CRYPT line (alice's) cannot serve SCRAM: fails like a wrong password, PLAIN still works
    conn = poplib.POP3("127.0.0.1", srv.port(), timeout=30)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        _scram_auth(conn, "alice", "secret")
    conn.quit()


def test_sasl_continuations_cancel_and_empty_initial_response(srv):
    c = LineClient(srv.port())
    assert c.cmd("AUTH SCRAM-SHA-256")[0] == b"+ \r\n"         # no initial response: an empty challenge
    assert c.cmd("*")[0] == b"-ERR Authentication canceled.\r\n"
    assert c.cmd("AUTH PLAIN =")[0].startswith(b"-ERR ")         # "=": an empty initial response, not valid PLAIN
    assert c.cmd("AUTH PLAIN !!!")[0].startswith(b"-ERR Invalid SASL PLAIN")
    assert c.cmd("AUTH CRAM-MD5")[0].startswith(b"-ERR Unsupported authentication mechanism")
    assert c.cmd("AUTH PLAIN " + base64.b64encode(b"bob\0alice\0secret").decode())[0].startswith(b"-ERR [AUTH] ")
    assert c.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0secret").decode())[0].startswith(b"+OK")
    c.cmd("QUIT")
    c.close()


def test_pipelining_and_bad_commands(srv):
    c = LineClient(srv.port())
    c.sock.sendall(b"USER alice\r\nPASS secret\r\nSTAT\r\nLIST 1\r\nUIDL 1\r\nRETR 9\r\nDELE x\r\nBOGUS\r\nNOOP\r\n")
    got = [c.line() for _ in range(9)]
    assert [g[:3] for g in got] == [b"+OK", b"+OK", b"+OK", b"+OK", b"+OK", b"-ER", b"-ER", b"-ER", b"+OK"], got
    assert got[2].split()[1] == b"4"
    # Commands of the wrong state are refused, the session goes on.
    assert c.cmd("USER bob")[0].startswith(b"-ERR")
    assert c.cmd("RSET")[0].startswith(b"+OK")
    c.close()


def test_one_session_per_mailbox_imap_alongside(srv, tmp_path):
    import imapclient

    from fetchdeliver.imapserver.auth import PasswdFileAuthenticator
    from fetchdeliver.imapserver.server import ServerConfig as ImapConfig
    from fetchdeliver.imapserver.server import ThreadedServer as ImapServer

    first = LineClient(srv.port())
    assert first.login("alice", "secret").startswith(b"+OK")
    second = LineClient(srv.port())
    assert second.login("alice", "secret").startswith(b"-ERR [IN-USE] ")
    imap = ImapServer(ImapConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(srv.passwd),
                                 default_mail="maildir:" + srv.maildir, login_failure_delay=0)).start()
    try:
        ic = imapclient.IMAPClient("127.0.0.1", port=imap.port(), ssl=False, timeout=30)
        ic.login("alice", "secret")
        ic.select_folder("INBOX")
        # Mail arriving during the POP3 session is not in its snapshot.
        MaildirStore(srv.maildir).deliver(plain(99, "late"))
        assert first.cmd("STAT")[0].split()[1] == b"4"
        assert first.cmd("DELE 1")[0].startswith(b"+OK")
        assert first.cmd("QUIT")[0].startswith(b"+OK")
        ic.noop()
        assert len(ic.search("ALL")) == 4      # IMAP sees the POP3 deletion and the new message
        ic.logout()
    finally:
        imap.stop()
    second.close()
    third = LineClient(srv.port())
    assert third.login("alice", "secret").startswith(b"+OK")     # the lock went with the QUIT
    assert third.cmd("STAT")[0].split()[1] == b"4"
    third.close()


def test_dropped_connection_deletes_nothing(srv):
    c = LineClient(srv.port())
    c.login("alice", "secret")
    for n in (1, 2, 3):
        assert c.cmd(f"DELE {n}")[0].startswith(b"+OK")
    c.close()    # no QUIT
    # Poll until the server has noticed (the lock is released), then look.
    deadline = time.monotonic() + 20
    while True:
        again = LineClient(srv.port())
        status = again.login("alice", "secret")
        if status.startswith(b"+OK") or time.monotonic() > deadline:
            break
        again.close()
    assert status.startswith(b"+OK"), status
    assert again.cmd("STAT")[0].split()[1] == b"4"
    again.close()
    assert len(_files(srv.maildir)) == 4


def test_killed_client_between_dele_and_quit_deletes_nothing(srv):
    """A real client process (poplib in a child Python) killed by SIGKILL after its DELEs."""
    script = ("import poplib, sys, time\n"
              f"c = poplib.POP3('127.0.0.1', {srv.port()}, timeout=30)\n"
              "c.user('alice'); c.pass_('secret')\n"
              "for n in (1, 2, 3, 4): c.dele(n)\n"
              "print('deleted', flush=True)\n"
              "time.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"deleted\n"
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
    deadline = time.monotonic() + 20
    while True:
        c = LineClient(srv.port())
        status = c.login("alice", "secret")
        if status.startswith(b"+OK") or time.monotonic() > deadline:
            break
        c.close()
    assert status.startswith(b"+OK"), status
    assert c.cmd("STAT")[0].split()[1] == b"4"
    c.close()
    assert len(_files(srv.maildir)) == 4


def test_logindisabled_on_non_loopback_plain_connection(tmp_path):
    """A connection from an address that is not loopback (the host's own non-127 address, when it has one)."""
    import socket

    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("192.0.2.1", 9))   # no packet is sent: this only picks the outgoing address
        addr = s.getsockname()[0]
        s.close()
    except OSError:
        addr = None
    if not addr or addr.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    maildir = str(tmp_path / "Maildir")
    _fill(maildir, 1)
    from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password
    from fetchdeliver.pop3server.server import ServerConfig, ThreadedServer

    passwd = str(tmp_path / "passwd")
    set_password(passwd, "alice", "secret", "SHA256-CRYPT")
    for allow in (False, True):
        server = ThreadedServer(ServerConfig(listen=[f"{addr}:0"], authenticator=PasswdFileAuthenticator(passwd),
                                             default_mail="maildir:" + maildir, login_failure_delay=0,
                                             allow_plaintext_auth=allow)).start()
        try:
            c = LineClient(server.port(), host=addr)
            status, body = c.cmd("CAPA", multi=True)
            if allow:
                assert b"USER\r\n" in body and b"SASL PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-1\r\n" in body
                assert c.login("alice", "secret").startswith(b"+OK")
            else:
                # SCRAM sends no password: offered on a plain connection too (as IMAP does)
                assert b"USER\r\n" not in body and b"SASL SCRAM-SHA-256 SCRAM-SHA-1\r\n" in body
                assert c.cmd("USER alice")[0].startswith(b"-ERR [AUTH] ")
                assert c.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0secret").decode())[0].startswith(
                    b"-ERR [AUTH] ")
            c.close()
        finally:
            server.stop()


def test_stls_and_implicit_tls(tmp_path):
    """STLS and POP3S with a certificate from a test CA (trustme)."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    maildir = str(tmp_path / "Maildir")
    _fill(maildir, 2)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    server = make_pop3_server(tmp_path, maildir, ssl_context=ctx, tls_listen=["127.0.0.1:0"])
    try:
        cctx = ssl.create_default_context()
        ca.configure_trust(cctx)
        c = poplib.POP3("127.0.0.1", server.port(), timeout=30)
        assert "STLS" in c.capa()
        c.stls(cctx)
        assert "STLS" not in c.capa()
        c.user("alice")
        c.pass_("secret")
        assert c.stat()[0] == 2
        c.quit()
        c = poplib.POP3_SSL("127.0.0.1", server.port(tls=True), timeout=30, context=cctx)
        assert "STLS" not in c.capa()
        c.user("alice")
        c.pass_("secret")
        assert c.stat()[0] == 2
        c.quit()
    finally:
        server.stop()


def test_mbox_store(tmp_path):
    """The same session over an mbox: DELE applied at QUIT rewrites the file without the message."""
    from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password
    from fetchdeliver.pop3server.server import ServerConfig, ThreadedServer
    from fetchdeliver.storage.mbox import MboxStore

    mbox = str(tmp_path / "mbox")
    store = MboxStore(mbox)
    raws = [plain(i) for i in range(1, 4)]
    for raw in raws:
        store.deliver(raw, sender="x@example.org")
    passwd = str(tmp_path / "passwd")
    set_password(passwd, "alice", "secret", "SHA256-CRYPT")
    server = ThreadedServer(ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                                         default_mail="mbox:" + mbox, login_failure_delay=0)).start()
    try:
        c = poplib.POP3("127.0.0.1", server.port(), timeout=30)
        c.user("alice")
        c.pass_("secret")
        assert c.stat()[0] == 3
        uidls = [x.split()[1] for x in c.uidl()[1]]
        assert b"\n".join(c.retr(2)[1]) + b"\n" == raws[1]
        c.dele(2)
        c.quit()
        c = poplib.POP3("127.0.0.1", server.port(), timeout=30)
        c.user("alice")
        c.pass_("secret")
        assert [x.split()[1] for x in c.uidl()[1]] == [uidls[0], uidls[2]]
        c.quit()
    finally:
        server.stop()
    data = open(mbox, "rb").read()
    assert b"Subject: m number 2" not in data and b"Subject: m number 3" in data


def test_expire_and_login_delay(tmp_path):
    maildir = str(tmp_path / "Maildir")
    _fill(maildir, 3)
    server = make_pop3_server(tmp_path, maildir, expire=0, login_delay=3600)
    try:
        c = poplib.POP3("127.0.0.1", server.port(), timeout=30)
        caps = c.capa()
        assert caps["EXPIRE"] == ["0"] and caps["LOGIN-DELAY"] == ["3600"]
        c.user("alice")
        c.pass_("secret")
        c.retr(2)
        c.quit()
        assert len(_files(maildir)) == 2     # EXPIRE 0: a retrieved message goes at QUIT
        c = poplib.POP3("127.0.0.1", server.port(), timeout=30)
        c.user("alice")
        with pytest.raises(poplib.error_proto, match=r"\[LOGIN-DELAY\]"):
            c.pass_("secret")
    finally:
        server.stop()


# -- Dovecot's pop3d on copies of one Maildir ---------------------------------------------------------------

def _session_transcript(port: int, user: str, password: str, count: int) -> list[tuple[str, bytes, bytes]]:
    """Every listing and message answer of one session: (command, status words that must agree, body)."""
    c = LineClient(port)
    assert c.login(user, password).startswith(b"+OK")
    out = []

    def run(cmd: str, multi: bool, keep_status: bool = True):
        status, body = c.cmd(cmd, multi)
        # The first word (+OK/-ERR) always; the rest where RFC 1939 fixes it (STAT, LIST n, UIDL n).
        words = status.split()
        out.append((cmd, b" ".join(words if keep_status else words[:1]), body))

    run("STAT", False)
    run("LIST", True, False)
    run("UIDL", True, False)
    for n in range(1, count + 1):
        run(f"LIST {n}", False)
        run(f"UIDL {n}", False)
        for lines in (0, 1, 2, 100):
            run(f"TOP {n} {lines}", True, False)
        run(f"RETR {n}", True, False)
    run(f"LIST {count + 1}", False, False)
    run("DELE 1", False, False)
    run("STAT", False)
    run("LIST", True, False)
    run("UIDL", True, False)
    run("RSET", False, False)
    run("STAT", False)
    c.cmd("QUIT")
    c.close()
    return out


def _dovecot_pop3_once(dc, user: str) -> None:
    """One Dovecot POP3 session that looks at everything (Dovecot numbers the messages: dovecot-uidlist)."""
    c = LineClient(dc.port("pop3"))
    assert c.login(user, dc.users[user]).startswith(b"+OK")
    c.cmd("UIDL", True)
    c.cmd("QUIT")
    c.close()


def _save_uidls(maildir: str, uidls: dict[int, str]) -> None:
    """Give records of dovecot-uidlist a saved POP3 UIDL (the P field pop3_save_uidl or the
    pop3-migration plugin writes), and drop Dovecot's index so that it reads them."""
    path = os.path.join(maildir, "dovecot-uidlist")
    with open(path) as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines[1:], 1):
        uid = line.split(" ", 1)[0]
        if uid.isdigit() and int(uid) in uidls:
            lines[i] = line.replace(" :", f" P{uidls[int(uid)]} :", 1)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    for name in os.listdir(maildir):
        if name.startswith("dovecot.index"):
            os.unlink(os.path.join(maildir, name))


@pytest.mark.parametrize("served_first", [
    "dovecot", "fetchdeliver", "dovecot-migrated",
    "dovecot-migrated-colon",   # a saved UIDL with ':' in it (the uidlist's file name starts after " :")
])
def test_same_answers_as_dovecot_pop3d(tmp_path, pop3_dovecot, served_first):
    dc = pop3_dovecot
    raws = AWKWARD + [plain(i) for i in range(1, 4)]
    ours = str(tmp_path / "ours")
    if served_first.startswith("dovecot"):
        for raw in raws:
            dc.append("alice", raw)
        _dovecot_pop3_once(dc, "alice")
        if served_first.startswith("dovecot-migrated"):
            # UIDLs an earlier POP3 server gave (kept by Dovecot's migration): both servers send these.
            fifth = "UID5:with-colon" if served_first.endswith("colon") else "UID5.from-courier"
            _save_uidls(dc.user_maildir("alice"), {2: "old-server-uidl-2", 5: fifth})
        dc.copy_maildir_to("alice", ours)
        assert os.path.exists(os.path.join(ours, "dovecot-uidlist"))
    else:
        store = MaildirStore(ours)
        for raw in raws:
            store.deliver(raw)
        server = make_pop3_server(tmp_path, ours)
        try:
            c = LineClient(server.port())
            c.login("alice", "secret")
            c.cmd("UIDL", True)
            c.cmd("QUIT")
            c.close()
        finally:
            server.stop()
        shutil.rmtree(dc.user_maildir("alice"))
        dc.load_maildir("alice", ours)
    server = make_pop3_server(tmp_path, ours)
    try:
        want = _session_transcript(dc.port("pop3"), "alice", "secret", len(raws))
        got = _session_transcript(server.port(), "alice", "secret", len(raws))
    finally:
        server.stop()
    assert len(got) == len(want)
    if served_first.startswith("dovecot-migrated"):
        assert b"2 old-server-uidl-2\r\n" in want[2][2] and f"5 {fifth}\r\n".encode() in want[2][2]
    for (cmd, w_status, w_body), (_c, g_status, g_body) in zip(want, got):
        assert (cmd, g_status, g_body) == (cmd, w_status, w_body)


def test_killed_client_and_in_use_same_as_dovecot(tmp_path, pop3_dovecot):
    """Both servers: a client gone between DELE and QUIT deletes nothing; a second session is -ERR [IN-USE]."""
    dc = pop3_dovecot
    for i in range(1, 4):
        dc.append("alice", plain(i))
    _dovecot_pop3_once(dc, "alice")
    ours = dc.copy_maildir_to("alice", str(tmp_path / "ours"))
    server = make_pop3_server(tmp_path, ours)
    try:
        for port, maildir in ((dc.port("pop3"), dc.user_maildir("alice")), (server.port(), ours)):
            first = LineClient(port)
            assert first.login("alice", "secret").startswith(b"+OK")
            second = LineClient(port)
            assert second.login("alice", "secret").startswith(b"-ERR [IN-USE]")
            second.close()
            assert first.cmd("DELE 1")[0].startswith(b"+OK")
            first.close()
            deadline = time.monotonic() + 20
            while True:
                again = LineClient(port)
                status = again.login("alice", "secret")
                if status.startswith(b"+OK") or time.monotonic() > deadline:
                    break
                again.close()
            assert status.startswith(b"+OK"), (port, status)
            assert again.cmd("STAT")[0].split()[1] == b"3"
            again.cmd("QUIT")
            again.close()
            assert len(_files(maildir)) == 3
    finally:
        server.stop()


# -- real clients: fetchmail, getmail6, `fetchdeliver fetch` ----------------------------------------------------

def _message_ids(maildir: Path) -> list[str]:
    import email

    out = []
    for sub in ("new", "cur"):
        d = maildir / sub
        if d.is_dir():
            out += [email.message_from_bytes(p.read_bytes())["Message-ID"] for p in d.iterdir()]
    return sorted(out)


def _assert_arrived_whole(maildir: Path, raws: list[bytes]) -> None:
    """Every raw message is, line ends aside, the end of exactly one delivered file (only headers on top)."""
    got = [p.read_bytes().replace(b"\r\n", b"\n") for sub in ("new", "cur") for p in (maildir / sub).iterdir()]
    assert len(got) == len(raws)
    for raw in raws:
        assert sum(g.endswith(raw) for g in got) == 1, raw


@pytest.mark.skipif(not FETCHMAIL, reason="fetchmail not installed")
def test_fetchmail_fetches_and_deletes(srv, tmp_path):
    out = tmp_path / "fm-out"
    for sub in ("new", "cur", "tmp"):
        (out / sub).mkdir(parents=True)
    rc = tmp_path / "fetchmailrc"
    rc.write_text(f"set no syslog\npoll 127.0.0.1 proto pop3 port {srv.port()}\n"
                  f"  user \"alice\" password \"secret\"\n  options sslproto '' no keep fetchall\n"
                  f"  mda \"{FD} deliver --maildir {out}\"\n")
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    r = subprocess.run([FETCHMAIL, "-f", str(rc), "--nodetach", "--idfile", str(tmp_path / "ids"),
                        "--pidfile", str(tmp_path / "fetchmail.pid")],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _message_ids(out) == sorted(f"<m.{i}@example.org>" for i in range(1, 5))
    assert _files(srv.maildir) == []
    # Byte-exact through the whole chain: each stored message arrives whole, below the headers added on top.
    _assert_arrived_whole(out, srv.raws)


@pytest.mark.skipif(not GETMAIL, reason="getmail not installed")
def test_getmail_fetches_and_deletes(srv, tmp_path, request):
    shared = Path(tempfile.mkdtemp(prefix="fd-getmail-", dir="/tmp"))
    shared.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    out = shared / "gm-out"
    for sub in ("", "new", "cur", "tmp"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        (out / sub).chmod(0o777)
    rc = tmp_path / "getmailrc"
    rc.write_text(f"[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\nport = {srv.port()}\n"
                  f"username = alice\npassword = secret\n\n[destination]\ntype = Maildir\npath = {out}/\n"
                  + ("user = nobody\n" if os.geteuid() == 0 else "")
                  + "\n[options]\nread_all = true\ndelete = true\n")
    gm_dir = tmp_path / "getmail-state"
    gm_dir.mkdir()
    r = subprocess.run([GETMAIL, "--getmaildir", str(gm_dir), "--rcfile", str(rc), "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _message_ids(out) == sorted(f"<m.{i}@example.org>" for i in range(1, 5))
    _assert_arrived_whole(out, srv.raws)
    assert _files(srv.maildir) == []


def test_fetchdeliver_fetch_against_our_pop3(srv, tmp_path):
    out = tmp_path / "fetched"
    cfg = tmp_path / "fetch.toml"
    cfg.write_text(f'[delivery]\nmaildir = "{out}"\nstate_dir = "{tmp_path / "state"}"\n'
                   f'cache_dir = "{tmp_path / "cache"}"\n\n'
                   f'[[account]]\nname = "ours"\nprotocol = "pop3"\nhost = "127.0.0.1"\nport = {srv.port()}\n'
                   f'tls = "none"\nuser = "alice"\npassword = "secret"\nafter = "delete"\n')
    r = subprocess.run([FD, "fetch", "-c", str(cfg)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_arrived_whole(out, srv.raws)
    assert _files(srv.maildir) == []


# -- the command and the daemon -----------------------------------------------------------------------------

def _wait_line(proc, log: Path, pattern: str, timeout: float = 30) -> str:
    import re

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, log.read_text(errors="replace"))
        if m:
            return m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)   # polling for a condition, with a deadline
    raise AssertionError(f"no /{pattern}/ in:\n{log.read_text(errors='replace')}")


@pytest.mark.parametrize("how", ["pop3", "daemon"])
def test_pop3_command_and_daemon_listener(tmp_path, how):
    from fetchdeliver.imapserver.auth import set_password

    maildir = tmp_path / "Maildir"
    _fill(str(maildir), 2)
    passwd = tmp_path / "passwd"
    set_password(str(passwd), "alice", "secret", "SHA256-CRYPT")
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[delivery]\nmaildir = "{maildir}"\nstate_dir = "{tmp_path / "state"}"\n'
                   f'cache_dir = "{tmp_path / "cache"}"\n\n[imap]\nlisten = ""\npasswd_file = "{passwd}"\n\n'
                   f'[pop3]\nlisten = "127.0.0.1:0"\nuidl_format = "%f"\nlogin_failure_delay = "0s"\n')
    r = subprocess.run([FD, "config", "check", "-c", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    log = tmp_path / "server.log"
    with open(log, "wb") as lf:
        proc = subprocess.Popen([FD, how, "-c", str(cfg)], stdout=lf, stderr=subprocess.STDOUT)
    try:
        port = int(_wait_line(proc, log, r"pop3: listening on 127\.0\.0\.1:(\d+)"))
        c = poplib.POP3("127.0.0.1", port, timeout=30)
        c.user("alice")
        c.pass_("secret")
        names = sorted(x.split()[1].decode() for x in c.uidl()[1])
        assert names == _files(str(maildir))     # %f: the Maildir file names (as Dovecot's %f)
        # Another process's POP3 server on the same Maildir meanwhile: -ERR [IN-USE] (flock on the folder).
        other = make_pop3_server(tmp_path, str(maildir))
        try:
            o = LineClient(other.port())
            assert o.login("alice", "secret").startswith(b"-ERR [IN-USE]")
            o.close()
        finally:
            other.stop()
        c.quit()
        if how == "daemon":
            # A changed [pop3] table restarts the listener on SIGHUP (port 0: a new port).
            cfg.write_text(cfg.read_text().replace('uidl_format = "%f"', 'uidl_format = "uid-%u"'))
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while log.read_text(errors="replace").count("pop3: listening on") < 2:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.05)   # polling for the log line, with a deadline
            import re

            port = int(re.findall(r"pop3: listening on 127\.0\.0\.1:(\d+)", log.read_text())[-1])
            c = poplib.POP3("127.0.0.1", port, timeout=30)
            c.user("alice")
            c.pass_("secret")
            assert sorted(x.split()[1] for x in c.uidl()[1]) == [b"uid-1", b"uid-2"]
            c.quit()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()


@pytest.mark.parametrize("line, key, words", [
    ('uidl_format = "%08Xq"', "pop3.uidl_format", "%q"),
    ('idle_timeout = "1m"', "pop3.idle_timeout", "10m"),
    ('expire = "soon"', "pop3.expire", "never"),
    ('tls_listen = "127.0.0.1:995"', "pop3.tls_listen", "cert"),
    ('listen = "nowhere"', "pop3.listen", "HOST:PORT"),
])
def test_bad_pop3_keys_are_config_errors_naming_the_key(tmp_path, line, key, words):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"[pop3]\n{line}\n")
    r = subprocess.run([FD, "config", "check", "-c", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert key in r.stderr + r.stdout and words in r.stderr + r.stdout, r.stderr + r.stdout


def test_hostile_input_and_a_message_expunged_meanwhile(srv):
    """A line over the limit ends that connection only; RETR of a message an IMAP client expunged is -ERR."""
    bad = LineClient(srv.port())
    bad.sock.sendall(b"USER " + b"a" * 20000 + b"\r\n")
    assert bad.line().startswith(b"-ERR")
    assert bad.line() == b""          # closed
    bad.close()
    c = LineClient(srv.port())
    assert c.login("alice", "secret").startswith(b"+OK")
    store = MaildirStore(srv.maildir)
    box = store.open("INBOX")
    box.expunge([m for m in box.sync() if m.uid == 1])   # as an IMAP EXPUNGE would
    box.close()
    status = c.cmd("RETR 1")[0]
    assert status.startswith(b"-ERR ") and b"deleted by another session" in status
    status, body = c.cmd("RETR 2", multi=True)
    assert status.startswith(b"+OK") and body.startswith(b"From: Sender 2")
    assert c.cmd("DELE 1")[0].startswith(b"+OK")
    assert c.cmd("QUIT")[0].startswith(b"+OK")     # deleting what is already gone is no error
    c.close()
    assert len(_files(srv.maildir)) == 3


def test_seen_at_quit_keeps_flags_an_imap_client_set_meanwhile(srv):
    c = LineClient(srv.port())
    assert c.login("alice", "secret").startswith(b"+OK")
    assert c.cmd("RETR 1", multi=True)[0].startswith(b"+OK")
    box = MaildirStore(srv.maildir).open("INBOX")
    first = next(m for m in box.sync() if m.uid == 1)
    box.set_flags([(first, frozenset({"\\Flagged"}))])     # as an IMAP STORE would, during the POP3 session
    box.close()
    assert c.cmd("QUIT")[0].startswith(b"+OK")
    c.close()
    box = MaildirStore(srv.maildir).open("INBOX")
    flags = {m.uid: m.flags for m in box.sync()}
    box.close()
    assert flags[1] == {"\\Flagged", "\\Seen"} and flags[2] == frozenset()


def test_expire_days_deletes_only_old_retrieved_messages(tmp_path):
    maildir = str(tmp_path / "Maildir")
    _fill(maildir, 3)
    new = os.path.join(maildir, "new")
    old = sorted(os.listdir(new))[0]            # message 1 arrived ten days ago
    ten_days_ago = time.time() - 10 * 86400
    os.utime(os.path.join(new, old), (ten_days_ago, ten_days_ago))
    server = make_pop3_server(tmp_path, maildir, expire=7)
    try:
        c = poplib.POP3("127.0.0.1", server.port(), timeout=30)
        assert c.capa()["EXPIRE"] == ["7"]
        c.user("alice")
        c.pass_("secret")
        c.retr(1)
        c.retr(2)
        c.quit()
    finally:
        server.stop()
    left = _files(maildir)
    assert len(left) == 2 and old.split(":")[0] not in left


def test_uidls_stable_across_restarts_and_a_lost_index(tmp_path):
    maildir = str(tmp_path / "Maildir")
    _fill(maildir, 5)

    def uidls() -> list[bytes]:
        server = make_pop3_server(tmp_path, maildir)
        try:
            c = poplib.POP3("127.0.0.1", server.port(), timeout=30)
            c.user("alice")
            c.pass_("secret")
            out = [x.split()[1] for x in c.uidl()[1]]
            c.quit()
            return out
        finally:
            server.stop()

    first = uidls()
    assert uidls() == first
    for name in os.listdir(maildir):
        if name.startswith("fetchdeliver-index"):
            os.unlink(os.path.join(maildir, name))      # the index is a cache: UIDs live in dovecot-uidlist
    assert uidls() == first
