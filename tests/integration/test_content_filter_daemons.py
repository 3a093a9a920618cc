"""[filter]: spamd, rspamd and clamd before Sieve, against the real daemons started here.

The verdict becomes headers at the top (the rest of the message byte-exact) and feeds
spamtest/virustest with no [sieve] settings; a scanner that is down or hangs tempfails the
message (MDA exit 75, LMTP 451) or, with on_failure = "deliver", lets it through with a header.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from lmtp_support import RawClient, Server, dot_stuff, maildir_messages, split_trace, to_wire
from scanners import EICAR, EICAR_SIGNATURE, GTUBE, Clamd, Rspamd, ScannerUnavailable, Silent, Spamd, free_port

pytestmark = pytest.mark.timeout(180)


def _start(cls):
    try:
        d = cls()
    except ScannerUnavailable as e:
        pytest.skip(str(e))
    return d


@pytest.fixture(scope="module")
def spamd():
    d = _start(Spamd)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def clamd():
    d = _start(Clamd)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def rspamd():
    d = _start(Rspamd)
    yield d
    d.stop()


@pytest.fixture
def silent():
    s = Silent()
    yield s
    s.stop()


SPAM = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: spam\r\n\r\n" + GTUBE + b"\r\n"
HAM = b"From: a@example.org\nTo: b@example.org\nSubject: hello\n\nJust a note.\n"
VIRUS = (b"From: a@example.org\nTo: b@example.org\nSubject: attached\nMIME-Version: 1.0\n"
         b"Content-Type: text/plain\n\n" + EICAR + b"\n")

JUNK_RULES = b"""require ["spamtest", "fileinto", "relational", "comparator-i;ascii-numeric"];
if spamtest :value "ge" :comparator "i;ascii-numeric" "6" { fileinto "Junk"; stop; }
if spamtest :is "0" { fileinto "Untested"; stop; }
if spamtest :is "1" { fileinto "Ham"; stop; }
"""
VIRUS_RULES = b"""require ["virustest", "fileinto", "relational", "comparator-i;ascii-numeric"];
if virustest :value "eq" :comparator "i;ascii-numeric" "5" { fileinto "Quarantine"; stop; }
if virustest :is "0" { fileinto "Untested"; stop; }
if virustest :is "1" { fileinto "Clean"; stop; }
"""


def setup(tmp_path, filter_table: str, rules: bytes | None = None) -> tuple[str, str]:
    md = tmp_path / "Mail"
    cfg = tmp_path / "config.toml"
    text = f'[filter]\n{filter_table}\n[delivery]\nmaildir = "{md}"\nstate_dir = "{tmp_path / "state"}"\n' \
           f'cache_dir = "{tmp_path / "cache"}"\n'
    if rules is not None:
        (tmp_path / "rules.sieve").write_bytes(rules)
        text += f'rules = "{tmp_path / "rules.sieve"}"\n'
    cfg.write_text(text)
    return str(cfg), str(md)


def deliver(cmd, cfg: str, raw: bytes, home) -> subprocess.CompletedProcess:
    env = dict(os.environ, XDG_CACHE_HOME=str(home / "xdg-cache"))
    return subprocess.run(cmd + ["deliver", "-c", cfg, "-f", "a@example.org"], input=raw, capture_output=True,
                          timeout=120, env=env)


def folder_messages(md: str, folder: str | None = None) -> list[bytes]:
    root = md if folder is None else os.path.join(md, "." + folder)
    new = os.path.join(root, "new")
    if not os.path.isdir(new):
        return []
    return [open(os.path.join(new, f), "rb").read() for f in sorted(os.listdir(new))]


def split_added(stored: bytes, raw: bytes) -> bytes:
    """The header lines we added: `stored` must be them followed by exactly `raw`."""
    assert stored.endswith(raw), stored[:400]
    return stored[:len(stored) - len(raw)]


def test_spamd_marks_gtube_as_spam_and_spamtest_files_it(tmp_path, fetchdeliver_cmd, spamd):
    cfg, md = setup(tmp_path, f'spamd = "{spamd.address}"\ntimeout = "60s"', JUNK_RULES)
    r = deliver(fetchdeliver_cmd, cfg, SPAM, tmp_path)
    assert r.returncode == 0, r.stderr
    [stored] = folder_messages(md, "Junk")
    added = split_added(stored, SPAM)
    assert added.startswith(b"X-Spam-Flag: YES\r\nX-Spam-Score: 1000.0\r\n")  # the message's own CRLF
    assert b"X-Spam-Level: " + b"*" * 50 + b"\r\n" in added
    assert b"X-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE" in added
    assert folder_messages(md) == []


def test_spamd_ham_gets_a_no_verdict_and_spamtest_one(tmp_path, fetchdeliver_cmd, spamd):
    cfg, md = setup(tmp_path, f'spamd = "{spamd.address}"\ntimeout = "60s"', JUNK_RULES)
    r = deliver(fetchdeliver_cmd, cfg, HAM, tmp_path)
    assert r.returncode == 0, r.stderr
    [stored] = folder_messages(md, "Ham")
    added = split_added(stored, HAM)
    assert b"X-Spam-Flag" not in added
    assert added.startswith(b"X-Spam-Score: 0.0\nX-Spam-Level: \nX-Spam-Status: No, score=0.0 required=5.0")


def test_spamd_over_its_unix_socket(tmp_path, fetchdeliver_cmd, spamd):
    cfg, md = setup(tmp_path, f'spamd = "{spamd.socket}"\ntimeout = "60s"', JUNK_RULES)
    r = deliver(fetchdeliver_cmd, cfg, SPAM, tmp_path)
    assert r.returncode == 0, r.stderr
    [stored] = folder_messages(md, "Junk")
    assert split_added(stored, SPAM).startswith(b"X-Spam-Flag: YES\r\n")


def test_lmtp_with_spamd_delivers_with_the_verdict(tmp_path, spamd):
    cfg, md = setup(tmp_path, f'spamd = "{spamd.address}"\ntimeout = "60s"', JUNK_RULES)
    server = Server(cfg)
    try:
        c = RawClient(server.host, server.port)
        assert c.reply()[0] == 220
        assert c.cmd("LHLO t")[0] == 250
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        assert c.cmd("RCPT TO:<b@example.org>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(dot_stuff(to_wire(SPAM)))
        code, lines = c.reply()
        assert code == 250, lines
        c.close()
    finally:
        server.stop()
    [stored] = maildir_messages(os.path.join(md, ".Junk"))
    assert stored.startswith(b"X-Spam-Flag: YES\n")  # LMTP stores with LF line ends
    at = stored.index(b"Return-Path:")  # ours on top, then LMTP's trace headers, then the message
    assert b"X-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE" in stored[:at]
    assert split_trace(stored[at:])[1] == SPAM.replace(b"\r\n", b"\n")


def test_rspamd_gtube_is_spam_and_spamtestplus_reads_percent(tmp_path, fetchdeliver_cmd, rspamd):
    rules = b"""require ["spamtestplus", "fileinto", "relational", "comparator-i;ascii-numeric"];
