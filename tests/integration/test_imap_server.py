"""The IMAP server against the imapclient library (a client nobody here wrote), on 127.0.0.1."""

from __future__ import annotations

import base64
import os
import socket
import ssl

import imapclient
import pytest

from fetchdeliver.delivery.maildir import MaildirStore
from imap_helpers import MULTIPART, RawClient, make_server, plain


@pytest.fixture
def srv(tmp_path):
    server, maildir, passwd = make_server(tmp_path, extra=[MULTIPART], idle_poll=600)
    server.maildir = maildir
    server.passwd = passwd
    yield server
    server.stop()


@pytest.fixture
def client(srv):
    c = imapclient.IMAPClient("127.0.0.1", port=srv.port(), ssl=False, timeout=30)
    c.login("alice", "secret")
    yield c
    try:
        c.logout()
    except Exception:
        pass


def test_capability_noop_id_namespace_enable_logout(srv):
    c = imapclient.IMAPClient("127.0.0.1", port=srv.port(), ssl=False, timeout=30)
    caps = set(c.capabilities())
    for cap in (b"IMAP4REV1", b"IDLE", b"UIDPLUS", b"MOVE", b"NAMESPACE", b"ID", b"ENABLE", b"UNSELECT",
                b"SPECIAL-USE", b"CHILDREN", b"LITERAL+", b"SASL-IR", b"AUTH=PLAIN"):
        assert cap in caps
    assert b"LOGINDISABLED" not in caps   # loopback
    c.noop()
    ident = c.id_({"name": "pytest"})[0]
    assert dict(zip(ident[::2], ident[1::2]))[b"name"] == b"fetchdeliver"
    c.login("alice", "secret")
    ns = c.namespace()
    assert ns.personal == (("", "/"),) and ns.other is None and ns.shared is None
    assert c.enable("CONDSTORE") == [b"CONDSTORE"]   # RFC 7162
    assert c.enable("X-UNKNOWN-EXT") == []
    assert c.logout() == b"Logging out."  # the BYE text


def test_login_failures(srv):
    c = imapclient.IMAPClient("127.0.0.1", port=srv.port(), ssl=False, timeout=30)
    with pytest.raises(imapclient.exceptions.LoginError):
        c.login("alice", "wrong")
    with pytest.raises(imapclient.exceptions.LoginError):
        c.login("nobody-here", "secret")
    c.login("alice", "secret")
    c.logout()


def test_authenticate_plain_with_and_without_initial_response(srv):
    c = imapclient.IMAPClient("127.0.0.1", port=srv.port(), ssl=False, timeout=30)
    c.plain_login("alice", "secret")
    assert c.select_folder("INBOX")[b"EXISTS"] == 4
    c.logout()
    r = RawClient(srv.port())
    token = base64.b64encode(b"\0alice\0secret")
    assert r.command("a1", b"AUTHENTICATE PLAIN " + token)[-1].startswith(b"a1 OK")
    r.close()
    r = RawClient(srv.port())
    bad = base64.b64encode(b"\0alice\0nope")
    assert r.command("a1", b"AUTHENTICATE PLAIN " + bad)[-1].startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    r.close()


