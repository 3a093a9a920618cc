"""imapsieve (RFC 6785) in our IMAP server, over a socket: moving a message into Junk pipes it to a
learning program (vnd.dovecot.pipe), APPEND and FLAG events, `from` rules, imap4flags and fileinto
answers, and scripts that fail without failing the IMAP command. Configured through the TOML
`[imapsieve]` / `[[imapsieve.mailbox]]` tables, as a user writes them."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tomllib

import pytest

from fetchdeliver import config
from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password
from fetchdeliver.imapserver.imapsieve import config_from
from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer
from fetchdeliver.storage.maildir import MaildirStore
from imap_helpers import RawClient, plain

pytestmark = pytest.mark.timeout(120)

RECORDER = f"""#!{sys.executable}
import os, sys
out = os.environ["RECORD_DIR"]
data = sys.stdin.buffer.read()
n = len(os.listdir(out))
with open(os.path.join(out, "%03d" % n), "wb") as f:
    f.write((" ".join(sys.argv[1:]) + "|" + os.environ.get("IMAPSIEVE_CAUSE", "") + "|"
             + os.environ.get("USER", "") + "\\n").encode() + data)
"""

REPORT_SPAM = """require ["imapsieve", "environment", "variables", "vnd.dovecot.pipe", "copy"];
if environment :matches "imap.mailbox" "*" { set "mailbox" "${1}"; }
if environment :matches "imap.user" "*" { set "user" "${1}"; }
pipe :copy "learn" ["spam", "${mailbox}", "${user}"];
"""

REPORT_HAM = """require ["imapsieve", "environment", "variables", "vnd.dovecot.pipe", "copy"];
if environment :matches "imap.mailbox" "*" { set "mailbox" "${1}"; }
if string "${mailbox}" "Trash" { stop; }
pipe :copy "learn" ["ham", "${mailbox}"];
"""


def write(path, text: str, mode: int | None = None) -> str:
    with open(path, "w") as f:
        f.write(text)
    if mode is not None:
        os.chmod(path, mode)
    return str(path)


class Setup:
    def __init__(self, tmp_path, toml_text: str, scripts: dict[str, str], monkeypatch) -> None:
        self.tmp = tmp_path
        self.records = tmp_path / "records"
        self.records.mkdir()
        monkeypatch.setenv("RECORD_DIR", str(self.records))
        bindir = tmp_path / "bin"
        bindir.mkdir()
        write(bindir / "learn", RECORDER, stat.S_IRWXU)
        for name, text in scripts.items():
            write(tmp_path / name, text)
        self.maildir = str(tmp_path / "Maildir")
        store = MaildirStore(self.maildir)
        for i in range(1, 4):
            store.deliver(plain(i))
        for box in ("Junk", "Archive", "Trash"):
            store.create(box)
        cfg_path = write(tmp_path / "config.toml",
                         f'[sieve]\npipe_bin_dir = "{bindir}"\nextensions = ["+vnd.dovecot.pipe", "+editheader"]\n'
                         + toml_text)
        with open(cfg_path, "rb") as f:
            data = config.validate(tomllib.load(f), cfg_path)
        passwd = str(tmp_path / "passwd")
        set_password(passwd, "alice", "secret", "SHA256-CRYPT")
        cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                           default_mail="maildir:" + self.maildir, login_failure_delay=0)
        cfg.imapsieve = config_from(data)
        self.server = ThreadedServer(cfg).start()
        self.c = RawClient(self.server.addresses[0][1])
        assert self.c.command("a", b"LOGIN alice secret")[-1].startswith(b"a OK")

    def records_got(self) -> list[bytes]:
        return [open(self.records / n, "rb").read() for n in sorted(os.listdir(self.records))]

    def close(self) -> None:
        self.c.close()
        self.server.stop()


@pytest.fixture
def junk_setup(tmp_path, monkeypatch):
    toml = f"""
[imapsieve]
[[imapsieve.mailbox]]
name = "Junk"
causes = ["COPY", "APPEND"]
before = "{tmp_path}/report-spam.sieve"

