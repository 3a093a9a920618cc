"""MaildirStore: byte-exact, durable, Dovecot-compatible names, flags and keywords, clean failures."""

import errno
import mailbox
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery_support import corpus, maildir_files, read
from fetchdeliver.delivery.maildir import MaildirStore, read_keywords, unique_name, virtual_size
from fetchdeliver.errors import (InvalidMailboxName, MailboxNotFound, PermanentDeliveryError,
                                 TemporaryDeliveryError)

CORPUS = corpus()
NAME_RE = re.compile(r"^(\d+)\.M(\d+)P(\d+)R([0-9a-f]{16})Q(\d+)\.([^,:/]+),S=(\d+),W=(\d+)(:2,[A-Za-z]*)?$")


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_odd_messages_are_stored_byte_exact(tmp_path, name):
    raw = CORPUS[name]
    store = MaildirStore(str(tmp_path / "Maildir"))
    receipt = store.deliver(raw)
    files = maildir_files(store.root)
    assert files == [receipt.path]
    assert read(receipt.path) == raw
    assert os.listdir(tmp_path / "Maildir" / "tmp") == []
    m = NAME_RE.match(os.path.basename(receipt.path))
    assert m, receipt.path
    assert int(m.group(7)) == len(raw) == os.path.getsize(receipt.path)
    assert int(m.group(8)) == virtual_size(raw)
    assert m.group(9) is None
    assert int(m.group(3)) == os.getpid()


def test_virtual_size_counts_bare_lf_as_crlf():
    assert virtual_size(b"") == 0
    assert virtual_size(b"a\nb\n") == 6
    assert virtual_size(b"a\r\nb\r\n") == 6
    assert virtual_size(b"a\rb\r") == 4
    assert virtual_size(b"\r\r\n\n") == 5


def test_file_name_parts_and_uniqueness(tmp_path):
    host = os.uname().nodename.replace("/", "\\057").replace(":", "\\072")
    names = {unique_name() for _ in range(2000)}
    assert len(names) == 2000
    for n in list(names)[:20]:
        sec, rest = n.split(".", 1)
        assert abs(int(sec) - time.time()) < 3600
        assert rest.endswith("." + host)
        assert f"P{os.getpid()}R" in rest


