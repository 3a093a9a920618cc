"""Delivering into PostgreSQL: the MDA and LMTP with [storage] url, `db migrate` and `store copy`
as commands, and a PostgreSQL restarted during deliveries (MDA exit 75, LMTP 4xx, nothing
half-stored)."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install '.[postgres]')")

from fetchdeliver.storage.maildir import MaildirStore  # noqa: E402
from fetchdeliver.storage.postgres import PostgresStore, close_pools  # noqa: E402
from lmtp_support import RawClient, Server, dot_stuff, split_trace, to_wire, write_config  # noqa: E402
from postgres_support import pg_url, postgres_server  # noqa: E402,F401

CORPUS = os.path.join(os.path.dirname(__file__), "..", "corpus", "odd")


def run(cmd, *args, stdin=b"", timeout=120):
    return subprocess.run(cmd + list(args), input=stdin, capture_output=True, timeout=timeout)


@pytest.fixture
def db(pg_url, fetchdeliver_cmd):
    r = run(fetchdeliver_cmd, "db", "migrate", pg_url)
    assert r.returncode == 0, r.stderr
    from fetchdeliver.storage import pgschema

    steps = ", ".join(str(n) for n in range(1, pgschema.LATEST + 1))
    assert f"applied step(s) {steps}".encode() in r.stdout, r.stdout
    r = run(fetchdeliver_cmd, "db", "migrate", pg_url)
    assert r.returncode == 0 and b"nothing to do" in r.stdout
    yield pg_url
    close_pools()


def messages(url: str, user: str, mailbox: str = "INBOX") -> list[bytes]:
    store = PostgresStore(url, user=user)
    if not store.exists(mailbox):
        return []
    box = store.open(mailbox, readonly=True)
    return [box.read(m) for m in box.sync()]


def test_mda_delivers_into_postgres_byte_exact_with_rules(tmp_path, db, fetchdeliver_cmd):
    rules = tmp_path / "rules.sieve"
    rules.write_text('require "fileinto";\nif header :contains "subject" "zzreportzz" { fileinto "Work/Reports"; }\n')
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[delivery]\nrules = "{rules}"\nstate_dir = "{tmp_path}/state"\n\n'
                   f'[storage]\nurl = "{db}"\nuser = "alice"\n')
    odd = []
    for name in sorted(os.listdir(CORPUS)):
        with open(os.path.join(CORPUS, name), "rb") as f:
            odd.append(f.read())
    for raw in odd + [b"Subject: weekly zzreportzz\n\nfigures\n"]:
        r = run(fetchdeliver_cmd, "deliver", "-c", str(cfg), stdin=raw)
        assert r.returncode == 0, r.stderr
    from fetchdeliver.sources.stdin import split_from_line

    # byte-exact, in delivery order (UID order); the MDA drops a leading mbox From_ line, as procmail does
    assert messages(db, "alice") == [split_from_line(raw)[0] for raw in odd]
    assert messages(db, "alice", "Work/Reports") == [b"Subject: weekly zzreportzz\n\nfigures\n"]


def test_config_check_names_a_bad_storage_url(tmp_path, fetchdeliver_cmd):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[storage]\nurl = "mysql://x/y"\n')
    r = run(fetchdeliver_cmd, "config", "check", "-c", str(cfg))
    assert r.returncode != 0 and b"storage.url" in r.stderr + r.stdout


def test_lmtp_one_body_for_all_recipients_each_in_their_own_mailbox(tmp_path, db):
    recips = "".join(f'[[recipient]]\naddress = "u{i}@example.org"\n\n' for i in range(5))
    cfg = write_config(tmp_path, f'[storage]\nurl = "{db}"\n\n' + recips)
    server = Server(cfg)
    try:
        c = RawClient(server.host, server.port)
        c.reply()
        c.cmd("LHLO client.example.org")
        c.cmd("MAIL FROM:<sender@example.org>")
        for i in range(5):
            assert c.cmd(f"RCPT TO:<u{i}@example.org>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        raw = b"Subject: to five\n\nsame body\n"
        c.send(dot_stuff(to_wire(raw)))
        codes = [c.reply()[0] for _ in range(5)]
        assert codes == [250] * 5
        c.cmd("QUIT")
        c.close()
    finally:
        server.stop()
    for i in range(5):
        (stored,) = messages(db, f"u{i}@example.org")
        assert split_trace(stored)[1] == raw
    with psycopg.connect(db) as conn:
        # each copy has its own trace headers (Delivered-To); the rest is stored once
        assert conn.execute("SELECT count(*) FROM fd_message").fetchone()[0] == 5
        assert conn.execute("SELECT count(*) FROM fd_blob").fetchone()[0] == 1
        assert len({bytes(r[0]) for r in conn.execute("SELECT prefix FROM fd_message")}) == 5


def test_postgres_restarted_during_deliveries(tmp_path, db, postgres_server, fetchdeliver_cmd):
    """MDA: exit 0 means stored, exit 75 means not stored at all; LMTP: 250 stored, 4xx not stored."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[delivery]\nstate_dir = "{tmp_path}/state"\n\n[storage]\nurl = "{db}"\nuser = "alice"\n')
    results: dict[int, int] = {}
    stop = threading.Event()

    def mda_loop():
        i = 0
        while not stop.is_set() and i < 400:
            raw = f"Subject: mda {i}\nMessage-ID: <mda.{i}@x>\n\nbody {i}\n".encode()
            results[i] = run(fetchdeliver_cmd, "deliver", "-c", str(cfg), stdin=raw).returncode
            i += 1

    t = threading.Thread(target=mda_loop)
    t.start()
    try:
        # wait until some deliveries went through, then restart PostgreSQL under them
        for _ in range(1):
            n = len(results)
            deadline = time.monotonic() + 60
            while len(results) < n + 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            postgres_server.stop()
            m = len(results)
            deadline = time.monotonic() + 60
            while len(results) < m + 2 and time.monotonic() < deadline:
                time.sleep(0.05)   # deliveries while the database is down
            postgres_server._start()
    finally:
        stop.set()
        t.join(180)
    codes = set(results.values())
    assert codes <= {0, 75}, results
    assert 75 in codes and 0 in codes
    stored = messages(db, "alice")
    delivered = {i for i, rc in results.items() if rc == 0}
    got = {int(m.split(b"\n", 1)[0].split()[-1]) for m in stored}
    # every exit 0 is stored; an exit 75 may have committed just before the connection broke
    # (the MTA then delivers it again: a duplicate, never a loss), but nothing is half-stored
    assert delivered <= got
    for m in stored:
        i = int(m.split(b"\n", 1)[0].split()[-1])
        assert m == f"Subject: mda {i}\nMessage-ID: <mda.{i}@x>\n\nbody {i}\n".encode()
    with psycopg.connect(db) as conn:
        orphans = conn.execute("SELECT count(*) FROM fd_blob b WHERE NOT EXISTS "
                               "(SELECT 1 FROM fd_message m WHERE m.sha256 = b.sha256)").fetchone()[0]
        assert orphans == 0
        uids = [r[0] for r in conn.execute("SELECT uid FROM fd_message m JOIN fd_mailbox b ON b.id = m.mailbox_id "
                                           "WHERE b.name = 'INBOX' ORDER BY uid")]
        assert len(uids) == len(set(uids)) == len(stored)


