"""MboxStore: mboxrd format, locking, truncation on failure, folders, flags."""

import mailbox
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery_support import corpus, read
from fetchdeliver.delivery.mbox import (MboxStore, format_message, from_line, mboxrd_escape,
                                        mboxrd_unescape, split_mboxrd)
from fetchdeliver.errors import InvalidMailboxName, MailboxNotFound, TemporaryDeliveryError

CORPUS = corpus()
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FROM_RE = re.compile(rb"^From (\S+) (Mon|Tue|Wed|Thu|Fri|Sat|Sun) "
                     rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d "
                     rb"\d\d:\d\d:\d\d \d{4}$")


def normalized(raw: bytes) -> bytes:
    """What an mbox can give back: the message with a final newline."""
    return raw if raw.endswith(b"\n") else raw + b"\n"


def test_from_line_format():
    line = from_line("someone@example.org", when=0)
    assert line == b"From someone@example.org Thu Jan  1 00:00:00 1970\n"
    assert from_line("", when=0).startswith(b"From MAILER-DAEMON Thu Jan  1")
    assert from_line("<>", when=0).startswith(b"From MAILER-DAEMON ")
    assert from_line("<a@b.c>", when=0).startswith(b"From a@b.c ")
    assert from_line("a b@c\td", when=0).startswith(b"From a_b@c_d ")
    assert FROM_RE.match(from_line("x@y")[:-1])


@pytest.mark.parametrize("raw,escaped", [
    (b"From x\n", b">From x\n"),
    (b"a\nFrom x\n>From y\n>>From z\n", b"a\n>From x\n>>From y\n>>>From z\n"),
    (b"From\nFromage\n From x\n>From\n", b"From\nFromage\n From x\n>From\n"),
    (b"a\r\nFrom x\r\n", b"a\r\n>From x\r\n"),
    (b"a\rFrom x\n", b"a\rFrom x\n"),  # a bare CR does not start a line for mbox readers
    (b"", b""),
])
def test_mboxrd_escaping(raw, escaped):
    assert mboxrd_escape(raw) == escaped
    assert mboxrd_unescape(escaped) == raw


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_odd_messages_round_trip(tmp_path, name):
    raw = CORPUS[name]
    store = MboxStore(str(tmp_path / "inbox"))
    store.deliver(b"Subject: before\n\nb\n", sender="a@example.org")
    store.deliver(raw, sender="odd@example.org")
    store.deliver(b"Subject: after\n\na\n")
    data = read(str(tmp_path / "inbox"))
    msgs = split_mboxrd(data)
    assert [m for _, m in msgs] == [b"Subject: before\n\nb\n", normalized(raw), b"Subject: after\n\na\n"]
    assert all(FROM_RE.match(f) for f, _ in msgs)
    assert msgs[1][0].startswith(b"From odd@example.org ")
    # The stdlib reader (mboxo-style: it does not unescape) agrees on boundaries and bytes.
    box = mailbox.mbox(str(tmp_path / "inbox"), create=False)
    got = [box.get_bytes(k) for k in box.keys()]
    assert got == [b"Subject: before\n\nb\n", mboxrd_escape(normalized(raw)), b"Subject: after\n\na\n"]


def test_file_that_does_not_end_in_a_blank_line_gets_a_separator(tmp_path):
    path = tmp_path / "inbox"
    path.write_bytes(b"From a Thu Jan  1 00:00:00 1970\nSubject: x\n\nno newline at end")
    MboxStore(str(path)).deliver(b"Subject: y\n\ny\n")
    data = path.read_bytes()
    assert data.startswith(b"From a Thu Jan  1 00:00:00 1970\nSubject: x\n\nno newline at end\n\nFrom ")
    assert [m for _, m in split_mboxrd(data)] == [b"Subject: x\n\nno newline at end\n", b"Subject: y\n\ny\n"]
    path.write_bytes(b"From a Thu Jan  1 00:00:00 1970\nSubject: x\n\nends in one newline\n")
    MboxStore(str(path)).deliver(b"Subject: y\n\ny\n")
    assert b"ends in one newline\n\nFrom " in path.read_bytes()


