"""Our Maildir and mbox read by independent real readers (Dovecot's doveadm, procmail, the stdlib),
concurrent appends with a real procmail, and a real full disk (tmpfs)."""

import errno
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from delivery_support import Doveadm, corpus, maildir_files, read
from fetchdeliver.delivery.maildir import MaildirStore, virtual_size
from fetchdeliver.delivery.mbox import MboxStore, mboxrd_escape, split_mboxrd
from fetchdeliver.delivery.names import maildir_folder
from fetchdeliver.errors import TemporaryDeliveryError

CORPUS = corpus()
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Headers Dovecot's mbox code keeps for itself and hides from clients.
DOVECOT_MBOX_HEADERS = (b"status:", b"x-status:", b"x-keywords:", b"x-uid:", b"x-imap:",
                        b"x-imapbase:", b"content-length:")


@pytest.fixture
def base():
    """A world-traversable temporary directory: doveadm runs as `nobody` when we are root."""
    d = tempfile.mkdtemp(prefix="fd-readers-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def doveadm(base: str, mail_location: str) -> Doveadm:
    if shutil.which("doveadm") is None:
        pytest.skip("doveadm (dovecot-core) is not installed")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: doveadm refuses uid 0")
    return Doveadm(base, mail_location)


def maildir_location(root: str) -> str:
    return f"maildir:{root}:LAYOUT=maildir++"


def split_header(msg: bytes) -> tuple[bytes, bytes]:
    """(header, body) the way Dovecot splits: at the first empty line (LF or CRLF)."""
    pos = 0
    while pos < len(msg):
        end = msg.find(b"\n", pos)
        if end < 0:
            break
        if msg[pos:end] in (b"", b"\r"):
            return msg[:pos], msg[end + 1:]
        pos = end + 1
    return msg, b""


# -- names ---------------------------------------------------------------------------

NON_ASCII_NAMES = ["Ärger", "日本語/子", "Ünï/cödé", "😀", "R&D", "Entwürfe/2024 Q1"]


def test_doveadm_creates_the_directories_names_py_predicts(base):
    root = os.path.join(base, "Maildir")
    dove = doveadm(base, maildir_location(root))
    os.mkdir(root)
    dove.hand_over(root)
    for name in NON_ASCII_NAMES + ["Work/Reports", "inbox/Sub"]:
        dove.run("mailbox", "create", name)
    on_disk = {e for e in os.listdir(root) if e.startswith(".") and e not in (".", "..")}
    expected = {maildir_folder(n) for n in NON_ASCII_NAMES + ["Work/Reports", "inbox/Sub"]}
    # Dovecot also creates the parents it needs (".Work", ".INBOX", ".&ZeVnLIqe-", ...).
    assert expected <= on_disk
    listed = set(MaildirStore(root).list_mailboxes())
    assert {"Ärger", "日本語/子", "Ünï/cödé", "😀", "R&D", "Entwürfe/2024 Q1", "Work/Reports",
            "INBOX/Sub"} <= listed


def test_doveadm_lists_the_folders_we_create(base):
    root = os.path.join(base, "Maildir")
    store = MaildirStore(root)
    for name in NON_ASCII_NAMES:
        store.deliver(b"Subject: x\n\nx\n", name)
    dove = doveadm(base, maildir_location(root))
    dove.hand_over(root)
    listed = dove.run("mailbox", "list").stdout.decode().split("\n")
    assert set(NON_ASCII_NAMES) <= set(listed)
    for name in NON_ASCII_NAMES:
        assert dove.uids(name) == [1]


# -- Maildir -------------------------------------------------------------------------

def test_doveadm_reads_our_maildir_byte_exact(base):
    root = os.path.join(base, "Maildir")
    store = MaildirStore(root)
    for raw in CORPUS.values():
        store.deliver(raw)
    dove = doveadm(base, maildir_location(root))
    dove.hand_over(root)
    uids = dove.uids("INBOX")
    assert len(uids) == len(CORPUS)
    got = sorted(dove.fetch_text("INBOX", uid) for uid in uids)
    assert got == sorted(CORPUS.values())


def test_our_size_fields_match_what_dovecot_computes(base):
    """S= and W= are trusted by Dovecot; strip them and let it measure the files itself."""
    root = os.path.join(base, "Maildir")
    store = MaildirStore(root)
    sizes = {}
    for name, raw in CORPUS.items():
        r = store.deliver(raw)
        m = re.search(r",S=(\d+),W=(\d+)$", r.path)
        sizes[raw] = (int(m.group(1)), int(m.group(2)))
        os.rename(r.path, r.path[:m.start()])
    dove = doveadm(base, maildir_location(root))
    dove.hand_over(root)
    for uid in dove.uids("INBOX"):
        f = dove.fetch_fields("size.physical size.virtual", "INBOX", uid)
        raw = dove.fetch_text("INBOX", uid)
        assert (int(f["size.physical"]), int(f["size.virtual"])) == sizes[raw] == (len(raw), virtual_size(raw))


def test_doveadm_sees_our_flags_and_keywords(base):
    root = os.path.join(base, "Maildir")
    store = MaildirStore(root)
    store.deliver(b"Subject: one\n\n1\n", "Work", ["\\Seen", "\\Flagged", "$Label1", "Project"])
    store.deliver(b"Subject: two\n\n2\n", "Work", ["\\Answered", "\\Draft", "\\Deleted", "project"])
    dove = doveadm(base, maildir_location(root))
    dove.hand_over(root)
    flags = {}
    for uid in dove.uids("Work"):
        f = dove.fetch_fields("flags text", "Work", uid)
        flags[dove.fetch_text("Work", uid)] = set(f["flags"].split()) - {"\\Recent"}
    assert flags == {b"Subject: one\n\n1\n": {"\\Seen", "\\Flagged", "$Label1", "Project"},
                     b"Subject: two\n\n2\n": {"\\Answered", "\\Draft", "\\Deleted", "Project"}}


def test_keywords_dovecot_added_are_shared_with_ours(base):
    root = os.path.join(base, "Maildir")
    store = MaildirStore(root)
    store.deliver(b"Subject: first\n\n1\n")
    dove = doveadm(base, maildir_location(root))
    dove.hand_over(root)
    dove.run("flags", "add", "DoveKw Other", "mailbox", "INBOX", "uid", "1")
    r = store.deliver(b"Subject: second\n\n2\n", "INBOX", ["newkw", "dovekw"])
    # Dovecot's letters were reused (DoveKw a, Other b); ours got the next free one.
    assert r.path.endswith(":2,ac")
    dove.hand_over(root)
    uid2 = max(dove.uids("INBOX"))
    f = dove.fetch_fields("flags", "INBOX", uid2)
    assert set(f["flags"].split()) - {"\\Recent"} == {"DoveKw", "newkw"}


# -- mbox ----------------------------------------------------------------------------

def test_doveadm_reads_our_mbox(base):
    inbox = os.path.join(base, "inbox")
    folders = os.path.join(base, "mail")
    store = MboxStore(inbox, folders)
    names = sorted(CORPUS)
    for name in names:
        store.deliver(CORPUS[name], sender="odd@example.org")
    store.deliver(b"Subject: in a folder\n\nf\n", "Ärger/Sub")
    dove = doveadm(base, f"mbox:{folders}:INBOX={inbox}")
    dove.hand_over(base)  # Dovecot dot-locks the inbox: it must write in its directory
    assert dove.uids("INBOX") == list(range(1, len(names) + 1))
    exact = set()
    for uid, name in enumerate(names, 1):
        raw = CORPUS[name]
        # Dovecot does not undo mboxrd quoting, and a message gets the final newline it lacked.
        expected = mboxrd_escape(raw if raw.endswith(b"\n") else raw + b"\n")
        header, body = split_header(expected)
        assert dove.fetch("body", "INBOX", uid) == b"body:\n" + body, name
        if b"\r" not in header and not any(line.lower().startswith(DOVECOT_MBOX_HEADERS)
                                           for line in header.split(b"\n")):
            # (Dovecot rewrites header lines with LF and hides its own headers.)
            assert dove.fetch_text("INBOX", uid) == expected, name
            exact.add(name)
    # The hard cases were among those compared whole: From lines, no final newline, NUL, empty.
    assert {"02-nul-bytes.eml", "07-no-final-newline.eml", "08-from-lines-in-body.eml",
            "09-starts-with-from.eml", "18-empty.eml", "generated-2mib-single-line"} <= exact
    assert dove.fetch_text("Ärger/Sub", 1) == b"Subject: in a folder\n\nf\n"


def test_doveadm_sees_our_mbox_flags(base):
    inbox = os.path.join(base, "inbox")
    store = MboxStore(inbox, os.path.join(base, "mail"))
    store.deliver(b"Subject: a\n\na\n", "INBOX", ["\\Seen", "\\Flagged"])
    store.deliver(b"Subject: b\r\n\r\nb\r\n", "INBOX", ["\\Answered", "\\Draft", "\\Deleted"])
    store.deliver(b"Subject: c\n\nc\n")
    dove = doveadm(base, f"mbox:{os.path.join(base, 'mail')}:INBOX={inbox}")
    dove.hand_over(base)
    got = [set(dove.fetch_fields("flags", "INBOX", uid)["flags"].split()) - {"\\Recent"}
           for uid in (1, 2, 3)]
    assert got == [{"\\Seen", "\\Flagged"}, {"\\Answered", "\\Draft", "\\Deleted"}, set()]
    assert dove.fetch("body", "INBOX", 2) == b"body:\nb\r\n"
    # Once Dovecot has listed a keyword in X-IMAPbase, our X-Keywords header carries it.
    dove.run("flags", "add", "Project", "mailbox", "INBOX", "uid", "1")
    store.deliver(b"Subject: d\n\nd\n", "INBOX", ["project", "\\Seen"])
    dove.hand_over(base)
    f = dove.fetch_fields("flags", "INBOX", 4)
    assert set(f["flags"].split()) - {"\\Recent"} == {"\\Seen", "Project"}


# -- concurrency with a real procmail ------------------------------------------------

WRITER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from fetchdeliver.delivery.mbox import MboxStore
tag, path, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
exec(sys.argv[5])
store = MboxStore(path, lock_timeout=120)
for i in range(n):
    store.deliver(message(tag, i), sender=tag + "@example.org")
    time.sleep(0.002)  # a fetch loop has network round trips between deliveries: room for others
"""

MESSAGE = r"""
def message(tag, i):
    lines = [b"%s-%d line %d %s" % (tag.encode(), i, k, b"x" * ((i * 7 + k) % 70))
             for k in range(3 + (i * 13) % 200)]
    return (b"From: %s@example.org\nSubject: %s-%d\n\n" % (tag.encode(), tag.encode(), i)
            + b"\n".join(lines) + b"\n")
"""


def test_two_writers_and_procmail_append_900_intact_messages(tmp_path):
    if shutil.which("procmail") is None:
        pytest.skip("procmail is not installed")
    n = 300
    mbox = tmp_path / "shared.mbox"
    ns: dict = {}
    exec(MESSAGE, ns)
    message = ns["message"]
    pm_dir = tmp_path / "pm"
    pm_dir.mkdir()
    for i in range(n):
        (pm_dir / f"{i:04d}").write_bytes(message("pm", i))
    rc = tmp_path / "procmailrc"
    # Absolute paths only: procmail run as root ignores $HOME. LOCKSLEEP=0: retry the dot-lock
    # at once (the default sleeps 8 s); the dot-lock name is the one we use, FILE.lock.
    rc.write_text(f"LOCKSLEEP=0\nLOGFILE={tmp_path}/procmail.log\n:0:\n{mbox}\n")
    pm_script = (f'for f in "{pm_dir}"/*; do procmail -m -f pm@example.org "{rc}" < "$f" '
                 f'|| exit 1; done')
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, REPO, tag, str(mbox), str(n), MESSAGE])
             for tag in ("py1", "py2")]
    procs.append(subprocess.Popen(["/bin/sh", "-c", pm_script]))
    try:
        for p in procs:
            assert p.wait(timeout=240) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    msgs = split_mboxrd(mbox.read_bytes())
    assert len(msgs) == 3 * n
    seen = set()
    for from_line, msg in msgs:
        subject = re.search(rb"^Subject: (\w+)-(\d+)$", msg, re.M)
        assert subject, msg[:200]
        tag, i = subject.group(1).decode(), int(subject.group(2))
        assert msg == message(tag, i), f"message {tag}-{i} is damaged"
        assert from_line.startswith(f"From {tag}@example.org ".encode())
        seen.add((tag, i))
    assert seen == {(t, i) for t in ("py1", "py2", "pm") for i in range(n)}
    assert not (tmp_path / "shared.mbox.lock").exists()
    assert b"procmail:" not in (tmp_path / "procmail.log").read_bytes()  # no lock or write errors
    switches = sum(1 for a, b in zip(msgs, msgs[1:]) if a[0].split()[1] != b[0].split()[1])
    print(f"writers took turns {switches} times in {3 * n} messages")


# -- a real full disk ----------------------------------------------------------------

def test_full_disk_is_a_temporary_error_and_leaves_no_trace(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for a real ENOSPC needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        md = MaildirStore(str(mnt / "Maildir"))
        md.deliver(b"Subject: before\n\nfits\n")
        box = MboxStore(str(mnt / "inbox"))
        for i in range(3):
            box.deliver(b"Subject: before %d\n\nfits\n" % i)
        mbox_before = (mnt / "inbox").read_bytes()
        maildir_before = maildir_files(md.root)
        # Fill the file system, then free a few pages so the deliveries fail half-way.
        filler = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(filler, b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        os.ftruncate(filler, os.fstat(filler).st_size - 4 * 4096)
        os.close(filler)
        big = b"Subject: too big\n\n" + b"z" * 100_000

        with pytest.raises(TemporaryDeliveryError, match="No space left on device") as e:
            md.deliver(big)
        assert str(mnt / "Maildir") in str(e.value)
        assert maildir_files(md.root) == maildir_before
        assert os.listdir(mnt / "Maildir" / "tmp") == []
        assert maildir_files(md.root, "cur") == []

        with pytest.raises(TemporaryDeliveryError, match="No space left on device"):
            box.deliver(big)
        assert (mnt / "inbox").read_bytes() == mbox_before
        assert not (mnt / "inbox.lock").exists()
        assert [f for f in os.listdir(mnt) if f.startswith(".lk")] == []

        # With space again both work, and the mbox is still well-formed.
        os.unlink(mnt / "filler")
        md.deliver(big)
        box.deliver(big)
        assert [m for _, m in split_mboxrd((mnt / "inbox").read_bytes())][-1] == big + b"\n"
        assert sorted(read(f) for f in maildir_files(md.root))[-1] == big
    finally:
        subprocess.run(["umount", str(mnt)], timeout=30)