def test_lmtp_answers_4xx_while_postgres_is_down(tmp_path, db, postgres_server):
    cfg = write_config(tmp_path, f'[storage]\nurl = "{db}"\n\n[[recipient]]\naddress = "alice@example.org"\n')
    server = Server(cfg)
    raw = b"Subject: during outage\n\nbody\n"

    def send() -> int:
        c = RawClient(server.host, server.port)
        c.reply()
        c.cmd("LHLO client.example.org")
        c.cmd("MAIL FROM:<sender@example.org>")
        assert c.cmd("RCPT TO:<alice@example.org>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(dot_stuff(to_wire(raw)))
        code, text = c.reply()
        c.cmd("QUIT")
        c.close()
        return code

    try:
        assert send() == 250
        postgres_server.stop()
        try:
            code = send()
        finally:
            postgres_server._start()
        assert 400 <= code < 500
        assert send() == 250      # the pool replaces the broken connections after the restart
    finally:
        server.stop()
    assert len(messages(db, "alice@example.org")) == 2


def test_store_copy_maildir_to_postgres_and_back_keeps_uids_flags_dates(tmp_path, db, fetchdeliver_cmd):
    md = MaildirStore(str(tmp_path / "Maildir"))
    for i in range(5):
        md.deliver(f"Subject: m{i}\n\nbody {i}\n".encode(), flags=["\\Seen", "$Label"] if i % 2 else [])
    md.deliver(b"Subject: w\n\nwork\n", "Work")
    box = md.open("INBOX")
    msgs = box.sync()
    box.expunge([msgs[1]])            # a gap in the UIDs: UID 2 is gone
    box.set_flags([(msgs[2], frozenset({"\\Flagged", "Custom"}))])
    src = {m.uid: (m.flags, int(m.internaldate), box.read(m)) for m in box.sync()}
    uidvalidity = box.uidvalidity
    dst = db + "?mailuser=alice"
    r = run(fetchdeliver_cmd, "store", "copy", f"maildir:{tmp_path}/Maildir", dst)
    assert r.returncode == 0, r.stderr
    pg = PostgresStore(db, user="alice")
    pbox = pg.open("INBOX")
    assert pbox.uidvalidity == uidvalidity
    assert {m.uid: (m.flags, int(m.internaldate), pbox.read(m)) for m in pbox.sync()} == src
    assert [pg.open("Work").read(m) for m in pg.open("Work").sync()] == [b"Subject: w\n\nwork\n"]
    # resumable: a second run copies only what is new since (or was not reached before)
    md.deliver(b"Subject: later\n\nlater\n")
    r = run(fetchdeliver_cmd, "store", "copy", f"maildir:{tmp_path}/Maildir", dst)
    assert r.returncode == 0 and b"INBOX: 1 copied, 4 already there" in r.stdout, r.stdout
    src = {m.uid: (m.flags, int(m.internaldate), box.read(m)) for m in box.sync()}
    assert {m.uid: (m.flags, int(m.internaldate), pbox.read(m)) for m in pbox.sync()} == src
    # and back into a new Maildir: flags, keywords, dates and bodies come back
    journal = tmp_path / "journal"
    r = run(fetchdeliver_cmd, "store", "copy", dst, f"maildir:{tmp_path}/Back", "--journal", str(journal))
    assert r.returncode == 0, r.stderr
    back = MaildirStore(str(tmp_path / "Back")).open("INBOX")
    got = sorted((m.flags, int(m.internaldate), back.read(m)) for m in back.sync())
    assert got == sorted(src.values())
    r = run(fetchdeliver_cmd, "store", "copy", dst, f"maildir:{tmp_path}/Back", "--journal", str(journal))
    assert b"INBOX: 0 copied, 5 already there" in r.stdout
    assert len(back.sync()) == 5


def _start_lmtp_node(tmp_path, url: str, name: str):
    import re
    import sys

    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(f'[storage]\nurl = "{url}"\n\n[[recipient]]\naddress = "alice@example.org"\n\n'
                   f'[delivery]\nstate_dir = "{tmp_path}/{name}-state"\n')
    proc = subprocess.Popen([sys.executable, "-m", "fetchdeliver", "lmtp", "--listen", "127.0.0.1:0",
                             "--processes", "1", "-c", str(cfg)], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    while line and "listening on" not in line:
        line = proc.stderr.readline()
    return proc, int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))


