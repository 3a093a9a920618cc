"""Real IMAP clients against our server: offlineimap3, fetchmail, getmail6 and neomutt (driven in tmux).

Each client gets its own temporary HOME (they all keep state there) and talks
to our server on 127.0.0.1 with an ephemeral port. What a client did is checked
on the server's Maildir on disk, not through our own IMAP code.
"""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from fetchdeliver.delivery.maildir import MaildirStore
from fetchdeliver.imapserver.maildir import MaildirStorage
from imap_helpers import MULTIPART, make_server, plain

pytestmark = pytest.mark.timeout(120)


def _need(exe: str, package: str):
    return pytest.mark.skipif(shutil.which(exe) is None, reason=f"{exe} not installed (apt-get install {package})")


def _home(tmp_path) -> dict[str, str]:
    """An environment whose HOME is a fresh directory (the tools write state there)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAIL", "IMAP"))}
    env.update(HOME=str(home), FETCHMAILHOME=str(home), LC_ALL="C.UTF-8", TERM="xterm")
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{cmd[0]} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _subject(raw: bytes) -> str:
    for ln in raw.replace(b"\r\n", b"\n").split(b"\n"):
        if ln.lower().startswith(b"subject:"):
            return ln[8:].strip().decode()
        if not ln:
            break
    return ""


def _server_disk(maildir: str, folder: str = "INBOX") -> dict[str, set[str]]:
    """{Subject: flags} of a folder of the server's Maildir, read from the file names."""
    box = MaildirStorage(maildir).open(folder)
    return {_subject(box.read(m)): set(m.flags) for m in box.sync()}


def _local_disk(folder: str) -> dict[str, str]:
    """{Subject: info letters} of a client-side Maildir folder."""
    out = {}
    for sub in ("new", "cur"):
        for name in os.listdir(os.path.join(folder, sub)):
            with open(os.path.join(folder, sub, name), "rb") as f:
                subj = _subject(f.read())
            info = name.split(":2,", 1)[1] if ":2," in name else ""
            out[subj] = "".join(sorted(c for c in info if c.isupper()))
    return out


def _server_set(maildir: str, changes: dict[str, set[str]], expunge: tuple[str, ...] = ()) -> None:
    """Change flags (by Subject) and expunge messages directly in the server's Maildir."""
    box = MaildirStorage(maildir).open("INBOX")
    msgs = {_subject(box.read(m)): m for m in box.sync()}
    box.set_flags([(msgs[s], frozenset(f)) for s, f in changes.items()])
    box.expunge([msgs[s] for s in expunge])


# -- offlineimap3 ---------------------------------------------------------------------------------

@_need("offlineimap", "offlineimap3")
def test_offlineimap_two_way_sync(tmp_path):
    """offlineimap3 (SELECT, EXAMINE, UID FETCH, APPEND with UIDPLUS, STORE, EXPUNGE) both ways."""
    server, maildir, _pw = make_server(tmp_path, n_plain=30, extra=[MULTIPART])
    try:
        MaildirStore(maildir).create_mailbox("Work")
        MaildirStore(maildir).deliver(plain(1, "work"), "Work")
        env = _home(tmp_path)
        local = tmp_path / "local"
        with open(os.path.join(env["HOME"], ".offlineimaprc"), "w") as f:
            f.write(f"""[general]
accounts = fd
metadata = {tmp_path}/offlineimap-state

[Account fd]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {local}

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {server.port()}
remoteuser = alice
remotepass = secret
ssl = no
starttls = no
""")
        cmd = ["offlineimap", "-o", "-u", "basic"]
        _run(cmd, env)
        inbox = str(local / "INBOX")
        got = _local_disk(inbox)
        assert set(got) == {f"m number {i}" for i in range(1, 31)} | {"=?UTF-8?B?w4RyZ2Vy?= report"}
        assert all(flags == "" for flags in got.values())
        assert set(_local_disk(str(local / "Work"))) == {"work number 1"}
        name = next(n for n in os.listdir(os.path.join(inbox, "new")) if "U=31," in n)
        with open(os.path.join(inbox, "new", name), "rb") as f:
            assert f.read().replace(b"\r\n", b"\n") == MULTIPART

        # Local side: flag one, delete one, add one. Server side: flag one, expunge one, deliver one.
        for sub in ("new", "cur"):
            for n in os.listdir(os.path.join(inbox, sub)):
                path = os.path.join(inbox, sub, n)
                with open(path, "rb") as f:
                    subj = _subject(f.read())
                if subj == "m number 2":
                    os.rename(path, os.path.join(inbox, "cur", n.split(":2,")[0] + ":2,FS"))
                elif subj == "m number 3":
                    os.unlink(path)
        local_new = b"From: me@example.org\nSubject: written locally\nMessage-ID: <local.1@example.org>\n\nhi\n"
        with open(os.path.join(inbox, "new", "1700000000.local1.host"), "wb") as f:
            f.write(local_new)
        _server_set(maildir, {"m number 5": {"\\Flagged", "\\Answered"}}, expunge=("m number 7",))
        MaildirStore(maildir).deliver(plain(99, "server-new"))

        _run(cmd, env)
        remote = _server_disk(maildir)
        assert remote["m number 2"] == {"\\Flagged", "\\Seen"}
        assert "m number 3" not in remote and "m number 7" not in remote
        assert "written locally" in remote and "server-new number 99" in remote
        box = MaildirStorage(maildir).open("INBOX")
        uploaded = next(box.read(m) for m in box.sync() if _subject(box.read(m)) == "written locally")
        # With UIDPLUS offlineimap needs no X-OfflineIMAP marker header: the bytes arrive unchanged.
        assert uploaded.replace(b"\r\n", b"\n") == local_new
        mine = _local_disk(inbox)
        assert set(mine) == set(remote)
        assert mine["m number 5"] == "FR" and mine["m number 2"] == "FS"
        # A third run finds nothing to do on either side.
        _run(cmd, env)
        assert _server_disk(maildir) == remote and _local_disk(inbox) == mine
    finally:
        server.stop()


