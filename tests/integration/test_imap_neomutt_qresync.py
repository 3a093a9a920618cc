"""neomutt with its header cache, imap_condstore and imap_qresync against our server (in tmux).

The first session fills neomutt's header cache; while neomutt is not running a message is
flagged and one delivered; the second session resyncs from its cache with SELECT (CONDSTORE) and
UID FETCH ... (CHANGEDSINCE n VANISHED) (neomutt 20220429's way; seen in its own debug log), passes
its own check of the result (no "QRESYNC failed. Reopening mailbox.") and shows the mailbox as it is.
(After an expunge this neomutt always falls back to a full reload: it keeps the cached sequence
numbers across VANISHED (EARLIER), which RFC 7162 does not promise.)
"""

from __future__ import annotations

import glob
import os

import pytest

from fetchdeliver.delivery.maildir import MaildirStore
from imap_helpers import RawClient, make_server, plain
from test_imap_clients import Tmux, _home, _index_line, _marks, _need

pytestmark = pytest.mark.timeout(120)


@_need("neomutt", "neomutt")
@_need("tmux", "tmux")
def test_neomutt_resyncs_with_qresync(tmp_path):
    server, maildir, _pw = make_server(tmp_path, n_plain=4, idle_poll=600)
    tmux = None
    try:
        env = _home(tmp_path)
        home = env["HOME"]
        rc = os.path.join(home, "muttrc")
        with open(rc, "w") as f:
            f.write(f"""set folder = "imap://alice@127.0.0.1:{server.port()}/"
set spoolfile = "+INBOX"
set imap_user = alice
set imap_pass = secret
set ssl_starttls = no
set ssl_force_tls = no
set header_cache = "{home}/hcache"
set message_cachedir = ""
set imap_condstore = yes
set imap_qresync = yes
set imap_idle = no
set mail_check = 1
set timeout = 1
set quit = yes
set mark_old = no
set sort = mailbox-order
set sleep_time = 0
set wait_key = no
set help = no
set index_format = "%4C %Z| %s"
""")
        os.makedirs(os.path.join(home, "hcache"))
        cmd = f"neomutt -n -F {rc} -d 2 -l {home}/neomutt.log"
        tmux = Tmux(str(tmp_path / "tmux.sock"), env, cmd)
        tmux.wait(lambda s: all(_index_line(s, f"m number {i}") for i in range(1, 5)), "the INBOX index")
        tmux.keys("q")
        tmux.kill()
        tmux = None

        # Changes while neomutt is away: a flag (through IMAP) and a delivery.
        c = RawClient(server.port())
        c.command("a0", b"LOGIN alice secret")
        c.command("a1", b"SELECT INBOX")
        assert c.command("a2", b"STORE 3 +FLAGS (\\Flagged)")[-1].startswith(b"a2 OK")
        c.close()
        MaildirStore(maildir).deliver(plain(5, "new"))

        tmux = Tmux(str(tmp_path / "tmux2.sock"), env, cmd.replace("neomutt.log", "neomutt2.log"))
        screen = tmux.wait(lambda s: _index_line(s, "new number 5") is not None and
                           "!" in _marks(s, "m number 3"), "the resynced index")
        assert all(_index_line(screen, f"m number {i}") is not None for i in (1, 2, 4))
        assert "!" not in _marks(screen, "m number 2")
        log = "".join(open(p, errors="replace").read() for p in glob.glob(os.path.join(home, "neomutt2.log*")))
        assert "ENABLE QRESYNC" in log, log[-3000:]
        assert "(CHANGEDSINCE " in log and "VANISHED)" in log, log[-3000:]
        assert "QRESYNC failed" not in log and "mismatch" not in log, log[-3000:]
    finally:
        if tmux is not None:
            tmux.kill()
        server.stop()
