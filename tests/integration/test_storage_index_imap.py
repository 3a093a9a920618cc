"""The IMAP server on the persistent index: a restarted server answers from it, and a deliverer
writing into the Maildir while sessions work loses and duplicates nothing."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import imapclient

from fetchdeliver.imapserver.auth import PasswdFileAuthenticator
from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer
from fetchdeliver.storage.index import INDEX_NAME
from fetchdeliver.storage.maildir import Uidlist
from imap_helpers import MULTIPART, make_server, plain

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _files(maildir):
    out = []
    for sub in ("cur", "new"):
        out += [os.path.join(maildir, sub, n) for n in os.listdir(os.path.join(maildir, sub))]
    return out


def _client(server):
    c = imapclient.IMAPClient("127.0.0.1", port=server.port(), ssl=False, timeout=30)
    c.login("alice", "secret")
    return c


def _restart(server, maildir, passwd):
    server.stop()
    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                       default_mail="maildir:" + maildir, login_failure_delay=0)
    return ThreadedServer(cfg).start()


def test_a_restarted_server_answers_envelope_bodystructure_and_header_search_from_the_index(tmp_path):
    server, maildir, passwd = make_server(tmp_path, n_plain=3, extra=[MULTIPART])
    try:
        c = _client(server)
        c.select_folder("INBOX")
        first = c.fetch(c.search(), ["ENVELOPE", "BODYSTRUCTURE", "FLAGS"])
        assert c.search(["SUBJECT", "number 2"]) == [2]
        c.add_flags([1], [b"\\Flagged"])
        c.logout()
        server = _restart(server, maildir, passwd)   # nothing in memory survives this
        # Content under a UID never changes (RFC 3501); change it anyway: only the index knows the old.
        for path in _files(maildir):
            with open(path, "r+b") as f:
                data = f.read().replace(b"number", b"xxxxxx").replace(b"body of", b"bxxy of")
                f.seek(0)
                f.write(data)
        c = _client(server)
        c.select_folder("INBOX", readonly=True)
        again = c.fetch(c.search(), ["ENVELOPE", "BODYSTRUCTURE", "FLAGS"])
        assert {u: (d[b"ENVELOPE"], d[b"BODYSTRUCTURE"]) for u, d in again.items()} == \
               {u: (d[b"ENVELOPE"], d[b"BODYSTRUCTURE"]) for u, d in first.items()}
        assert set(again[1][b"FLAGS"]) == {b"\\Flagged"}       # \Recent went with the first session
        assert c.search(["SUBJECT", "number 2"]) == [2]          # from the cached header fields
        assert c.search(["BODY", "bxxy"]) == [1, 2, 3]           # bodies are read, as they must be
        c.logout()
    finally:
        server.stop()


DELIVERER = r"""
import sys
from fetchdeliver.storage.maildir import MaildirStore
store = MaildirStore(sys.argv[1])
for i in range(int(sys.argv[2])):
    store.deliver(("From: d@example.org\nSubject: delivered %d\nMessage-ID: <d.%d@x>\n\nbody %d\n"
                   % (i, i, i)).encode())