[[imapsieve.mailbox]]
name = "*"
from = "Junk"
causes = "COPY"
before = "{tmp_path}/report-ham.sieve"
"""
    s = Setup(tmp_path, toml, {"report-spam.sieve": REPORT_SPAM, "report-ham.sieve": REPORT_HAM}, monkeypatch)
    yield s
    s.close()


def test_moving_into_junk_pipes_the_message_to_the_learning_program(junk_setup):
    s = junk_setup
    c = s.c
    assert c.command("b", b"SELECT INBOX")[-1].startswith(b"b OK")
    got = c.command("c", b"UID MOVE 2 Junk")
    assert got[-1].startswith(b"c OK"), got
    [rec] = s.records_got()
    head, _, body = rec.partition(b"\n")
    assert head == b"spam Junk alice|COPY|alice"
    assert body == plain(2)                     # the message's bytes, as stored
    # The message is in Junk, kept as it was, and gone from INBOX.
    assert c.command("d", b"STATUS Junk (MESSAGES)")[0] == b"* STATUS \"Junk\" (MESSAGES 1)\r\n"
    assert c.command("e", b"STATUS INBOX (MESSAGES)")[0] == b"* STATUS \"INBOX\" (MESSAGES 2)\r\n"


def test_copy_into_junk_and_out_of_it_again(junk_setup):
    s = junk_setup
    c = s.c
    c.command("b", b"SELECT INBOX")
    assert c.command("c", b"COPY 1:2 Junk")[-1].startswith(b"c OK")
    assert [r.split(b"\n")[0] for r in s.records_got()] == [b"spam Junk alice|COPY|alice"] * 2
    c.command("d", b"SELECT Junk")
    assert c.command("e", b"MOVE 1 Archive")[-1].startswith(b"e OK")   # out of Junk: ham
    assert c.command("f", b"MOVE 1 Trash")[-1].startswith(b"f OK")     # Trash: the script stops
    assert [r.split(b"\n")[0] for r in s.records_got()][2:] == [b"ham Archive|COPY|alice"]


def test_append_to_junk_runs_the_script_and_other_mailboxes_do_not(junk_setup):
    s = junk_setup
    c = s.c
    raw = plain(9).replace(b"\n", b"\r\n")
    c.send(b"a1 APPEND Archive {%d+}\r\n" % len(raw) + raw + b"\r\n")
    assert c.until("a1")[-1].startswith(b"a1 OK")
    assert s.records_got() == []
    c.send(b"a2 APPEND Junk (\\Seen) {%d+}\r\n" % len(raw) + raw + b"\r\n")
    assert c.until("a2")[-1].startswith(b"a2 OK")
    [rec] = s.records_got()
    assert rec == b"spam Junk alice|APPEND|alice\n" + raw


@pytest.fixture
def flag_setup(tmp_path, monkeypatch):
    flag_script = """require ["imapsieve", "environment", "imap4flags", "vnd.dovecot.pipe", "copy", "variables"];
if environment :matches "imap.changedflags" "*" { set "changed" "${1}"; }
if hasflag "$Junk" { pipe :copy "learn" ["flagged-junk", "${changed}"]; removeflag "$Junk"; addflag "$Reported"; }
"""
    file_script = """require ["imapsieve", "fileinto", "editheader"];
addheader "X-Archived" "yes"; fileinto "Archive";
"""
    broken = 'require ["imapsieve"];\nif header :contains "subject" { keep; }\n'   # a compile error
    failing = 'require ["imapsieve", "vnd.dovecot.pipe"];\npipe "no-such-program";\n'
    toml = f"""
[imapsieve]
expunge_discarded = true

[[imapsieve.mailbox]]
name = "INBOX"
causes = ["FLAG"]
before = "{tmp_path}/flag.sieve"

[[imapsieve.mailbox]]
name = "Drafts*"
causes = ["APPEND"]
before = "{tmp_path}/broken.sieve"
after = "{tmp_path}/failing.sieve"