def test_unique_names_across_processes(tmp_path):
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "from fetchdeliver.delivery.maildir import MaildirStore;"
            "s = MaildirStore(sys.argv[2], fsync=False)\n"
            "for i in range(200): s.deliver(b'n %d\\n' % i)")
    root = str(tmp_path / "md")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    procs = [subprocess.Popen([sys.executable, "-c", code, repo, root]) for _ in range(3)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    files = maildir_files(root)
    assert len(files) == 600
    assert sorted(read(f) for f in files) == sorted(b"n %d\n" % i for i in range(200) for _ in range(3))


def test_flags_go_to_cur_with_sorted_info_letters(tmp_path):
    store = MaildirStore(str(tmp_path / "md"))
    r = store.deliver(b"Subject: f\n\nx\n", "INBOX",
                      ["\\Seen", "\\Deleted", "\\Answered", "\\Draft", "\\Flagged", "\\Recent"])
    assert os.path.dirname(r.path) == str(tmp_path / "md" / "cur")
    assert r.path.endswith(":2,DFRST")
    assert maildir_files(store.root) == []
    # System flags are case-insensitive; \Recent alone is no flag at all.
    assert store.deliver(b"x", "INBOX", ["\\SEEN"]).path.endswith(":2,S")
    assert "/new/" in store.deliver(b"x", "INBOX", ["\\Recent"]).path


def test_keywords_use_dovecot_keywords_letters(tmp_path):
    store = MaildirStore(str(tmp_path / "md"))
    r1 = store.deliver(b"a", "Work", ["$Label1", "\\Seen", "Work"])
    assert r1.path.endswith(":2,Sab")
    kw_file = tmp_path / "md" / ".Work" / "dovecot-keywords"
    assert kw_file.read_bytes() == b"0 $Label1\n1 Work\n"
    # Known keywords are reused (case-insensitively); a new one gets the next free index.
    r2 = store.deliver(b"b", "Work", ["work", "urgent", "$label1"])
    assert r2.path.endswith(":2,abc")
    assert kw_file.read_bytes() == b"0 $Label1\n1 Work\n2 urgent\n"
    assert read_keywords(str(tmp_path / "md" / ".Work")) == {"$label1": 0, "work": 1, "urgent": 2}
    assert not (tmp_path / "md" / ".Work" / "dovecot-keywords.lock").exists()
    assert not (tmp_path / "md" / ".Work" / "dovecot-uidlist.lock").exists()


def test_keyword_gaps_are_filled_and_the_27th_keyword_is_dropped(tmp_path):
    store = MaildirStore(str(tmp_path / "md"))
    folder = tmp_path / "md"
    store.create_mailbox("INBOX")
    (folder / "dovecot-keywords").write_bytes(b"0 zero\n2 two\n")
    assert store.deliver(b"x", "INBOX", ["new"]).path.endswith(":2,b")
    assert (folder / "dovecot-keywords").read_bytes() == b"0 zero\n1 new\n2 two\n"
    many = [f"k{i}" for i in range(30)]
    r = store.deliver(b"x", "INBOX", many)
    letters = r.path.rsplit(":2,", 1)[1]
    assert len(letters) == 23 and letters == "".join(sorted(letters))  # 26 slots, 3 already taken
    assert len(read_keywords(str(folder))) == 26


def test_invalid_flags_are_ignored_not_fatal(tmp_path):
    store = MaildirStore(str(tmp_path / "md"))
    r = store.deliver(b"x", "INBOX", ["has space", "(paren", "", "\\NoSuchFlag", "ok"])
    assert r.path.endswith(":2,a")
    assert (tmp_path / "md" / "dovecot-keywords").read_bytes() == b"0 ok\n"


def test_subfolders_are_created_as_maildir_plus_plus(tmp_path):
    store = MaildirStore(str(tmp_path / "md"))
    r = store.deliver(b"x\n", "Work/Reports")
    folder = tmp_path / "md" / ".Work.Reports"
    assert r.path.startswith(str(folder / "new") + "/")
    for d in ("tmp", "new", "cur"):
        assert (folder / d).is_dir()
        assert (tmp_path / "md" / d).is_dir()
    assert (folder / "maildirfolder").is_file()
    assert not (tmp_path / "md" / "maildirfolder").exists()
    assert store.mailbox_exists("Work/Reports") and not store.mailbox_exists("Work")
    assert store.deliver(b"y\n", "Ärger").path.startswith(str(tmp_path / "md" / ".&AMQ-rger" / "new"))
    assert store.list_mailboxes() == ["INBOX", "Work/Reports", "Ärger"]
    assert store.describe("Work/Reports") == f"Maildir folder {folder}"


def test_root_and_its_missing_parents_are_created(tmp_path):
    store = MaildirStore(str(tmp_path / "a" / "b" / "Maildir"))
    r = store.deliver(b"x\n", "Sub")
    assert read(r.path) == b"x\n"
    for d in ("tmp", "new", "cur"):
        assert (tmp_path / "a" / "b" / "Maildir" / d).is_dir()
    assert not (tmp_path / "a" / "b" / "Maildir" / "maildirfolder").exists()


def test_folder_modes_follow_the_root(tmp_path):
    root = tmp_path / "md"
    root.mkdir(mode=0o750)
    os.chmod(root, 0o750)
    store = MaildirStore(str(root))
    r = store.deliver(b"x", "Sub")
    assert os.stat(root / ".Sub").st_mode & 0o777 == 0o750
    assert os.stat(r.path).st_mode & 0o777 == 0o640


def test_missing_mailbox_without_create_is_a_permanent_error(tmp_path):
    store = MaildirStore(str(tmp_path / "md"))
    with pytest.raises(MailboxNotFound, match="mailbox does not exist") as e:
        store.deliver(b"x", "Nope", create=False)
    assert isinstance(e.value, PermanentDeliveryError) and "Nope" in str(e.value)
    assert not (tmp_path / "md" / ".Nope").exists()
    # INBOX always exists, and an existing folder takes mail without create.
    store.deliver(b"x", "INBOX", create=False)
    store.create_mailbox("Yes")
    assert store.deliver(b"x", "Yes", create=False).path.startswith(str(tmp_path / "md" / ".Yes"))


@pytest.mark.parametrize("name", ["../escape", "/etc", "a.b", "nul\x00", ""])
def test_invalid_names_raise_and_create_nothing(tmp_path, name):
    store = MaildirStore(str(tmp_path / "md"))
    with pytest.raises(InvalidMailboxName):
        store.deliver(b"x", name)
    assert not (tmp_path / "md").exists()
    assert store.mailbox_exists(name) is False
    assert "invalid mailbox name" in store.describe(name)


def test_maildir_path_that_is_a_file_is_a_temporary_error(tmp_path):
    blocker = tmp_path / "md"
    blocker.write_bytes(b"not a directory")
    store = MaildirStore(str(blocker))
    with pytest.raises(TemporaryDeliveryError) as e:
        store.deliver(b"x")
    assert str(blocker) in str(e.value) and "Not a directory" in str(e.value)
    assert blocker.read_bytes() == b"not a directory"


def test_unwritable_maildir_is_a_temporary_error(tmp_path):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the delivery as an unprivileged user")
    import tempfile

    base = tempfile.mkdtemp(prefix="fd-perm-")
    try:
        os.chmod(base, 0o755)
        root = os.path.join(base, "md")
        MaildirStore(root).create_mailbox("INBOX")
        os.chmod(root, 0o755)  # owned by root: nobody may not write tmp/
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
                "from fetchdeliver.delivery.maildir import MaildirStore\n"
                "from fetchdeliver.errors import TemporaryDeliveryError\n"
                "try: MaildirStore(sys.argv[2]).deliver(b'x')\n"
                "except TemporaryDeliveryError as e: print('TEMP', e); sys.exit(75)\n")
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-c", code, repo, root],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 75, r.stderr
        assert "Permission denied" in r.stdout and root in r.stdout
        assert os.listdir(os.path.join(root, "new")) == []
    finally:
        shutil.rmtree(base)