def test_select_examine_fetch_envelope_bodystructure_sections(client):
    info = client.select_folder("INBOX")
    assert info[b"EXISTS"] == 4 and info[b"RECENT"] == 4 and info[b"READ-WRITE"]
    uids = client.search()
    assert uids == [1, 2, 3, 4]
    data = client.fetch([4], ["ENVELOPE", "BODYSTRUCTURE", "RFC822.SIZE", "INTERNALDATE", "FLAGS",
                              "BODY.PEEK[1]", "BODY.PEEK[1.MIME]", "BODY.PEEK[2.HEADER]", "BODY.PEEK[2.TEXT]",
                              "BODY.PEEK[3]<0.4>", "BODY.PEEK[HEADER.FIELDS (SUBJECT TO)]",
                              "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT TO CC FROM DATE MESSAGE-ID)]"])[4]
    env = data[b"ENVELOPE"]
    assert env.subject == b"=?UTF-8?B?w4RyZ2Vy?= report"
    assert env.from_[0].name == b"Ann Example" and env.from_[0].mailbox == b"ann" and \
        env.from_[0].host == b"example.org"
    assert env.sender == env.from_ and env.reply_to == env.from_
    # A group: start marker, two members, end marker, then a plain address.
    to = [(a.name, a.mailbox, a.host) for a in env.to]
    assert to == [(None, b"Team", None), (None, b"bob", b"example.com"), (None, b"carol", b"example.com"),
                  (None, None, None), (None, b"dave", b"example.net")]
    assert env.message_id == b"<multi.1@example.org>"
    bs = data[b"BODYSTRUCTURE"]
    assert bs.is_multipart
    parts, subtype = bs[0], bs[1]
    assert subtype == b"mixed" and len(parts) == 3
    assert parts[0][:2] == (b"text", b"plain") and parts[0][2] == (b"charset", b"utf-8")
    assert parts[0][5] == b"quoted-printable"
    assert parts[1][:2] == (b"message", b"rfc822")
    assert parts[2][:2] == (b"application", b"pdf") and parts[2][5] == b"base64"
    assert parts[2][8] == (b"attachment", (b"filename", b"r.pdf"))
    assert data[b"BODY[1]"] == b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln, the zebra report"
    assert data[b"BODY[1.MIME]"] == b"Content-Type: text/plain; charset=utf-8\r\n" \
                                    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    assert data[b"BODY[2.HEADER]"] == b"From: inner@example.org\r\nSubject: inner message\r\n\r\n"
    assert data[b"BODY[2.TEXT]"] == b"inner body"
    assert data[b"BODY[3]<0>"] == b"JVBE"
    assert data[b"BODY[HEADER.FIELDS (SUBJECT TO)]"] == (
        b"To: Team: bob@example.com, carol@example.com;, dave@example.net\r\n"
        b"Subject: =?UTF-8?B?w4RyZ2Vy?= report\r\n\r\n")
    assert data[b"BODY[HEADER.FIELDS.NOT (SUBJECT TO CC FROM DATE MESSAGE-ID)]"] == (
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n")
    raw = MULTIPART.replace(b"\n", b"\r\n")
    assert data[b"RFC822.SIZE"] == len(raw)
    assert b"\\Seen" not in data[b"FLAGS"]          # PEEK does not set \Seen
    full = client.fetch([4], ["BODY[]"])[4]
    assert full[b"BODY[]"] == raw and b"\\Seen" in full[b"FLAGS"]
    rfc = client.fetch([1], ["RFC822.HEADER", "RFC822.TEXT"])[1]
    assert rfc[b"RFC822.TEXT"] == b"body of m 1\r\n"
    assert rfc[b"RFC822.HEADER"].endswith(b"\r\n\r\n")
    ex = client.select_folder("INBOX", readonly=True)
    assert ex[b"READ-ONLY"]
    with pytest.raises(imapclient.exceptions.IMAPClientError):
        client.add_flags([1], [b"\\Flagged"])


def test_store_flags_and_keywords_on_disk(client, srv):
    client.select_folder("INBOX")
    assert client.add_flags([1, 2], [b"\\Flagged", b"$Label1"])[1] == (b"\\Flagged", b"\\Recent", b"$Label1")
    client.remove_flags([2], [b"\\Flagged"])
    client.set_flags([3], [b"\\Answered", b"\\Seen"])
    files = {}
    for name in os.listdir(os.path.join(srv.maildir, "cur")):
        base, info = name.split(":2,")
        files[base] = info
    assert sorted(files.values()) == ["", "Fa", "RS", "a"]
    with open(os.path.join(srv.maildir, "dovecot-keywords")) as f:
        assert f.read() == "0 $Label1\n"
    assert client.search(["KEYWORD", "$Label1"]) == [1, 2]
    assert client.search(["FLAGGED"]) == [1]
    assert client.search(["UNKEYWORD", "$Label1", "NOT", "ANSWERED"]) == [4]


def test_search_keys(client):
    client.select_folder("INBOX")
    assert client.search(["SUBJECT", "number 2"]) == [2]
    assert client.search(["FROM", "sender3@example.org"]) == [3]
    assert client.search(["SUBJECT", "Ärger"], charset="UTF-8") == [4]       # RFC 2047 decoded
    assert client.search(["CC", "Jürgen"], charset="UTF-8") == [4]
    assert client.search(["BODY", "grüße aus köln"], charset="UTF-8") == [4]  # QP + charset decoded
    assert client.search(["TEXT", "zebra"]) == [4]
    assert client.search(["HEADER", "Message-ID", "<m.2@example.org>"]) == [2]
    assert client.search(["OR", "SUBJECT", "number 1", "SUBJECT", "number 3"]) == [1, 3]
    assert client.search(["NOT", "SUBJECT", "number"]) == [4]
    assert client.search(["SENTON", "24-Nov-2025"]) == [1, 2, 3]
    assert client.search(["SENTSINCE", "1-Dec-2025"]) == [4]
    assert client.search(["SENTBEFORE", "1-Dec-2025"]) == [1, 2, 3]
    assert client.search(["LARGER", "500"]) == [4]
    assert client.search(["SMALLER", "500"]) == [1, 2, 3]
    assert client.search(["SINCE", "1-Jan-2000", "BEFORE", "1-Jan-2100"]) == [1, 2, 3, 4]
    assert client.search(["2:3"]) == [2, 3]
    assert client.search(["UID", "3:*"]) == [3, 4]
    assert client.search(["NEW"]) == [1, 2, 3, 4] and client.search(["OLD"]) == []
    assert client.search(["UNSEEN", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNANSWERED"]) == [1, 2, 3, 4]
    with pytest.raises(imapclient.exceptions.IMAPClientError):
        client.search(["SUBJECT", "x"], charset="KOI8-R")


def test_mailbox_management_list_lsub_status_special_use(client, srv):
    client.create_folder("Work")
    client.create_folder("Work/Reports")
    client.create_folder("Ärger")
    client._imap._simple_command("CREATE", '"Sent Items"', "(USE (\\Sent))")
    assert os.path.isdir(os.path.join(srv.maildir, ".Work.Reports", "cur"))
    assert os.path.isdir(os.path.join(srv.maildir, ".&AMQ-rger"))
    folders = {name: set(flags) for flags, _sep, name in client.list_folders()}
    assert folders["Work"] == {b"\\HasChildren"}
    assert folders["Work/Reports"] == {b"\\HasNoChildren"}
    assert "Ärger" in folders
    assert b"\\Sent" in folders["Sent Items"]
    assert [n for _f, _s, n in client.list_folders("", "%")].count("Work/Reports") == 0
    assert [n for _f, _s, n in client.list_folders("Work/", "%")] == ["Work/Reports"]
    assert client.find_special_folder(b"\\Sent") == "Sent Items"
    client.subscribe_folder("Work")
    client.subscribe_folder("Ärger")
    assert {n for _f, _s, n in client.list_sub_folders()} == {"Work", "Ärger"}
    client.unsubscribe_folder("Work")
    assert {n for _f, _s, n in client.list_sub_folders()} == {"Ärger"}
    client.rename_folder("Work", "Job")
    names = {n for _f, _s, n in client.list_folders()}
    assert {"Job", "Job/Reports"} <= names and "Work" not in names
    client.delete_folder("Job/Reports")
    assert not client.folder_exists("Job/Reports")
    st = client.folder_status("INBOX", ["MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN"])
    assert st[b"MESSAGES"] == 4 and st[b"UIDNEXT"] == 5 and st[b"UNSEEN"] == 4
    with pytest.raises(imapclient.exceptions.IMAPClientError):
        client.select_folder("Does/Not/Exist")


def test_append_copy_move_uidplus_expunge_close_unselect(client, srv):
    client.create_folder("Archive")
    resp = client.append("Archive", b"Subject: appended\r\n\r\nhello\r\n", [b"\\Seen", b"Later"],
                         msg_time=None)
    assert resp.startswith(b"[APPENDUID ")
    uidvalidity, uid = map(int, resp[len(b"[APPENDUID "):].split(b"]")[0].split())
    r = RawClient(srv.port())
    r.command("a", b"LOGIN alice secret")
    r.command("b", b"SELECT INBOX")
    assert r.command("c", b"UID COPY 1:2 Archive")[-1].startswith(b"c OK [COPYUID %d 1,2 2,3]" % uidvalidity)
    r.close()
    client.select_folder("INBOX")
    client.move([3], "Archive")
    assert client.search() == [1, 2, 4]
    client.delete_messages([1])
    assert client.expunge()[1] == [(1, b"EXPUNGE")]
    client.unselect_folder()
    info = client.select_folder("Archive")
    assert info[b"EXISTS"] == 4 and info[b"UIDVALIDITY"] == uidvalidity
    got = client.fetch("1:*".split(",") if False else [1, 2, 3, 4], ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    subjects = [got[u][b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() for u in sorted(got)]
    assert subjects == [b"Subject: appended", b"Subject: m number 1", b"Subject: m number 2",
                        b"Subject: m number 3"]
    assert set(got[1][b"FLAGS"]) >= {b"\\Seen", b"Later"}
    client.delete_messages([2])
    client.close_folder()            # CLOSE expunges silently
    st = client.folder_status("Archive", ["MESSAGES"])
    assert st[b"MESSAGES"] == 3
    with pytest.raises(imapclient.exceptions.IMAPClientError) as e:
        client.append("Nope", b"Subject: x\r\n\r\n")
    assert "TRYCREATE" in str(e.value)


def test_uid_commands(client):
    client.select_folder("INBOX")
    client.delete_messages([1])
    client.expunge()
    assert client.search() == [2, 3, 4]    # imapclient uses UID SEARCH
    typ, data = client._imap.uid("FETCH", "3", "(FLAGS)")
    assert typ == "OK" and b"UID 3" in data[0] and data[0].startswith(b"2 (")
    typ, data = client._imap.uid("STORE", "2:3", "+FLAGS", "(\\Deleted)")
    assert typ == "OK"
    typ, data = client._imap.uid("EXPUNGE", "3")
    assert typ == "OK"
    assert client.search() == [2, 4]


def test_idle_reports_a_delivery(srv, client):
    client.select_folder("INBOX")
    client.idle()
    MaildirStore(srv.maildir).deliver(plain(99, "late"))
    responses = client.idle_check(timeout=20)   # idle_poll is 600 s: only the watcher can answer this fast
    client.idle_done()
    assert (5, b"EXISTS") in responses


def test_other_session_changes_are_reported(srv, client):
    client.select_folder("INBOX")
    other = imapclient.IMAPClient("127.0.0.1", port=srv.port(), ssl=False, timeout=30)
    other.login("alice", "secret")
    other.select_folder("INBOX")
    other.add_flags([2], [b"\\Flagged"])
    other.delete_messages([1])
    other.expunge()
    other.logout()
    got = client.noop()[1]
    assert (1, b"EXPUNGE") in got
    assert any(r[1] == b"FETCH" and b"\\Flagged" in r[2][r[2].index(b"FLAGS") + 1] for r in got)


def test_literals_limits_and_bad_commands(srv):
    r = RawClient(srv.port())
    r.send(b"a1 LOGIN {5}\r\n")
    assert r.line() == b"+ OK\r\n"
    r.send(b"alice {6+}\r\nsecret\r\n")
    assert r.until("a1")[-1].startswith(b"a1 OK")
    assert r.command("a2", b"FROB")[-1].startswith(b"a2 BAD")
    assert r.command("a3", b"SELECT")[-1].startswith(b"a3 BAD")
    assert r.command("a4", b"FETCH 1 FLAGS")[-1].startswith(b"a4 BAD")   # not selected
    r.command("a5", b"SELECT INBOX")
    assert r.command("a6", b"FETCH 99 FLAGS")[-1].startswith(b"a6 BAD")
    assert r.command("a7", b"FETCH 1 (BODY[1.X])")[-1].startswith(b"a7 BAD")
    r.send(b"a8 APPEND INBOX {999999999999}\r\n")
    assert r.until("a8")[-1].startswith(b"a8 BAD [TOOBIG]")
    r.send(b"a9 NOOP " + b"x" * 70000 + b"\r\n")
    assert r.until("a9")[-1].startswith(b"* BYE")
    r.close()
    # The server still serves others.
    r = RawClient(srv.port())
    assert r.command("b1", b"CAPABILITY")[-1].startswith(b"b1 OK")
    r.close()


def _external_ip():
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("192.0.2.1", 9))   # no packet is sent for UDP connect
        ip = s.getsockname()[0]
        s.close()
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


def test_logindisabled_on_non_loopback_plaintext(tmp_path):
    ip = _external_ip()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect to")
    server, _md, _pw = make_server(tmp_path)
    try:
        server.stop()
    finally:
        pass
    from fetchdeliver.imapserver.auth import PasswdFileAuthenticator
    from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer

    cfg = ServerConfig(listen=[f"{ip}:0"], authenticator=PasswdFileAuthenticator(_pw),
                       default_mail="maildir:" + _md, login_failure_delay=0)
    s2 = ThreadedServer(cfg).start()
    try:
        r = RawClient(s2.port(), ip)
        assert b"LOGINDISABLED" in r.greeting and b"AUTH=PLAIN" not in r.greeting
        assert r.command("a", b"LOGIN alice secret")[-1].startswith(b"a NO [PRIVACYREQUIRED]")
        r.close()
    finally:
        s2.stop()


def test_starttls_and_implicit_tls(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    server, _md, _pw = make_server(tmp_path, ssl_context=ctx, tls_listen=["127.0.0.1:0"])
    try:
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        c = imapclient.IMAPClient("127.0.0.1", port=server.port(False), ssl=False, timeout=30)
        assert b"STARTTLS" in c.capabilities()
        c.starttls(client_ctx)
        c.login("alice", "secret")
        assert c.select_folder("INBOX")[b"EXISTS"] == 3
        c.logout()
        c = imapclient.IMAPClient("127.0.0.1", port=server.port(True), ssl=True, ssl_context=client_ctx,
                                  timeout=30)
        assert b"STARTTLS" not in c.capabilities()
        c.login("alice", "secret")
        c.logout()
    finally:
        server.stop()


def test_userdb_mail_selects_the_users_maildir(tmp_path):
    server, _md, passwd = make_server(tmp_path)
    try:
        other = tmp_path / "bobmail"
        MaildirStore(str(other)).deliver(plain(1, "bob"))
        from fetchdeliver.imapserver.auth import hash_password

        with open(passwd, "a") as f:
            f.write(f"bob:{hash_password('pw2', 'SHA512-CRYPT')}::::::userdb_mail=maildir:{other}\n")
        c = imapclient.IMAPClient("127.0.0.1", port=server.port(), ssl=False, timeout=30)
        c.login("bob", "pw2")
        c.select_folder("INBOX")
        assert c.fetch([1], ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])[1][
            b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() == b"Subject: bob number 1"
        c.logout()
    finally:
        server.stop()