# -- fetchmail ----------------------------------------------------------------------------------------

MDA = """#!/bin/sh
# One file per message, in the order fetchmail hands them over.
n=$(ls "$1" | wc -l)
cat > "$1/$(printf %04d "$n").eml"
"""


@_need("fetchmail", "fetchmail")
def test_fetchmail_keep_and_all(tmp_path):
    """fetchmail (FETCH n RFC822.HEADER, BODY.PEEK[TEXT], STORE +FLAGS \\Seen) with --keep and --all --keep."""
    server, maildir, _pw = make_server(tmp_path, n_plain=5, extra=[MULTIPART])
    try:
        env = _home(tmp_path)
        out = tmp_path / "delivered"
        out.mkdir()
        mda = tmp_path / "mda.sh"
        mda.write_text(MDA)
        mda.chmod(0o755)
        rc = os.path.join(env["HOME"], ".fetchmailrc")
        with open(rc, "w") as f:
            f.write(f"""set no bouncemail
set no syslog
poll 127.0.0.1 service {server.port()} protocol IMAP auth password
  user "alice" password "secret" is "{getpass.getuser()}" here
  sslproto ''
  mda "{mda} {out}"
""")
        os.chmod(rc, 0o600)   # fetchmail refuses a readable rc file with a password in it
        _server_set(maildir, {"m number 2": {"\\Seen"}})
        # Its own pid file: as root fetchmail uses /var/run/fetchmail.pid whatever FETCHMAILHOME says,
        # and refuses to run while another test's (or anyone's) fetchmail holds it.
        base = ["fetchmail", "-f", rc, "--invisible", "--nosyslog",
                "--pidfile", os.path.join(env["HOME"], "fetchmail.pid")]

        _run(base + ["--keep"], env)   # only the unseen ones
        got = [(out / n).read_bytes() for n in sorted(os.listdir(out))]
        assert [_subject(r) for r in got] == ["m number 1", "m number 3", "m number 4", "m number 5",
                                              "=?UTF-8?B?w4RyZ2Vy?= report"]
        assert got[0] == plain(1) and got[-1] == MULTIPART   # byte for byte (LF, --invisible: no Received)
        disk = _server_disk(maildir)
        assert len(disk) == 6 and all(f == {"\\Seen"} for f in disk.values())

        for n in os.listdir(out):
            os.unlink(out / n)
        _server_set(maildir, {"m number 1": {"\\Seen", "\\Flagged"}})
        MaildirStore(maildir).deliver(plain(6))
        _run(base + ["--all", "--keep"], env)
        got = [(out / n).read_bytes() for n in sorted(os.listdir(out))]
        assert len(got) == 7 and got[5] == MULTIPART and got[6] == plain(6)
        disk = _server_disk(maildir)   # kept, and marked seen; other flags untouched
        assert len(disk) == 7 and disk["m number 1"] == {"\\Seen", "\\Flagged"}
        assert all("\\Seen" in f and "\\Deleted" not in f for f in disk.values())
    finally:
        server.stop()