if spamtest :percent :value "eq" :comparator "i;ascii-numeric" "100" { fileinto "Junk"; stop; }
if spamtest :percent :is "0" { fileinto "Ham"; stop; }
"""
    cfg, md = setup(tmp_path, f'rspamd = "{rspamd.url}"\ntimeout = "60s"', rules)
    r = deliver(fetchdeliver_cmd, cfg, SPAM, tmp_path)
    assert r.returncode == 0, r.stderr
    [stored] = folder_messages(md, "Junk")
    added = split_added(stored, SPAM)
    assert added.startswith(b"X-Spam-Flag: YES\r\n")
    assert b"tests=GTUBE scanner=rspamd" in added
    r = deliver(fetchdeliver_cmd, cfg, HAM, tmp_path)
    assert r.returncode == 0, r.stderr
    [stored] = folder_messages(md, "Ham")
    assert b"X-Spam-Status: No, score=0.0" in split_added(stored, HAM)


def test_clamd_unix_socket_finds_eicar_and_virustest_quarantines(tmp_path, fetchdeliver_cmd, clamd):
    cfg, md = setup(tmp_path, f'clamd = "{clamd.socket}"\ntimeout = "60s"', VIRUS_RULES)
    r = deliver(fetchdeliver_cmd, cfg, VIRUS, tmp_path)
    assert r.returncode == 0, r.stderr
    [stored] = folder_messages(md, "Quarantine")
    added = split_added(stored, VIRUS)
    assert added == (b"X-Virus-Scanned: clamd\nX-Virus-Status: Infected (" + EICAR_SIGNATURE.encode()
                     + b".UNOFFICIAL)\n")


def test_clamd_tcp_clean_message_and_spamd_together(tmp_path, fetchdeliver_cmd, clamd, spamd):
    cfg, md = setup(tmp_path, f'clamd = "{clamd.address}"\nspamd = "{spamd.address}"\ntimeout = "60s"',
                    VIRUS_RULES)
    r = deliver(fetchdeliver_cmd, cfg, HAM, tmp_path)
    assert r.returncode == 0, r.stderr
    [stored] = folder_messages(md, "Clean")
    added = split_added(stored, HAM)
    assert added.startswith(b"X-Spam-Score: 0.0\n")
    assert added.endswith(b"X-Virus-Scanned: clamd\nX-Virus-Status: Clean\n")


# -- failure modes -------------------------------------------------------------------------------

def test_scanner_down_tempfails_the_mda_and_delivers_nothing(tmp_path, fetchdeliver_cmd):
    port = free_port()  # nothing listens: connection refused
    cfg, md = setup(tmp_path, f'spamd = "127.0.0.1:{port}"')
    r = deliver(fetchdeliver_cmd, cfg, HAM, tmp_path)
    assert r.returncode == 75, r.stderr
    assert f"spamd 127.0.0.1:{port}: cannot connect".encode() in r.stderr
    assert folder_messages(md) == []


def test_clamd_socket_missing_tempfails(tmp_path, fetchdeliver_cmd):
    cfg, md = setup(tmp_path, f'clamd = "{tmp_path / "no-such.sock"}"')
    r = deliver(fetchdeliver_cmd, cfg, VIRUS, tmp_path)
    assert r.returncode == 75, r.stderr
    assert b"clamd " in r.stderr and b"cannot connect" in r.stderr
    assert folder_messages(md) == []


def test_scanner_down_with_on_failure_deliver_delivers_unfiltered(tmp_path, fetchdeliver_cmd):
    port = free_port()
    cfg, md = setup(tmp_path, f'spamd = "127.0.0.1:{port}"\non_failure = "deliver"', JUNK_RULES)
    # A sender's own X-Spam-Status must not be read as our verdict when we could not scan.
    forged = b"X-Spam-Status: Yes, score=99.0 required=5.0\n" + HAM
    r = deliver(fetchdeliver_cmd, cfg, forged, tmp_path)
    assert r.returncode == 0, r.stderr
    [stored] = folder_messages(md, "Untested")
    added = split_added(stored, forged)
    assert added.startswith(b"X-Fetchdeliver-Filter: unfiltered; spamd 127.0.0.1:")
    assert added.count(b"\n") == len(added.splitlines()) and b"X-Spam-Flag" not in added


def test_hung_scanner_times_out_to_tempfail(tmp_path, fetchdeliver_cmd, silent):
    cfg, md = setup(tmp_path, f'clamd = "{silent.address}"\ntimeout = "1s"')
    r = deliver(fetchdeliver_cmd, cfg, HAM, tmp_path)
    assert r.returncode == 75, r.stderr
    assert b"timeout" in r.stderr or b"timed out" in r.stderr
    assert folder_messages(md) == []


def test_hung_scanner_with_on_failure_deliver(tmp_path, fetchdeliver_cmd, silent):
    cfg, md = setup(tmp_path, f'rspamd = "http://{silent.address}"\ntimeout = "1s"\non_failure = "deliver"',
                    JUNK_RULES)
    r = deliver(fetchdeliver_cmd, cfg, HAM, tmp_path)
    assert r.returncode == 0, r.stderr
    [stored] = folder_messages(md, "Untested")
    added = split_added(stored, HAM)
    assert added.startswith(b"X-Fetchdeliver-Filter: unfiltered; rspamd http://")
    assert b"timeout" in added


def test_lmtp_scanner_down_is_451_and_hung_scanner_too(tmp_path, silent):
    port = free_port()
    for table in (f'spamd = "127.0.0.1:{port}"', f'spamd = "{silent.address}"\ntimeout = "1s"'):
        cfg, md = setup(tmp_path, table)
        server = Server(cfg)
        try:
            c = RawClient(server.host, server.port)
            assert c.reply()[0] == 220
            assert c.cmd("LHLO t")[0] == 250
            assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
            assert c.cmd("RCPT TO:<b@example.org>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            c.send(dot_stuff(to_wire(HAM)))
            code, lines = c.reply()
            assert code == 451, lines
            assert "spamd" in " ".join(lines)
            c.close()
        finally:
            server.stop()
        assert folder_messages(md) == []


def test_config_errors_name_the_key(tmp_path, fetchdeliver_cmd):
    for table, key in (('spamd = "127.0.0.1:783"\nrspamd = "http://127.0.0.1:11333"', b"filter.spamd"),
                       ('clamd = "localhost"', b"filter.clamd"),
                       ('rspamd = "127.0.0.1:11333"', b"filter.rspamd"),
                       ('spamd = "127.0.0.1:783"\non_failure = "drop"', b"filter.on_failure"),
                       ('clamd = "/x"\nscan = true', b"filter.scan")):
        cfg, md = setup(tmp_path, table)
        r = deliver(fetchdeliver_cmd, cfg, HAM, tmp_path)
        assert r.returncode == 78, (table, r.stderr)
        assert key in r.stderr, (table, r.stderr)
        assert cfg.encode() in r.stderr


def test_fetch_leaves_the_message_on_the_server_while_spamd_is_down(tmp_path, dovecot, fetchdeliver_cmd, spamd):
    from fetchsetup import FetchSetup

    setup = FetchSetup(tmp_path, dovecot, fetchdeliver_cmd)
    dovecot.append_many("alice", [SPAM])
    setup.account("pop", "pop3", "none", after="delete")

    def with_filter(address: str) -> None:
        setup.write()
        with open(setup.config, "a") as f:
            f.write(f'\n[filter]\nspamd = "{address}"\ntimeout = "60s"\n')

    with_filter(f"127.0.0.1:{free_port()}")  # down
    r = setup.run()
    assert r.returncode != 0
    assert "left on the server" in r.stderr and "spamd 127.0.0.1:" in r.stderr, r.stderr
    assert setup.delivered() == []
    assert [raw for _, raw in dovecot.contents("alice").values()] == [SPAM]

    with_filter(spamd.address)  # back: the next run delivers it with the verdict, then deletes it
    r = setup.run()
    assert r.returncode == 0, r.stderr
    [stored] = setup.delivered()
    assert stored.startswith(b"X-Spam-Flag: YES\n") and stored.endswith(SPAM.replace(b"\r\n", b"\n"))
    assert dovecot.contents("alice") == {}