def test_a_node_killed_in_the_middle_of_data_stores_nothing_and_another_node_takes_the_retry(tmp_path, db):
    """SIGKILL a node during DATA: no reply, so the MTA retries (here: on another node); the
    message ends up stored exactly once."""
    import signal

    raw = b"Subject: killed\nMessage-ID: <killed@x>\n\n" + b"line of body\n" * 2000
    wire = dot_stuff(to_wire(raw))
    a, port_a = _start_lmtp_node(tmp_path, db, "a")
    b, port_b = _start_lmtp_node(tmp_path, db, "b")
    try:
        c = RawClient("127.0.0.1", port_a)
        c.reply()
        c.cmd("LHLO mta.example.org")
        c.cmd("MAIL FROM:<sender@example.org>")
        assert c.cmd("RCPT TO:<alice@example.org>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(wire[:len(wire) // 2])
        os.kill(a.pid, signal.SIGKILL)
        a.wait(30)
        with pytest.raises((ConnectionError, OSError)):
            c.send(wire[len(wire) // 2:])
            c.reply()
        c.close()
        assert messages(db, "alice@example.org") == []
        c = RawClient("127.0.0.1", port_b)      # the MTA's retry, to the surviving node
        c.reply()
        c.cmd("LHLO mta.example.org")
        c.cmd("MAIL FROM:<sender@example.org>")
        assert c.cmd("RCPT TO:<alice@example.org>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(wire)
        assert c.reply()[0] == 250
        c.cmd("QUIT")
        c.close()
        (stored,) = messages(db, "alice@example.org")
        assert split_trace(stored)[1] == raw
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.terminate()
                p.wait(30)