"""


def test_deliverer_and_imap_sessions_at_once_lose_and_duplicate_nothing(tmp_path):
    n_deliver, n_append = 60, 12
    server, maildir, _ = make_server(tmp_path, n_plain=5)
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-c", DELIVERER, maildir, str(n_deliver)], env=env)
    try:
        a, b = _client(server), _client(server)
        a.select_folder("INBOX")
        b.select_folder("INBOX")
        appended = 0
        deadline = time.monotonic() + 120
        while (proc.poll() is None or appended < n_append) and time.monotonic() < deadline:
            a.noop()
            uids = a.search()
            if uids:
                a.add_flags(uids[-1:], [b"\\Seen"])
            if appended < n_append:
                b.append("INBOX", f"From: c@example.org\nSubject: appended {appended}\n\nx\n")
                appended += 1
            b.fetch(b.search(), ["FLAGS", "ENVELOPE"])
        assert proc.wait(60) == 0
        a.noop()
        final = a.fetch(a.search(), ["ENVELOPE"])
        subjects = sorted(d[b"ENVELOPE"].subject.decode() for d in final.values())
        want = sorted([f"m number {i}" for i in range(1, 6)] + [f"delivered {i}" for i in range(n_deliver)]
                      + [f"appended {i}" for i in range(n_append)])
        assert subjects == want
        uids = sorted(final)
        assert len(set(uids)) == len(uids) == len(_files(maildir))
        assert set(b.search()) == set(a.search())
        a.logout()
        b.logout()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()
    with open(os.path.join(maildir, "dovecot-uidlist")) as f:
        by_base = Uidlist.parse(f.read(), "dovecot-uidlist").by_base
    on_disk = {os.path.basename(p).split(":2,")[0] for p in _files(maildir)}
    assert set(by_base) == on_disk
    assert sorted(by_base.values()) == uids
    db = sqlite3.connect(os.path.join(maildir, INDEX_NAME))
    rows = dict(db.execute("SELECT uid, name FROM msg"))
    modseqs = [r[0] for r in db.execute("SELECT modseq FROM msg")]
    db.close()
    assert sorted(rows) == uids
    assert all(by_base[name.split(":2,")[0]] == uid for uid, name in rows.items())
    assert min(modseqs) >= 1


def test_header_search_mixes_indexed_and_new_messages(tmp_path):
    server, maildir, passwd = make_server(tmp_path, n_plain=4)
    try:
        c = _client(server)
        c.select_folder("INBOX")
        assert c.search(["SUBJECT", "number 3"]) == [3]      # fills the index's header fields
        c.logout()
        server = _restart(server, maildir, passwd)
        from fetchdeliver.storage.maildir import MaildirStore
        MaildirStore(maildir).deliver(plain(3, "late"))         # "late number 3": not indexed yet
        c = _client(server)
        c.select_folder("INBOX")
        assert c.search(["SUBJECT", "number 3"]) == [3, 5]
        assert c.search(["NOT", "SUBJECT", "number 3"]) == [1, 2, 4]
        assert c.search(["OR", "SUBJECT", "late", "FROM", "sender1@"]) == [1, 5]
        c.logout()
    finally:
        server.stop()


def test_header_search_from_the_index_finds_encoded_and_case_folded_subjects(tmp_path):
    """sqlite narrows a restarted server's header search to the values that may match; a subject
    whose match shows only after RFC 2047 decoding or Unicode case folding must still be found."""
    subjects = [b"Quarterly report", b"weekly notes", b"=?utf-8?q?the_QUARTERLY_figures?=",
                "\u212aelvin quarterly".encode(), b"nothing here", "caf\u00e9 quarterly".encode()]
    extra = [b"From: a@example.org\nSubject: " + s + b"\nMessage-ID: <s%d@example.org>\n\nbody\n" % i
             for i, s in enumerate(subjects)]
    server, maildir, passwd = make_server(tmp_path, n_plain=0, extra=extra)
    try:
        c = _client(server)
        c.select_folder("INBOX")
        assert c.search(["SUBJECT", "quarterly"]) == [1, 3, 4, 6]     # fills the index's header fields
        c.logout()
        server = _restart(server, maildir, passwd)
        c = _client(server)
        c.select_folder("INBOX", readonly=True)
        assert c.search(["SUBJECT", "quarterly"]) == [1, 3, 4, 6]
        assert c.search(["SUBJECT", "kelvin"]) == [4]               # U+212A KELVIN SIGN folds to "k"
        assert c.search(["SUBJECT", "notes"]) == [2]
        assert c.search(["SUBJECT", "absent"]) == []
        c.logout()
    finally:
        server.stop()
