"""Sieve scripts in PostgreSQL (#14): `fetchdeliver managesieve` with [storage] url keeps each user's
scripts in fd_sieve_script (the real sieve-connect drives it), and the MDA and LMTP deliver by the
active one, picking up SETACTIVE / PUTSCRIPT at the next message, on any node."""

from __future__ import annotations

import shutil
import signal
import subprocess

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install '.[postgres]')")

from fetchdeliver.managesieve.storage import PostgresScriptStore, ScriptError, active_script  # noqa: E402
from fetchdeliver.storage import pgschema  # noqa: E402
from fetchdeliver.storage.postgres import PostgresStore, close_pools  # noqa: E402
from lmtp_support import RawClient, Server, dot_stuff, to_wire, write_config  # noqa: E402
from postgres_support import pg_url, postgres_server  # noqa: E402,F401

pytestmark = pytest.mark.timeout(180)

FOLDER_SCRIPT = b'require "fileinto";\nif header :contains "subject" "invoice" {\n  fileinto "Invoices";\n}\n'
OTHER_SCRIPT = b'require "fileinto";\nif header :contains "subject" "invoice" {\n  fileinto "Bills";\n}\n'
BROKEN_SCRIPT = b'require "fileinto";\nif header :contains "subject" {\n  fileinto "X";\n}\n'
INVOICE = b"From: shop@example.org\nTo: alice@example.org\nSubject: invoice 42\n\nPay up.\n"


@pytest.fixture
def db(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pgschema.migrate(conn)
    yield pg_url
    close_pools()


def count(url: str, user: str, mailbox: str) -> int:
    store = PostgresStore(url, user=user)
    if not store.exists(mailbox):
        return 0
    return len(store.open(mailbox, readonly=True).sync())


def test_script_store_semantics(db):
    s = PostgresScriptStore(PostgresStore(db, user="zoe"), max_scripts=2, max_script_size=200)
    s.put("a", FOLDER_SCRIPT)
    s.put("b", OTHER_SCRIPT)
    with pytest.raises(ScriptError) as e:
        s.put("c", b"keep;")
    assert e.value.code == "QUOTA/MAXSCRIPTS"
    s.set_active("a")
    assert s.active() == "a" and s.names() == ["a", "b"]
    with pytest.raises(ScriptError) as e:
        s.delete("a")
    assert e.value.code == "ACTIVE"
    with pytest.raises(ScriptError) as e:
        s.rename("b", "a")
    assert e.value.code == "ALREADYEXISTS"
    s.rename("a", "renamed")                       # the active one keeps being active under its new name
    assert s.active() == "renamed"
    s.set_active("b")                              # one transaction: never two active, never a gap
    assert s.active() == "b" and active_script(s.store)[2] == OTHER_SCRIPT
    s.set_active("")
    assert s.active() is None and active_script(s.store) is None
    with pytest.raises(ScriptError) as e:
        s.get("nope")
    assert e.value.code == "NONEXISTENT"


def _sieve_connect(port: int, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("sieve-connect")
    if exe is None:
        pytest.skip("sieve-connect is not installed (apt-get install sieve-connect)")
    return subprocess.run([exe, "--server", "127.0.0.1", "--port", str(port), "--user", "alice",
                           "--passwordfd", "0", "--clearchan", "--notlsverify", *args],
                          input="secret\n", capture_output=True, text=True, timeout=60)


def test_sieve_connect_then_mda_and_lmtp_follow_the_active_script(db, tmp_path, fetchdeliver_cmd):
    passwd = tmp_path / "passwd"
    passwd.write_text(f"alice:{{PLAIN}}secret::::{tmp_path}::\n")
    conf = tmp_path / "config.toml"
    conf.write_text(f'[delivery]\nstate_dir = "{tmp_path / "state"}"\n\n[storage]\nurl = "{db}"\nuser = "alice"\n\n'
                    f'[managesieve]\npasswd_file = "{passwd}"\nlogin_failure_delay = "0s"\n')
    (tmp_path / "lmtp").mkdir()
    lconf = write_config(tmp_path / "lmtp", f"""
        [[recipient]]
        address = "alice"

        [storage]
        url = "{db}"
        """)

    def deliver():
        r = subprocess.run(fetchdeliver_cmd + ["deliver", "-c", str(conf)], input=INVOICE, capture_output=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        return r

    def lmtp(server):
        c = RawClient(server.host, server.port)
        try:
            c.reply()
            c.cmd("LHLO t")
            c.cmd("MAIL FROM:<shop@example.org>")
            assert c.cmd("RCPT TO:<alice>")[0] == 250
            c.cmd("DATA")
            c.send(dot_stuff(to_wire(INVOICE)))
            assert c.reply()[0] == 250
        finally:
            c.close()

    proc = subprocess.Popen(fetchdeliver_cmd + ["managesieve", "-c", str(conf), "--listen", "127.0.0.1:0"],
                            stderr=subprocess.PIPE, text=True)
    server = Server(lconf)          # a long-running LMTP node: it must notice changes without a restart
    try:
        line = proc.stderr.readline()
        assert "listening on 127.0.0.1:" in line, line
        port = int(line.rsplit(":", 1)[1])

        deliver()                                   # no script: INBOX, quietly
        lmtp(server)
        assert count(db, "alice", "INBOX") == 2

        local = tmp_path / "filter.sieve"
        local.write_bytes(FOLDER_SCRIPT)
        for args in (("--upload", "--localsieve", str(local), "--remotesieve", "mine"),
                     ("--activate", "--remotesieve", "mine")):
            r = _sieve_connect(port, *args)
            assert r.returncode == 0, r.stdout + r.stderr
        r = _sieve_connect(port, "--list")
        assert r.returncode == 0 and "mine" in r.stdout, r.stdout + r.stderr
        with psycopg.connect(db) as conn:          # in the database, not in a home directory
            assert conn.execute("SELECT name, script, active FROM fd_sieve_script").fetchall() == \
                [("mine", FOLDER_SCRIPT, True)]
        assert not (tmp_path / "sieve").exists()

        deliver()
        lmtp(server)
        assert count(db, "alice", "Invoices") == 2 and count(db, "alice", "INBOX") == 2

        bad = tmp_path / "bad.sieve"                # refused with its line, the active one stays
        bad.write_bytes(BROKEN_SCRIPT)
        r = _sieve_connect(port, "--upload", "--localsieve", str(bad), "--remotesieve", "mine")
        assert r.returncode != 0 and "mine:2:" in r.stdout + r.stderr, r.stdout + r.stderr

        local.write_bytes(OTHER_SCRIPT)             # replaced: the next message on each node uses it
        r = _sieve_connect(port, "--upload", "--localsieve", str(local), "--remotesieve", "mine")
        assert r.returncode == 0, r.stdout + r.stderr
        deliver()
        lmtp(server)
        assert count(db, "alice", "Bills") == 2

        r = _sieve_connect(port, "--deactivate")
        assert r.returncode == 0, r.stdout + r.stderr
        deliver()
        lmtp(server)
        assert count(db, "alice", "INBOX") == 4 and count(db, "alice", "Bills") == 2
    finally:
        server.stop()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