def test_flags_become_dovecot_status_headers(tmp_path):
    path = tmp_path / "inbox"
    store = MboxStore(str(path))
    store.deliver(b"Subject: f\r\n\r\nx\r\n", "INBOX", ["\\Seen", "\\Answered", "\\Flagged", "\\Draft",
                                                    "\\Deleted", "$Label1"])
    (_, msg), = split_mboxrd(path.read_bytes())
    # CRLF message: the added headers use CRLF too; the keyword is unknown to Dovecot (no
    # X-IMAPbase yet), so no X-Keywords header, which Dovecot would drop whole.
    assert msg == b"Status: R\r\nX-Status: AFTD\r\nSubject: f\r\n\r\nx\r\n"


def test_keywords_known_from_x_imapbase_are_written(tmp_path):
    path = tmp_path / "inbox"
    path.write_bytes(b"From a Thu Jan  1 00:00:00 1970\nSubject: first\n"
                     b"X-IMAPbase: 1700000000 0000000002 Work $Label1\nX-UID: 1\n\nbody\n\n")
    MboxStore(str(path)).deliver(b"Subject: k\n\nk\n", "INBOX", ["work", "Unknown", "$Label1"])
    msgs = split_mboxrd(path.read_bytes())
    assert msgs[1][1] == b"X-Keywords: Work $Label1\nSubject: k\n\nk\n"


def test_no_flags_means_no_added_bytes(tmp_path):
    raw = b"Subject: plain\n\nbody\n"
    path = tmp_path / "inbox"
    MboxStore(str(path)).deliver(raw, "INBOX", [], sender="s@x")
    data = path.read_bytes()
    assert data == from_line("s@x", when=_stamp(data)) + raw + b"\n"


def _stamp(data: bytes) -> float:
    import calendar

    when = data.split(b"\n", 1)[0].split(b" ", 2)[2].decode()
    return calendar.timegm(time.strptime(when, "%a %b %d %H:%M:%S %Y"))


def test_folders_live_under_folder_dir(tmp_path):
    inbox = tmp_path / "spool" / "joe"
    store = MboxStore(str(inbox))
    assert store.folder_dir == str(tmp_path / "spool" / "mail")
    store.deliver(b"a\n", "Work/Reports")
    store.deliver(b"b\n", "Ärger")
    store.deliver(b"c\n")
    assert (tmp_path / "spool" / "mail" / "Work" / "Reports").is_file()
    assert (tmp_path / "spool" / "mail" / "&AMQ-rger").is_file()
    assert inbox.is_file()
    assert store.list_mailboxes() == ["INBOX", "Work/Reports", "Ärger"]
    assert store.mailbox_exists("Work/Reports") and store.mailbox_exists("INBOX")
    assert not store.mailbox_exists("Work") and not store.mailbox_exists("../x")
    other = MboxStore(str(inbox), str(tmp_path / "elsewhere"))
    other.deliver(b"d\n", "X")
    assert (tmp_path / "elsewhere" / "X").is_file()
    assert other.describe("X") == f"mbox {tmp_path / 'elsewhere' / 'X'}"


def test_mbox_file_cannot_hold_subfolders(tmp_path):
    store = MboxStore(str(tmp_path / "inbox"), str(tmp_path / "mail"))
    store.deliver(b"a\n", "Work")
    with pytest.raises(InvalidMailboxName, match="cannot hold sub-folders"):
        store.deliver(b"b\n", "Work/Reports")
    store.deliver(b"c\n", "Dir/Box")
    with pytest.raises(InvalidMailboxName, match="is a directory"):
        store.deliver(b"d\n", "Dir")
    with pytest.raises(InvalidMailboxName):
        store.deliver(b"e\n", "../../etc/passwd")


def test_missing_mailbox_without_create(tmp_path):
    store = MboxStore(str(tmp_path / "inbox"))
    with pytest.raises(MailboxNotFound, match="mailbox does not exist"):
        store.deliver(b"x\n", "Nope", create=False)
    assert not (tmp_path / "mail").exists()
    store.deliver(b"x\n", "INBOX", create=False)


