"""The Maildir++ quota (`maildirsize`) against a real Dovecot with `quota = maildir:User quota`, and
its enforcement at every delivery path: the MDA (a subprocess: exit 77, or 75 with [quota] tempfail),
LMTP over a socket (552 5.2.2 / 452 4.2.2), and fetch from Dovecot (the message stays on the server)."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from conftest import _start, make_message
from fetchdeliver.errors import QuotaExceeded
from fetchdeliver.storage.maildir import MaildirStore
from fetchdeliver.storage.quota import MaildirQuota, read_maildirsize
from fetchsetup import FetchSetup
from lmtp_support import RawClient, Server, dot_stuff, to_wire, write_config
from quota_support import chown_tree, dovecot_quota, dovecot_quota_config

LIMIT_K = 10   # KiB, for every user (Dovecot's quota_rule and our [quota] storage)


def body(n: int, size: int = 3000) -> bytes:
    return f"Subject: quota test {n}\nMessage-ID: <q{n}@example.org>\n\n".encode() + b"x" * size + b"\n"


@pytest.fixture
def dc(request):
    return _start(request, users={"alice": "secret", "bob": "secret2"},
                  extra_config=dovecot_quota_config(f"*:storage={LIMIT_K}K"),
                  user_extra={"bob": "userdb_quota_rule=*:storage=20K userdb_quota_rule2=*:messages=3"})


def maildir_of(dc, user: str) -> str:
    return os.path.join(dc.home(user), "Maildir")


def our_store(dc, user: str, limits=(LIMIT_K * 1024, None)) -> MaildirStore:
    store = MaildirStore(maildir_of(dc, user))
    store.quota = MaildirQuota(store.root, lambda: limits)
    return store


def kib(n: int) -> int:
    """STORAGE as Dovecot reports it: KiB, rounded up."""
    return (n + 1023) // 1024


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_dovecot_reads_the_maildirsize_we_write(dc):
    store = our_store(dc, "alice")
    for i in range(2):
        store.deliver(body(i))
    ours = store.quota.status()
    assert (ours.bytes, ours.messages) == (2 * len(body(0)), 2)
    chown_tree(store.root, dc.mail_uid, dc.mail_gid)
    text = read(os.path.join(store.root, "maildirsize"))
    assert text.splitlines()[0] == f"{LIMIT_K * 1024}S"       # the limits line as Dovecot writes it

    assert dovecot_quota(dc, "alice") == {"STORAGE": (kib(ours.bytes), LIMIT_K)}
    # Dovecot believed our file: it did not rebuild it.
    assert read(os.path.join(store.root, "maildirsize")) == text

    # What Dovecot then reads is the file, not a count of the Maildir: a total we wrote by hand
    # (usage no Maildir scan would give) is what it reports.
    with open(os.path.join(store.root, "maildirsize"), "w") as f:
        f.write(f"{LIMIT_K * 1024}S\n4096 1\n")
    assert dovecot_quota(dc, "alice") == {"STORAGE": (4, LIMIT_K)}


def test_we_read_the_maildirsize_dovecot_writes(dc):
    c = dc.imap("alice")
    try:
        for i in range(3):
            c.append("INBOX", to_wire(body(i)))
        c.select_folder("INBOX")
        c.delete_messages([1])
        c.expunge()
    finally:
        c.logout()
    path = os.path.join(maildir_of(dc, "alice"), "maildirsize")
    parsed = read_maildirsize(path)
    assert parsed is not None                       # our parser took Dovecot's file as it is
    assert parsed.lines == 5                        # a total, three appends, one expunge ("-N -1")
    assert any(line.startswith("-") for line in read(path).splitlines())
    st = our_store(dc, "alice").quota.status()
    assert (st.bytes, st.messages) == (2 * len(body(0)), 2)
    assert dovecot_quota(dc, "alice") == {"STORAGE": (kib(st.bytes), LIMIT_K)}
    assert read(path).count("\n") == 6              # our reading did not rewrite it


def test_full_means_full_for_both(dc):
    store = our_store(dc, "alice")
    stored = 0
    with pytest.raises(QuotaExceeded) as exc:
        while True:
            store.deliver(body(stored))
            stored += 1
    assert exc.value.resource == "STORAGE" and not exc.value.temporary
    assert stored == (LIMIT_K * 1024) // len(body(0))
    chown_tree(store.root, dc.mail_uid, dc.mail_gid)
    c = dc.imap("alice")
    try:
        # Dovecot refuses the same message (RFC 9208: NO [OVERQUOTA]) ...
        with pytest.raises(Exception) as refused:
            c.append("INBOX", to_wire(body(99)))
        assert "OVERQUOTA" in str(refused.value) or "Quota exceeded" in str(refused.value)
        # ... and when Dovecot expunges one, the "-N -1" line it appends makes room for us.
        c.select_folder("INBOX")
        c.delete_messages([1])
        c.expunge()
    finally:
        c.logout()
    store.deliver(body(100))
    assert store.quota.status().messages == stored


def mda(cmd, cfg, user, raw, *extra):
    return subprocess.run(cmd + ["deliver", "-c", cfg, "-a", user, *extra], input=raw, capture_output=True,
                          timeout=60)


@pytest.mark.parametrize("tempfail", [False, True])
def test_mda_per_user_rule_from_the_passwd_file(dc, tmp_path, fetchdeliver_cmd, tempfail):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[delivery]\nmaildir = "{maildir_of(dc, "bob")}"\nstate_dir = "{tmp_path}/state"\n\n'
                   f'[quota]\nstorage = "{LIMIT_K}K"\npasswd_file = "{dc.passwd_file}"\n'
                   f'tempfail = {"true" if tempfail else "false"}\n')
    for i in range(3):   # bob's own rule: 3 messages, 20K (not the table's 10K)
        r = mda(fetchdeliver_cmd, str(cfg), "bob", body(i))
        assert r.returncode == 0, r.stderr
    r = mda(fetchdeliver_cmd, str(cfg), "bob", body(3))
    assert r.returncode == (75 if tempfail else 77), r.stderr
    assert b"Quota exceeded" in r.stderr and b"3 of 3 messages" in r.stderr
    assert len(MaildirStore(maildir_of(dc, "bob")).open("INBOX").sync()) == 3
    chown_tree(maildir_of(dc, "bob"), dc.mail_uid, dc.mail_gid)
    assert dovecot_quota(dc, "bob") == {"STORAGE": (kib(3 * len(body(0))), 20), "MESSAGE": (3, 3)}


def lmtp_send(server, rcpts, raw):
    c = RawClient(server.host, server.port)
    try:
        c.reply()
        c.cmd("LHLO test")
        c.cmd("MAIL FROM:<sender@example.org>")
        for r in rcpts:
            assert c.cmd(f"RCPT TO:<{r}>")[0] == 250
        c.cmd("DATA")
        c.send(dot_stuff(to_wire(raw)))
        return [c.reply() for _ in rcpts]
    finally:
        c.close()


@pytest.mark.parametrize("tempfail", [False, True])
def test_lmtp_answers_over_quota_per_recipient(tmp_path, tempfail):
    full, roomy = tmp_path / "full", tmp_path / "roomy"
    cfg = write_config(tmp_path, f"""
        [[recipient]]
        address = "full@example.org"
        maildir = "{full}"

        [[recipient]]
        address = "roomy@example.org"
        maildir = "{roomy}"

        [quota]
        storage = 11000
        passwd_file = "{tmp_path}/passwd"
        tempfail = {"true" if tempfail else "false"}
        """)
    (tmp_path / "passwd").write_text("roomy@example.org:{PLAIN}x::::::userdb_quota_rule=*:storage=1M\n")
    server = Server(cfg)
    try:
        replies = [lmtp_send(server, ["full@example.org", "roomy@example.org"], body(i)) for i in range(4)]
    finally:
        server.stop()
    assert [r[1][0] for r in replies] == [250] * 4                       # its own 1M rule
    assert [r[0][0] for r in replies[:3]] == [250] * 3                   # 3 x 3.3 kB fit in 11000 bytes
    code, text = replies[3][0]
    assert (code, text[0].split()[0]) == ((452, "4.2.2") if tempfail else (552, "5.2.2"))
    assert "Quota exceeded" in text[0]
    assert len(MaildirStore(str(full)).open("INBOX").sync()) == 3
    assert read_maildirsize(str(full / "maildirsize")).limits == (11000, None)


def test_fetch_leaves_what_does_not_fit_on_the_server(dc, tmp_path, fetchdeliver_cmd):
    msgs = [make_message(i, "quota") for i in range(4)]
    dc.append_many("alice", msgs)
    setup = FetchSetup(tmp_path, dc, fetchdeliver_cmd)
    setup.account("work", "imap", "none", after="delete")
    with open(setup.config, "a") as f:
        f.write("\n[quota]\nmessages = 2\n")
    r = setup.run()
    assert len(setup.delivered()) == 2
    assert "left on the server" in r.stderr and "Quota exceeded" in r.stderr, r.stderr
    left = dc.contents("alice")
    assert len(left) == 2                       # deleted only what was delivered
    assert sorted(raw for _, raw in left.values()) != []
    # Room made: the next run takes the rest.
    store = MaildirStore(setup.maildir)
    box = store.open("INBOX")
    box.expunge(box.sync())
    r = setup.run()
    assert len(setup.delivered()) == 2 and dc.contents("alice") == {}, r.stderr


def _lda(dc, raw: bytes) -> int:
    """dovecot-lda with the fixture's config delivering to alice: 0 stored, 77 refused (-e)."""
    return subprocess.run(["/usr/lib/dovecot/dovecot-lda", "-c", dc.conf, "-d", "alice", "-e"], input=raw,
                          capture_output=True, timeout=60).returncode