def test_write_failure_leaves_nothing_behind(tmp_path):
    # A real short write: the file-size limit (RLIMIT_FSIZE) stops the write with EFBIG.
    root = str(tmp_path / "md")
    MaildirStore(root).create_mailbox("INBOX")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import sys, signal, resource; sys.path.insert(0, sys.argv[1])\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            "from fetchdeliver.delivery.maildir import MaildirStore\n"
            "from fetchdeliver.errors import TemporaryDeliveryError\n"
            "try: MaildirStore(sys.argv[2]).deliver(b'x' * 100000)\n"
            "except TemporaryDeliveryError as e: print(e); sys.exit(75)\n")
    r = subprocess.run([sys.executable, "-c", code, repo, root], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 75, r.stderr
    assert "File too large" in r.stdout
    for sub in ("tmp", "new", "cur"):
        assert os.listdir(os.path.join(root, sub)) == []


def test_rename_fallback_where_hard_links_fail(tmp_path, monkeypatch):
    # Fault injection for file systems without link() (vfat, some FUSE): os.link says EPERM.
    def no_link(src, dst, *a, **k):
        raise OSError(errno.EPERM, "Operation not permitted", src)

    monkeypatch.setattr(os, "link", no_link)
    store = MaildirStore(str(tmp_path / "md"))
    r = store.deliver(b"fallback\n", "INBOX", ["\\Seen"])
    assert read(r.path) == b"fallback\n"
    assert os.listdir(tmp_path / "md" / "tmp") == []


def test_rollback_removes_the_message_even_after_a_client_moved_it(tmp_path):
    store = MaildirStore(str(tmp_path / "md"))
    r = store.deliver(b"one\n")
    r.rollback()
    assert maildir_files(store.root) == []
    r2 = store.deliver(b"two\n")
    moved = os.path.join(store.root, "cur", os.path.basename(r2.path) + ":2,S")
    os.rename(r2.path, moved)  # what Dovecot does when a client reads it
    r2.rollback()
    assert maildir_files(store.root, "cur") == []
    r2.rollback()  # a second rollback is a no-op


def test_held_uidlist_lock_times_out_and_stale_one_is_broken(tmp_path):
    store = MaildirStore(str(tmp_path / "md"), lock_timeout=0.3)
    store.create_mailbox("INBOX")
    lock = tmp_path / "md" / "dovecot-uidlist.lock"
    lock.write_bytes(b"1:otherhost")
    with pytest.raises(TemporaryDeliveryError, match="lock timeout"):
        store.deliver(b"x", "INBOX", ["newkw"])
    assert maildir_files(store.root, "cur") == []
    old = time.time() - 600
    os.utime(lock, (old, old))
    r = store.deliver(b"x", "INBOX", ["newkw"])
    assert r.path.endswith(":2,a") and not lock.exists()
    # Keywords already known need no lock at all.
    lock.write_bytes(b"1:otherhost")
    assert store.deliver(b"y", "INBOX", ["newkw"]).path.endswith(":2,a")


def test_stdlib_maildir_reads_what_we_wrote(tmp_path):
    store = MaildirStore(str(tmp_path / "md"))
    raws = {name: CORPUS[name] for name in sorted(CORPUS)[:8]}
    for raw in raws.values():
        store.deliver(raw)
    store.deliver(b"Subject: flagged\n\nf\n", "INBOX", ["\\Seen", "\\Flagged"])
    md = mailbox.Maildir(str(tmp_path / "md"), factory=None, create=False)
    got = sorted(md.get_bytes(k) for k in md.keys())
    assert got == sorted([*raws.values(), b"Subject: flagged\n\nf\n"])
    flagged = [md.get_message(k) for k in md.keys() if md.get_message(k).get_subdir() == "cur"]
    assert [m.get_flags() for m in flagged] == ["FS"]
    store.deliver(b"x\n", "Work/Reports")
    assert md.list_folders() == ["Work.Reports"]
    folder = md.get_folder("Work.Reports")
    assert [folder.get_bytes(k) for k in folder.keys()] == [b"x\n"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=5000), flags=st.lists(st.sampled_from(
    ["\\Seen", "\\Flagged", "\\Answered", "$Label1", "Junk"]), max_size=3))