def test_held_dotlock_times_out_and_leaves_the_file_alone(tmp_path):
    path = tmp_path / "inbox"
    store = MboxStore(str(path), lock_timeout=0.3)
    store.deliver(b"first\n")
    before = path.read_bytes()
    (tmp_path / "inbox.lock").write_bytes(b"999999:otherhost")
    with pytest.raises(TemporaryDeliveryError, match="lock timeout") as e:
        store.deliver(b"second\n")
    assert str(tmp_path / "inbox.lock") in str(e.value)
    assert path.read_bytes() == before
    assert (tmp_path / "inbox.lock").exists()  # not ours to remove
    assert [f for f in os.listdir(tmp_path) if f.startswith(".lk")] == []


def test_stale_dotlock_is_removed(tmp_path):
    path = tmp_path / "inbox"
    lock = tmp_path / "inbox.lock"
    lock.write_bytes(b"")
    old = time.time() - 301
    os.utime(lock, (old, old))
    MboxStore(str(path), lock_timeout=5).deliver(b"x\n")
    assert not lock.exists()
    assert [m for _, m in split_mboxrd(path.read_bytes())] == [b"x\n"]


def test_dotlock_of_a_dead_process_on_this_host_is_removed(tmp_path):
    path = tmp_path / "inbox"
    lock = tmp_path / "inbox.lock"
    gone = subprocess.Popen(["/bin/true"])
    gone.wait(timeout=30)
    lock.write_text(f"{gone.pid}:{os.uname().nodename}")
    old = time.time() - 10  # recent: not stale by age, only because its process is gone
    os.utime(lock, (old, old))
    MboxStore(str(path), lock_timeout=5).deliver(b"x\n")
    assert not lock.exists()
    # A live holder (this very process) is respected.
    lock.write_text(f"{os.getpid()}:{os.uname().nodename}")
    os.utime(lock, (old, old))
    with pytest.raises(TemporaryDeliveryError, match=f"holder {os.getpid()}:"):
        MboxStore(str(path), lock_timeout=0.3).deliver(b"y\n")
    assert lock.exists()


def test_fcntl_lock_of_another_process_is_honoured(tmp_path):
    path = tmp_path / "inbox"
    path.write_bytes(b"")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'r+');"
         "fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(TemporaryDeliveryError, match="fcntl-locked"):
            MboxStore(str(path), lock_timeout=0.3).deliver(b"x\n")
        assert path.read_bytes() == b""
        assert not (tmp_path / "inbox.lock").exists()  # the dot-lock was released again
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    MboxStore(str(path), lock_timeout=5).deliver(b"x\n")
    assert len(split_mboxrd(path.read_bytes())) == 1


