"""The state database: delivery protocol rows, UID memory, Sieve memories, account locks."""

import subprocess
import sys

import pytest

from fetchdeliver.state import AccountBusy, Pending, State, message_key, new_token


@pytest.fixture
def state(tmp_path):
    with State(str(tmp_path / "state")) as st:
        yield st


def test_database_is_wal(state):
    assert state.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_pending_then_complete_records_duplicate_memory_and_uid(state):
    key = message_key(b"Message-ID: <a@b>\r\n\r\nx\r\n", "<a@b>")
    state.imap_reset_folder("acc", "INBOX", 7)
    p = Pending(new_token(), "INBOX", 7, "12", key, 1.0)
    q = Pending(new_token(), "INBOX", 7, "13", message_key(b"other", ""), 1.0)
    state.add_pending("acc", [p, q])
    assert {x.token for x in state.pending("acc")} == {p.token, q.token}
    assert not state.is_delivered("acc", key)
    state.complete("acc", delivered=[p], failed=[q])
    assert state.pending("acc") == []
    assert state.is_delivered("acc", key)
    assert not state.is_delivered("other-account", key)       # per account
    assert state.imap_seen("acc", "INBOX") == {12}              # the failed one will be fetched again


def test_uid_recorded_only_under_the_current_uidvalidity(state):
    state.imap_reset_folder("acc", "INBOX", 1, [1, 2])
    p = Pending(new_token(), "INBOX", 1, "3", message_key(b"m", ""), 1.0)
    state.add_pending("acc", [p])
    state.imap_reset_folder("acc", "INBOX", 2)                 # UIDVALIDITY changed meanwhile
    state.complete("acc", delivered=[p])
    assert state.imap_seen("acc", "INBOX") == set()
    assert state.is_delivered("acc", p.key)                     # the duplicate memory still knows it
    assert state.imap_uidvalidity("acc", "INBOX") == 2


def test_pop3_rows(state):
    p = Pending(new_token(), "", None, "UIDL-1", message_key(b"m", ""), 1.0)
    state.add_pending("pop", [p])
    state.complete("pop", delivered=[p], seen=[("", None, "UIDL-2")])
    assert state.pop3_seen("pop") == {"UIDL-1", "UIDL-2"}
    state.pop3_forget("pop", ["UIDL-1"])
    assert state.pop3_seen("pop") == {"UIDL-2"}


def test_duplicate_seen_remembers_for_its_period(state):
    assert state.remember("duplicate", "id-1", 10, now=100.0) is False
    assert state.remember("duplicate", "id-1", 10, now=105.0) is True
    assert state.remember("duplicate", "id-1", 10, now=111.0) is False     # expired: recorded again
    assert state.remember("vacation", "id-1", 10, now=111.0) is False      # kinds are separate
    assert state.duplicate_seen("x", 60) is False and state.duplicate_seen("x", 60) is True
    assert state.expire_memory(now=10**12) >= 1


def test_state_survives_reopen(tmp_path):
    with State(str(tmp_path)) as st:
        st.imap_reset_folder("a", "INBOX", 5, [1, 2, 3])
    with State(str(tmp_path)) as st:
        assert st.imap_seen("a", "INBOX") == {1, 2, 3}


HOLD_LOCK = """
import sys, time
from fetchdeliver.state import State
st = State(sys.argv[1])
st.lock_account("work")
print("locked", flush=True)
sys.stdin.read()
"""


def test_account_lock_excludes_other_processes(tmp_path, state):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, state.dir], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(AccountBusy) as e:
            state.lock_account("work", wait=0)
        assert f"pid {holder.pid}" in str(e.value)
        state.lock_account("other", wait=0)      # other accounts are free
    finally:
        holder.stdin.close()
        holder.wait(30)
    state.lock_account("work", wait=0)            # released when the holder exited