def test_random_bytes_are_delivered_byte_exact(tmp_path, raw, flags):
    store = MaildirStore(str(tmp_path / "hyp"), fsync=False)
    r = store.deliver(raw, "INBOX", flags)
    try:
        assert read(r.path) == raw
        size = int(re.search(r",S=(\d+)", r.path).group(1))
        assert size == len(raw)
    finally:
        r.rollback()


def test_concurrent_directory_fsyncs_are_shared_and_none_is_skipped(tmp_path, monkeypatch):
    """Group commit: every caller returns only after an fsync that began after its call."""
    import threading

    from fetchdeliver.delivery import fsio

    d = str(tmp_path)
    calls, started = [], threading.Event()
    real_fsync = fsio.os.fsync
    gate = threading.Event()

    def slow_fsync(fd):
        calls.append(fd)
        started.set()
        gate.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(fsio.os, "fsync", slow_fsync)
    first = threading.Thread(target=fsio.fsync_dir, args=(d,))
    first.start()
    started.wait(10)                      # the first fsync is under way ...
    later = [threading.Thread(target=fsio.fsync_dir, args=(d,)) for _ in range(5)]
    for t in later:
        t.start()                         # ... these five came after it began: it cannot cover them
    import time

    deadline = time.monotonic() + 10
    while fsio._DIRS[d][1] < 6 and time.monotonic() < deadline:  # all five hold their tickets
        time.sleep(0.001)
    gate.set()
    for t in [first, *later]:
        t.join(10)
    assert len(calls) == 2                # one for the first, one shared by the five