def test_failed_append_is_truncated_back_byte_exact(tmp_path):
    # A real short write: RLIMIT_FSIZE makes the append fail with EFBIG half-way.
    path = tmp_path / "inbox"
    store = MboxStore(str(path))
    for i in range(3):
        store.deliver(b"Subject: %d\n\nbody\n" % i)
    before = path.read_bytes()
    code = ("import sys, signal, resource; sys.path.insert(0, sys.argv[1])\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))\n"
            "from fetchdeliver.delivery.mbox import MboxStore\n"
            "from fetchdeliver.errors import TemporaryDeliveryError\n"
            "try: MboxStore(sys.argv[2]).deliver(b'Subject: big\\n\\n' + b'z' * 200000)\n"
            "except TemporaryDeliveryError as e: print(e); sys.exit(75)\n")
    r = subprocess.run([sys.executable, "-c", code, REPO, str(path), str(len(before) + 5000)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 75, r.stderr
    assert "File too large" in r.stdout and str(path) in r.stdout
    assert path.read_bytes() == before
    assert not (tmp_path / "inbox.lock").exists()


def test_half_message_of_a_killed_writer_is_cut_off_by_the_next(tmp_path):
    # A real death mid-append: with SIGXFSZ at its default action, going past RLIMIT_FSIZE kills
    # the writer inside write(), after a short write and before it can truncate anything.
    path = tmp_path / "inbox"
    store = MboxStore(str(path))
    store.deliver(b"Subject: first\n\n1\n")
    before = path.read_bytes()
    code = ("import sys, signal, resource; sys.path.insert(0, sys.argv[1])\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n"
            "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))\n"
            "from fetchdeliver.delivery.mbox import MboxStore\n"
            "MboxStore(sys.argv[2]).deliver(b'Subject: big\\n\\n' + b'z' * 200000)\n")
    r = subprocess.run([sys.executable, "-c", code, REPO, str(path), str(len(before) + 5000)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGXFSZ, r.stderr
    assert path.stat().st_size == len(before) + 5000  # half a message, and the lock left behind
    assert b"mbox-append %d " % len(before) in (tmp_path / "inbox.lock").read_bytes()
    store.deliver(b"Subject: next\n\n2\n")
    assert [m for _, m in split_mboxrd(path.read_bytes())] == [b"Subject: first\n\n1\n",
                                                               b"Subject: next\n\n2\n"]
    assert not (tmp_path / "inbox.lock").exists()
    assert [f for f in os.listdir(tmp_path) if f.startswith(".lk")] == []


def test_a_broken_lock_never_cuts_other_writers_messages(tmp_path):
    path = tmp_path / "inbox"
    store = MboxStore(str(path))
    store.deliver(b"Subject: a\n\na\n")
    start = path.stat().st_size
    store.deliver(b"Subject: b\n\nb\n")  # complete, though a dead writer's journal covers it
    store.deliver(b"Subject: c\n\nc\n")
    before = path.read_bytes()
    gone = subprocess.Popen(["/bin/true"])
    gone.wait(timeout=30)
    lock = tmp_path / "inbox.lock"
    lock.write_bytes(b"%d:%s\nmbox-append %d 100000\n" % (gone.pid, os.uname().nodename.encode(), start))
    old = time.time() - 10
    os.utime(lock, (old, old))
    store.deliver(b"Subject: d\n\nd\n")
    assert path.read_bytes().startswith(before)
    assert len(split_mboxrd(path.read_bytes())) == 4


def test_rollback_truncates_only_when_we_are_last(tmp_path):
    path = tmp_path / "inbox"
    store = MboxStore(str(path))
    store.deliver(b"keep\n")
    before = path.read_bytes()
    r = store.deliver(b"undo me\n")
    r.rollback()
    assert path.read_bytes() == before
    r2 = store.deliver(b"mine\n")
    store.deliver(b"someone else's\n")
    after = path.read_bytes()
    r2.rollback()  # another message follows ours: leave the file alone
    assert path.read_bytes() == after


def test_new_mbox_is_private(tmp_path):
    path = tmp_path / "inbox"
    MboxStore(str(path)).deliver(b"x\n")
    assert os.stat(path).st_mode & 0o077 == 0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=600) | st.sampled_from(
    [b"From x\n", b">From y\n", b"a\n\nFrom z\n", b"\n", b"", b"From ", b"\r\nFrom \r\n", b">>From"]),
    min_size=1, max_size=6))
def test_random_messages_round_trip(tmp_path, raws):
    path = tmp_path / "hyp.mbox"
    if path.exists():
        path.unlink()
    store = MboxStore(str(path), fsync=False)
    for raw in raws:
        store.deliver(raw, sender="h@example.org")
    data = path.read_bytes()
    assert [m for _, m in split_mboxrd(data)] == [normalized(r) for r in raws]
    box = mailbox.mbox(str(path), create=False)
    assert [box.get_bytes(k) for k in box.keys()] == [mboxrd_escape(normalized(r)) for r in raws]


def test_format_message_is_what_gets_appended(tmp_path):
    raw = b"From me\nbody"
    entry = format_message(raw, "s@x", when=0)
    assert entry == b"From s@x Thu Jan  1 00:00:00 1970\n>From me\nbody\n\n"