@pytest.mark.parametrize("grace", [False, True])
def test_the_verdict_on_the_last_message_is_dovecots(request, grace):
    """On a nearly full Maildir, messages of several sizes: our delivery's verdict is dovecot-lda's
    and our IMAP APPEND's is Dovecot's APPEND's, with Dovecot's quota_grace (10%, deliveries only)
    against [quota] grace = "10%", and with no grace on both."""
    if not os.path.exists("/usr/lib/dovecot/dovecot-lda"):
        pytest.skip("dovecot-lda is not installed")
    dc = _start(request, users={"alice": "secret"},
                extra_config=dovecot_quota_config(f"*:storage={LIMIT_K}K", grace=grace))
    store = our_store(dc, "alice")
    store.quota.grace = "10%" if grace else 0
    for i in range(3):
        store.deliver(body(i))                   # about 9.2 of 10 KiB
    chown_tree(store.root, dc.mail_uid, dc.mail_gid)
    sizes = [500, 900, 1500, 2000, 2400, 3000]
    verdicts = {"ours/deliver": [], "lda": [], "ours/append": [], "dovecot/append": []}

    def ours(raw, g):
        try:
            store.quota.check(len(raw), grace=g)
            return True
        except QuotaExceeded:
            return False

    c = dc.imap("alice")
    try:
        c.select_folder("INBOX")

        def undo():
            c.noop()
            found = c.search(["SUBJECT", "g"])
            if found:
                c.delete_messages(found)
                c.expunge()

        for n in sizes:
            raw = b"Subject: g\n\n" + b"x" * n      # LF only: Dovecot stores these bytes as they are
            verdicts["ours/deliver"].append(ours(raw, True))
            verdicts["ours/append"].append(ours(raw, False))
            code = _lda(dc, raw)
            assert code in (0, 77), code
            verdicts["lda"].append(code == 0)
            undo()
            try:
                c.append("INBOX", raw)
                verdicts["dovecot/append"].append(True)
                undo()
            except Exception as e:
                assert "OVERQUOTA" in str(e) or "Quota exceeded" in str(e), e
                verdicts["dovecot/append"].append(False)
    finally:
        c.logout()
    assert verdicts["ours/deliver"] == verdicts["lda"], verdicts
    assert verdicts["ours/append"] == verdicts["dovecot/append"], verdicts
    assert verdicts["dovecot/append"].count(True) == 2            # 500 and 900 fit in the ~1.1 KiB left
    assert verdicts["lda"].count(True) == (4 if grace else 2), verdicts   # 10% more: up to 2000