[[imapsieve.mailbox]]
name = "Sent"
causes = ["APPEND"]
after = "{tmp_path}/file.sieve"
"""
    s = Setup(tmp_path, toml, {"flag.sieve": flag_script, "file.sieve": file_script, "broken.sieve": broken,
                               "failing.sieve": failing}, monkeypatch)
    MaildirStore(s.maildir).create("Sent")
    MaildirStore(s.maildir).create("Drafts")
    yield s
    s.close()


def test_flag_change_runs_the_script_and_its_flags_are_kept(flag_setup):
    s = flag_setup
    c = s.c
    c.command("b", b"SELECT INBOX")
    got = c.command("c", b"STORE 3 +FLAGS ($Junk)")
    assert got[-1].startswith(b"c OK")
    [rec] = s.records_got()
    assert rec.split(b"\n")[0] == b"flagged-junk $Junk|FLAG|alice"
    # The script's imap4flags answer replaced the client's flags; the session hears about it.
    got = c.command("d", b"FETCH 3 FLAGS")
    assert b"* 3 FETCH (FLAGS (\\Recent $Reported))\r\n" in got
    assert c.command("e", b"STORE 1 +FLAGS (\\Seen)")[-1].startswith(b"e OK")
    assert len(s.records_got()) == 1     # no $Junk: the script did nothing


def test_fileinto_copies_and_the_discarded_original_is_expunged(flag_setup):
    s = flag_setup
    c = s.c
    raw = plain(5).replace(b"\n", b"\r\n")
    c.send(b"a1 APPEND Sent (\\Seen) {%d+}\r\n" % len(raw) + raw + b"\r\n")
    assert c.until("a1")[-1].startswith(b"a1 OK")
    assert c.command("b", b"STATUS Sent (MESSAGES)")[0] == b"* STATUS \"Sent\" (MESSAGES 0)\r\n"
    c.command("c", b"SELECT Archive")
    got = c.command("d", b"FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (X-Archived)])")
    assert b"\\Seen" in got[0] and b"X-Archived: yes" in b"".join(got)


def test_a_broken_or_failing_script_never_fails_the_command(flag_setup, caplog):
    s = flag_setup
    c = s.c
    raw = plain(6).replace(b"\n", b"\r\n")
    with caplog.at_level("ERROR", logger="fetchdeliver.imapserver.imapsieve"):
        c.send(b"a1 APPEND Drafts {%d+}\r\n" % len(raw) + raw + b"\r\n")
        assert c.until("a1")[-1].startswith(b"a1 OK [APPENDUID")
    text = caplog.text
    assert "broken.sieve" in text and "script not run" in text
    assert "failing.sieve" in text and "no-such-program" in text
    assert c.command("b", b"STATUS Drafts (MESSAGES)")[0] == b"* STATUS \"Drafts\" (MESSAGES 1)\r\n"


def test_config_errors_name_the_key(tmp_path):
    path = write(tmp_path / "c.toml", '[[imapsieve.mailbox]]\nname = "Junk"\ncauses = ["MOVE"]\nbefore = "x"\n')
    with open(path, "rb") as f:
        with pytest.raises(Exception, match=r"imapsieve\.mailbox.*'MOVE' is not one of APPEND, COPY, FLAG"):
            config.validate(tomllib.load(f), path)


@pytest.mark.skipif(shutil.which("sa-learn") is None, reason="sa-learn is not installed (apt: spamassassin)")
def test_moving_into_junk_trains_spamassassin(tmp_path, monkeypatch):
    """The classic use with the real learner: `sa-learn --spam` gets the message."""
    db = tmp_path / "bayes"
    db.mkdir()
    learner = f"#!/bin/sh\nexec sa-learn --spam --dbpath {db} -\n"
    toml = f'[imapsieve]\n[[imapsieve.mailbox]]\nname = "Junk"\ncauses = ["COPY"]\nbefore = "{tmp_path}/s.sieve"\n'
    s = Setup(tmp_path, toml, {"s.sieve": 'require ["imapsieve", "vnd.dovecot.pipe", "copy"];\n'
                                           'pipe :copy "sa-learn-spam";\n'}, monkeypatch)
    try:
        write(tmp_path / "bin" / "sa-learn-spam", learner, stat.S_IRWXU)
        s.c.command("b", b"SELECT INBOX")
        assert s.c.command("c", b"MOVE 1 Junk")[-1].startswith(b"c OK")
        out = subprocess.run(["sa-learn", "--dbpath", str(db), "--dump", "magic"], capture_output=True,
                             text=True, timeout=60).stdout
        nspam = [ln.split()[2] for ln in out.splitlines() if ln.rstrip().endswith("nspam")]
        assert nspam == ["1"], out
    finally:
        s.close()


def test_redirect_goes_to_the_outbound_queue(tmp_path, monkeypatch):
    """With [relay], a redirect in an imapsieve script is queued as in delivery (sent later by the
    queue runner); without it the redirect is not made and the message is kept."""
    from fetchdeliver.config import Settings
    from fetchdeliver.outbound.queue import OutboundQueue

    toml = f"""
[relay]
host = "127.0.0.1"
port = 9
tls = "none"
[delivery]
state_dir = "{tmp_path}/state"
[imapsieve]
[[imapsieve.mailbox]]
name = "Junk"
causes = ["COPY"]
before = "{tmp_path}/report.sieve"
"""
    s = Setup(tmp_path, toml, {"report.sieve": 'require ["imapsieve", "copy"];\nredirect :copy "abuse@example.net";\n'},
              monkeypatch)
    try:
        s.c.command("b", b"SELECT INBOX")
        assert s.c.command("c", b"MOVE 1 Junk")[-1].startswith(b"c OK")
        with open(tmp_path / "config.toml", "rb") as f:
            data = config.validate(tomllib.load(f), str(tmp_path / "config.toml"))
        queue = OutboundQueue.from_settings(Settings(data))
        [item] = queue.items()
        assert item.recipient == "abuse@example.net"
        queued = queue.message(item.id)
        assert b"Subject: m number 1" in queued and b"body of m 1" in queued
        assert s.c.command("d", b"STATUS Junk (MESSAGES)")[0] == b'* STATUS "Junk" (MESSAGES 1)\r\n'
    finally:
        s.close()