# -- getmail6 -------------------------------------------------------------------------------------------

GETMAIL_HEADERS = (b"return-path:", b"delivered-to:", b"received:", b"x-getmail-retrieved-from-mailbox:")


def _without_getmail_headers(raw: bytes) -> bytes:
    """The message as getmail fetched it, without the trace header fields getmail adds."""
    head, _, body = raw.partition(b"\n\n")
    kept, skipping = [], False
    for ln in head.split(b"\n"):
        if ln[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(ln)
            continue
        skipping = ln.lower().startswith(GETMAIL_HEADERS)
        if not skipping:
            kept.append(ln)
    return b"\n".join(kept) + b"\n\n" + body


@_need("getmail", "getmail6")
def test_getmail_examine_close_leaves_the_mailbox_alone(tmp_path):
    """getmail6 (EXAMINE, FETCH UID RFC822.SIZE, UID FETCH BODY.PEEK[], CLOSE) into a Maildir."""
    server, maildir, _pw = make_server(tmp_path, n_plain=4, extra=[MULTIPART])
    outside = ""
    try:
        env = _home(tmp_path)
        # CLOSE after EXAMINE must not expunge: a \Deleted message stays on disk.
        _server_set(maildir, {"m number 2": {"\\Deleted"}})
        before = _server_disk(maildir)
        # pytest's tmp_path is private to root; the delivering user must be able to walk in.
        outside = tempfile.mkdtemp(prefix="fd-getmail-", dir="/tmp")
        os.chmod(outside, 0o755)
        dest = Path(outside) / "dest"
        for sub in ("", "new", "cur", "tmp"):
            (dest / sub).mkdir(exist_ok=True)
        user = ""
        if os.geteuid() == 0:   # getmail will not deliver as root: it switches to `user`
            user = "user = nobody\n"
            nobody = pwd.getpwnam("nobody")
            for d in (dest, dest / "new", dest / "cur", dest / "tmp"):
                os.chown(d, nobody.pw_uid, nobody.pw_gid)
        gmdir = tmp_path / "getmail"
        gmdir.mkdir()
        (gmdir / "getmailrc").write_text(f"""[retriever]
type = SimpleIMAPRetriever
server = 127.0.0.1
port = {server.port()}
username = alice
password = secret
mailboxes = ("INBOX",)

[destination]
type = Maildir
path = {dest}/
{user}
[options]
read_all = false
delete = false
""")
        cmd = ["getmail", "--getmaildir", str(gmdir), "--rcfile", "getmailrc"]

        def delivered() -> dict[str, bytes]:
            return {_subject((dest / "new" / n).read_bytes()): (dest / "new" / n).read_bytes()
                    for n in os.listdir(dest / "new")}

        _run(cmd, env)
        got = delivered()
        assert set(got) == set(before)
        # Apart from the trace headers getmail adds, byte for byte.
        assert _without_getmail_headers(got["=?UTF-8?B?w4RyZ2Vy?= report"]) == MULTIPART
        assert _without_getmail_headers(got["m number 1"]) == plain(1)
        assert _server_disk(maildir) == before   # read-only: no \Seen set, nothing expunged

        _run(cmd, env)   # remembers the UIDs it has (oldmail file): nothing new
        assert len(os.listdir(dest / "new")) == 5
        MaildirStore(maildir).deliver(plain(7, "later"))
        _run(cmd, env)
        assert set(delivered()) == set(before) | {"later number 7"}
        assert _server_disk(maildir)["m number 2"] == {"\\Deleted"}
    finally:
        server.stop()
        if outside:
            shutil.rmtree(outside, ignore_errors=True)


# -- neomutt in tmux -------------------------------------------------------------------------------------

class Tmux:
    """One tmux server on a private socket, running one program in one pane."""

    def __init__(self, sock: str, env: dict[str, str], command: str) -> None:
        self.base = ["tmux", "-S", sock, "-f", "/dev/null"]
        self.env = env
        subprocess.run(self.base + ["new-session", "-d", "-s", "t", "-x", "120", "-y", "30", command],
                       env=env, check=True, timeout=30)

    def keys(self, *keys: str) -> None:
        subprocess.run(self.base + ["send-keys", "-t", "t", *keys], env=self.env, check=True, timeout=30)

    def screen(self) -> str:
        r = subprocess.run(self.base + ["capture-pane", "-p", "-t", "t"], env=self.env, capture_output=True,
                           text=True, timeout=30)
        return r.stdout

    def wait(self, pred, what: str, timeout: float = 30.0) -> str:
        """Poll the pane until pred(screen) holds."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.screen()
            if pred(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{s}")
            time.sleep(0.1)   # polling the pane, not a timing assumption

    def kill(self) -> None:
        subprocess.run(self.base + ["kill-server"], env=self.env, capture_output=True, timeout=30)


def _index_line(screen: str, subject: str) -> str | None:
    return next((ln for ln in screen.splitlines() if ln.rstrip().endswith(subject)), None)


def _marks(screen: str, subject: str) -> str:
    """The status column (N, D, !, ...) of a message's index line; "" while it is not shown."""
    line = _index_line(screen, subject)
    return line.split("|")[0] if line and "|" in line else ""


def _wait_disk(pred, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} on disk")
        time.sleep(0.1)   # polling the Maildir, not a timing assumption


@_need("neomutt", "neomutt")
@_need("tmux", "tmux")
def test_neomutt_read_flag_move(tmp_path):
    """neomutt (ENABLE UTF8=ACCEPT, LIST, SELECT, IDLE, UID FETCH, UID COPY, STORE, EXPUNGE) in tmux."""
    server, maildir, _pw = make_server(tmp_path, n_plain=4, idle_poll=600)
    tmux = None
    try:
        MaildirStore(maildir).create_mailbox("Work")
        env = _home(tmp_path)
        rc = os.path.join(env["HOME"], "muttrc")
        with open(rc, "w") as f:
            f.write(f"""set folder = "imap://alice@127.0.0.1:{server.port()}/"
set spoolfile = "+INBOX"
set imap_user = alice
set imap_pass = secret
set ssl_starttls = no
set ssl_force_tls = no
set header_cache = ""
set message_cachedir = ""
set imap_idle = yes
set mail_check = 1
set timeout = 1
set confirmappend = no
set confirmcreate = no
set delete = yes
set move = no
set mark_old = no
set resolve = no
set sort = mailbox-order
set sleep_time = 0
set wait_key = no
set help = no
set index_format = "%4C %Z| %s"
""")
        tmux = Tmux(str(tmp_path / "tmux.sock"), env, f"neomutt -n -F {rc}")
        tmux.wait(lambda s: all(_index_line(s, f"m number {i}") for i in range(1, 5)), "the INBOX index")

        def goto(subject: str) -> None:
            num = _index_line(tmux.wait(lambda s: _marks(s, subject), subject), subject).split()[0]
            tmux.keys(num)       # a digit opens "Jump to message:"
            tmux.wait(lambda s: "Jump to message" in s, "the jump prompt")
            tmux.keys("C-u", num, "Enter")

        # Read "m number 2", flag it, move it to Work. Flag "m number 3" and leave it.
        goto("m number 2")
        tmux.keys("Enter")
        tmux.wait(lambda s: "body of m 2" in s, "the message in the pager")
        tmux.keys("q")
        tmux.wait(lambda s: _index_line(s, "m number 1") is not None, "the index again")
        tmux.keys("F")
        tmux.wait(lambda s: "!" in _marks(s, "m number 2"), "the flag mark")
        tmux.keys("s")
        tmux.wait(lambda s: "Save to mailbox" in s, "the save prompt")
        tmux.keys("C-u", "=Work", "Enter")
        tmux.wait(lambda s: "D" in _marks(s, "m number 2"), "the message marked deleted")
        goto("m number 3")
        tmux.keys("F")
        tmux.wait(lambda s: "!" in _marks(s, "m number 3"), "the second flag")
        tmux.keys("$")   # sync: flags are written, the moved message is expunged

        def moved() -> bool:
            inbox, work = _server_disk(maildir), _server_disk(maildir, "Work")
            return "m number 2" not in inbox and "\\Flagged" in inbox.get("m number 3", set()) \
                and "m number 2" in work
        _wait_disk(moved, "the flag and the move")
        inbox, work = _server_disk(maildir), _server_disk(maildir, "Work")
        assert inbox == {"m number 1": set(), "m number 3": {"\\Flagged"}, "m number 4": set()}
        assert work == {"m number 2": {"\\Seen", "\\Flagged"}}   # read and flagged before the move

        # IDLE: a delivery while neomutt idles shows up in its index without a keypress.
        MaildirStore(maildir).deliver(plain(5, "idle"))
        tmux.wait(lambda s: _index_line(s, "idle number 5") is not None, "the delivered message in the index")
    finally:
        if tmux is not None:
            tmux.kill()
        server.stop()