def test_pop3_dele_gives_the_room_back(tmp_path):
    from fetchdeliver.config import Settings
    from pop3_support import LineClient, make_pop3_server

    maildir = str(tmp_path / "Maildir")
    store = MaildirStore(maildir)
    store.quota = MaildirQuota(maildir, lambda: (None, 3))
    for i in range(3):
        store.deliver(body(i))
    server = make_pop3_server(tmp_path, maildir)
    server.server.config.quota_settings = Settings({"quota": {"messages": 3}}, "test")
    try:
        c = LineClient(server.port())
        c.login("alice", "secret")
        assert c.cmd("DELE 1")[0].startswith(b"+OK")
        assert c.cmd("QUIT")[0].startswith(b"+OK")
        c.close()
    finally:
        server.stop()
    lines = read(os.path.join(maildir, "maildirsize")).splitlines()
    assert lines[-1] == f"-{len(body(0))} -1"             # as Dovecot's pop3 writes it
    store.deliver(body(9))                                 # room for one again


@pytest.mark.parametrize("tempfail", [False, True])
def test_lmtp_over_quota_answers_as_dovecots_lmtp(request, tmp_path, tempfail):
    """The same recipient over the same quota: Dovecot's LMTP (quota_full_tempfail) and ours
    ([quota] tempfail) give the same code and enhanced code, and both start with Dovecot's text."""
    from dovecot import free_ports

    port = free_ports(1)[0]
    extra = dovecot_quota_config("*:messages=1") + (
        f"service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n"
        "lmtp_save_to_detail_mailbox = no\npostmaster_address = postmaster@example.org\n"
        f"quota_full_tempfail = {'yes' if tempfail else 'no'}\n")   # an LDA/LMTP setting, not a plugin one
    dc = _start(request, users={"alice": "secret"}, protocols=("imap", "pop3", "lmtp"), extra_config=extra)
    ours_dir = tmp_path / "ours"
    cfg = write_config(tmp_path, f"""
        [[recipient]]
        address = "alice"
        maildir = "{ours_dir}"

        [quota]
        messages = 1
        tempfail = {"true" if tempfail else "false"}
        """)
    server = Server(cfg)

    class Peer:   # what lmtp_send needs of a server: host and port
        def __init__(self, host, port):
            self.host, self.port = host, port

    deadline = time.monotonic() + 20
    while True:   # Dovecot's lmtp listener comes up with the master; poll for it
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, dc.read_log()
            time.sleep(0.05)
    try:
        answers = {}
        for name, peer in (("dovecot", Peer("127.0.0.1", port)), ("ours", server)):
            answers[name] = [lmtp_send(peer, ["alice"], body(i))[0] for i in range(2)]
    finally:
        server.stop()
    for name, (first, second) in answers.items():
        assert first[0] == 250, (name, first)
    d, o = answers["dovecot"][1], answers["ours"][1]
    assert (d[0], d[1][0].split()[0]) == (o[0], o[1][0].split()[0]) == \
        ((452, "4.2.2") if tempfail else (552, "5.2.2")), answers
    assert "Quota exceeded (mailbox for user is full)" in d[1][0] and \
        "Quota exceeded (mailbox for user is full)" in o[1][0], answers
