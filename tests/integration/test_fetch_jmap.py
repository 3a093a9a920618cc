"""`protocol = "jmap"` accounts against a real Cyrus IMAP 3.6 with JMAP (tests/integration/cyrus.py).

Mail is put in over Cyrus' IMAP; `fetchdeliver fetch` takes it over JMAP (session discovery,
Email/query or Email/changes, Email/get, blob download) into a Maildir.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fetchsetup import counts, split_received
from jmap_support import JmapSetup, bodies, cyrus, msg, user  # noqa: F401  (cyrus, user: fixtures)

pytestmark = pytest.mark.timeout(180)


def test_fetch_is_byte_exact_and_incremental(tmp_path, cyrus, user, fetchdeliver_cmd):
    raws = [msg(1), msg(2, b"X-Odd:   spaces\t \r\n"), msg(3)]
    for raw in raws:
        cyrus.append(user, raw)
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd)
    r = setup.run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert counts(r.stdout, "jm") == (3, 3, 0, 0)
    got = setup.delivered()
    # Exactly the blob's bytes (CRLF and all) under the one Received: line we add.
    assert bodies(got) == sorted(raws)
    assert all(b"with JMAP" in split_received(raw)[0] for raw in got)
    point = setup.sync_point()
    assert len(point) == 1 and point[0][0] == user

    # Nothing new: no delivery; the watermark stays usable.
    r = setup.run()
    assert counts(r.stdout, "jm") == (0, 0, 0, 0), r.stdout + r.stderr
    # One more message: only it is fetched (Email/changes since the stored state).
    cyrus.append(user, msg(4))
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    assert bodies(setup.delivered()) == sorted(raws + [msg(4)])
    assert setup.sync_point()[0][2] != point[0][2]
    # The server still has everything (after = "keep"), unflagged.
    assert all(b"\\Seen" not in flags for flags, _ in cyrus.messages(user).values())


def test_keep_crlf_false_stores_lf(tmp_path, cyrus, user, fetchdeliver_cmd):
    cyrus.append(user, msg(1))
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, keep_crlf=False)
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    assert bodies(setup.delivered()) == [msg(1).replace(b"\r\n", b"\n")]


def test_mark_seen_after_delivery(tmp_path, cyrus, user, fetchdeliver_cmd):
    for i in range(3):
        cyrus.append(user, msg(i))
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, after="mark-seen")
    r = setup.run()
    assert counts(r.stdout, "jm") == (3, 3, 0, 0), r.stdout + r.stderr
    on_server = cyrus.messages(user)
    assert len(on_server) == 3
    assert all(b"\\Seen" in flags for flags, _ in on_server.values())
    # Our own $seen changes come back in Email/changes: nothing is fetched again.
    r = setup.run()
    assert counts(r.stdout, "jm") == (0, 0, 0, 0), r.stdout + r.stderr
    assert len(setup.delivered()) == 3


def test_delete_after_delivery(tmp_path, cyrus, user, fetchdeliver_cmd):
    raws = [msg(i) for i in range(4)]
    for raw in raws:
        cyrus.append(user, raw)
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, after="delete")
    r = setup.run()
    assert counts(r.stdout, "jm") == (4, 4, 0, 0), r.stdout + r.stderr
    assert cyrus.messages(user) == {}
    assert bodies(setup.delivered()) == sorted(raws)
    r = setup.run()
    assert counts(r.stdout, "jm") == (0, 0, 0, 0), r.stdout + r.stderr


def test_move_after_delivery(tmp_path, cyrus, user, fetchdeliver_cmd):
    cyrus.append(user, msg(1))
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, after="move:Fetched/Done")
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    assert cyrus.messages(user) == {}
    moved = cyrus.messages(user, "Fetched/Done")
    assert [raw for _, raw in moved.values()] == [msg(1)]


def test_initial_new_only(tmp_path, cyrus, user, fetchdeliver_cmd):
    cyrus.append(user, msg(1))
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, initial="new-only")
    r = setup.run()
    assert counts(r.stdout, "jm") == (0, 0, 0, 0), r.stdout + r.stderr
    cyrus.append(user, msg(2))
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    assert bodies(setup.delivered()) == [msg(2)]


def test_other_folders(tmp_path, cyrus, user, fetchdeliver_cmd):
    cyrus.append(user, msg(1))
    cyrus.append(user, msg(2), folder="Lists")
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, folders=["Lists"])
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    assert bodies(setup.delivered()) == [msg(2)]
    # A message arriving in a folder we do not fetch changes the Email state, but is not fetched.
    cyrus.append(user, msg(3))
    r = setup.run()
    assert counts(r.stdout, "jm") == (0, 0, 0, 0), r.stdout + r.stderr
    # Adding INBOX to the folders starts over with a listing: msg(1) and msg(3) now come too.
    setup.keys["folders"] = ["Lists", "INBOX"]
    setup.write()
    r = setup.run()
    assert counts(r.stdout, "jm") == (2, 2, 0, 0), r.stdout + r.stderr


def test_missing_folder_and_wrong_password_are_clear_errors(tmp_path, cyrus, user, fetchdeliver_cmd):
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, folders=["Nope"])
    r = setup.run()
    assert r.returncode == 1
    assert "fetchdeliver: jm: JMAP Mailbox/get: no mailbox 'Nope' (mailboxes: Inbox)" in r.stderr, r.stderr
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, password="wrong")
    r = setup.run()
    assert r.returncode == 1
    assert "fetchdeliver: jm: JMAP session: login refused (HTTP 401" in r.stderr, r.stderr


def test_session_url_given(tmp_path, cyrus, user, fetchdeliver_cmd):
    cyrus.append(user, msg(1))
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, session_url=cyrus.session_url)
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr


CRASH_AFTER_DELIVERY = r'''
import os, sys
from fetchdeliver.sources import runner
real = runner.AccountRun._process
def process(self, p, parsed):
    out = real(self, p, parsed)
    if out.ok and os.environ.get("FD_CRASH") == "after-deliver":
        os._exit(9)       # delivered durably, not yet recorded, not acknowledged
    return out
runner.AccountRun._process = process
if os.environ.get("FD_CRASH") == "before-ack":
    from fetchdeliver.sources import jmap
    def ack(self, handles):
        if handles:
            os._exit(9)   # delivered and recorded, not yet marked/destroyed at the server
    jmap.JmapSource.ack = ack
from fetchdeliver.cli import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.parametrize("after", ["mark-seen", "delete"])
@pytest.mark.parametrize("crash", ["after-deliver", "before-ack"])
def test_exactly_once_across_a_crash(tmp_path, cyrus, user, after, crash):
    raws = [msg(i) for i in range(3)]
    for raw in raws:
        cyrus.append(user, raw)
    script = tmp_path / "crashing_fetch.py"
    script.write_text(CRASH_AFTER_DELIVERY)
    setup = JmapSetup(tmp_path, cyrus, user, [sys.executable, str(script)], after=after, batch_size=1)
    r = subprocess.run(setup.cmd + ["fetch", "-c", setup.config], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "FD_CRASH": crash})
    assert r.returncode == 9, r.stdout + r.stderr
    assert len(setup.delivered()) == 1
    # The source is untouched: the state (and the server) moved only after durable delivery.
    assert len(cyrus.messages(user)) == 3
    assert setup.sync_point() == []
    r = setup.run()
    assert r.returncode == 0, r.stdout + r.stderr
    # Every message delivered exactly once, then acknowledged.
    assert bodies(setup.delivered()) == sorted(raws)
    left = cyrus.messages(user)
    if after == "delete":
        assert left == {}
    else:
        assert len(left) == 3 and all(b"\\Seen" in flags for flags, _ in left.values())
    assert len(setup.sync_point()) == 1
    r = setup.run()
    assert counts(r.stdout, "jm") == (0, 0, 0, 0), r.stdout + r.stderr


def test_dry_run_changes_nothing(tmp_path, cyrus, user, fetchdeliver_cmd):
    cyrus.append(user, msg(1))
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, after="delete")
    r = setup.run("--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "jm: dry run: nothing was delivered, recorded or changed on the server" in r.stdout
    assert setup.delivered() == [] and len(cyrus.messages(user)) == 1
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr


def test_a_failed_delivery_keeps_the_watermark_and_the_message(tmp_path, cyrus, user, fetchdeliver_cmd):
    cyrus.append(user, msg(1))
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, after="delete")
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    point = setup.sync_point()
    # The store cannot take mail (its path is a file): a temporary failure, left on the server.
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    setup.keys["maildir"] = str(blocked)
    setup.write()
    cyrus.append(user, msg(2))
    r = setup.run()
    assert r.returncode == 1
    assert counts(r.stdout, "jm") == (1, 0, 0, 1), r.stdout + r.stderr
    assert "not delivered, left on the server for the next run" in r.stderr, r.stderr
    assert [raw for _, raw in cyrus.messages(user).values()] == [msg(2)]
    assert setup.sync_point() == point
    # The store is back: the message comes (changes since the old watermark), then is deleted.
    del setup.keys["maildir"]
    setup.write()
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    assert bodies(setup.delivered()) == [msg(1), msg(2)]
    assert cyrus.messages(user) == {} and setup.sync_point() != point


def test_https_with_ca_file_and_with_a_pin(tmp_path, cyrus, user, fetchdeliver_cmd):
    cyrus.append(user, msg(1))
    tls = {"port": cyrus.port("https"), "tls": "implicit"}
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, ca_file=cyrus.ca_file, **tls)
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    assert all(b"with JMAPS" in split_received(raw)[0] for raw in setup.delivered())
    # The system CAs do not know the test CA: refused, naming the problem.
    setup.keys.pop("ca_file")
    setup.write()
    r = setup.run()
    assert r.returncode == 1
    assert "fetchdeliver: jm: JMAP session: certificate not trusted" in r.stderr, r.stderr
    # A pin of the server's certificate replaces the CA check (a self-signed server) ...
    cyrus.append(user, msg(2))
    setup.keys["fingerprint"] = cyrus.fingerprint
    setup.write()
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    # ... and a pin that does not match is refused before any request is sent.
    setup.keys["fingerprint"] = "00" * 32
    setup.write()
    r = setup.run()
    assert r.returncode == 1
    assert "fetchdeliver: jm: JMAP connect: the server's certificate has SHA-256 fingerprint" in r.stderr, r.stderr


def test_switching_an_imap_account_to_jmap_delivers_nothing_twice(tmp_path, cyrus, user, fetchdeliver_cmd):
    raws = [msg(i) for i in range(3)]
    for raw in raws:
        cyrus.append(user, raw)
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd, protocol="imap", port=cyrus.port("imap"))
    r = setup.run()
    assert counts(r.stdout, "jm") == (3, 3, 0, 0), r.stdout + r.stderr
    # Same account name, now over JMAP: the duplicate memory knows every message's bytes.
    setup.keys.update(protocol="jmap", port=cyrus.port("http"))
    setup.write()
    cyrus.append(user, msg(3))
    r = setup.run()
    assert counts(r.stdout, "jm") == (4, 1, 3, 0), r.stdout + r.stderr
    assert len(setup.delivered()) == 4


def _set_point(setup, **cols) -> None:
    import sqlite3

    db = sqlite3.connect(os.path.join(setup.state_dir, "state.sqlite"))
    try:
        for col, value in cols.items():
            db.execute(f"UPDATE jmap_sync SET {col} = ?", (value,))
        db.commit()
    finally:
        db.close()


def test_a_state_the_server_does_not_know_falls_back_to_a_listing(tmp_path, cyrus, user, fetchdeliver_cmd):
    cyrus.append(user, msg(1))
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd)
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    _set_point(setup, state="garbage")      # Cyrus: invalidArguments for sinceState
    cyrus.append(user, msg(2))
    r = setup.run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    assert setup.sync_point()[0][2] != "garbage"


def test_a_full_listing_at_least_daily(tmp_path, cyrus, user, fetchdeliver_cmd):
    import time

    cyrus.append(user, msg(1))
    setup = JmapSetup(tmp_path, cyrus, user, fetchdeliver_cmd)
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    # A state from the server's future (its states went backwards, e.g. a restore): Cyrus answers
    # "no changes" for it. Once the last complete listing is a day old, the folders are listed again.
    _set_point(setup, state="999999", at=time.time() - 2 * 86400)
    cyrus.append(user, msg(2))
    r = setup.run()
    assert counts(r.stdout, "jm") == (1, 1, 0, 0), r.stdout + r.stderr
    assert bodies(setup.delivered()) == [msg(1), msg(2)]
