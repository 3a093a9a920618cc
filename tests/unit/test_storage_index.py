"""The Maildir index (storage/index.py): a cache rebuilt when missing or corrupt, reconciled with files
changed behind its back, MODSEQ kept across restarts; dovecot-uidlist stays the source of UIDs."""

from __future__ import annotations

import glob
import os
import sqlite3

import pytest

from fetchdeliver.storage.index import INDEX_NAME, close_idle
from fetchdeliver.storage.maildir import MaildirStore, Uidlist


def msg(i: int, tag: str = "m") -> bytes:
    return (f"From: s{i}@example.org\nTo: a@example.com\nSubject: {tag} {i}\n"
            f"Message-ID: <{tag}.{i}@example.org>\n\nbody {i}\n").encode()


@pytest.fixture
def root(tmp_path):
    root = str(tmp_path / "Maildir")
    store = MaildirStore(root, fsync=False)
    for i in range(1, 6):
        store.deliver(msg(i), flags=["\\Seen"] if i % 2 else [])
    return root


def snapshot(root: str) -> list[tuple[int, frozenset, bytes]]:
    """The mailbox as a freshly started process sees it."""
    close_idle()
    box = MaildirStore(root).open("INBOX")
    try:
        return [(m.uid, m.flags, box.read(m)) for m in box.sync()]
    finally:
        box.close()
        close_idle()


def uidlist_uids(root: str) -> dict[str, int]:
    with open(os.path.join(root, "dovecot-uidlist")) as f:
        return Uidlist.parse(f.read(), "dovecot-uidlist").by_base


def index_rows(root: str) -> dict[int, tuple]:
    close_idle()
    db = sqlite3.connect(os.path.join(root, INDEX_NAME))
    try:
        return {r[0]: r[1:] for r in db.execute("SELECT uid, name, modseq FROM msg")}
    finally:
        db.close()


def test_the_index_is_created_beside_the_mail_and_mirrors_the_uidlist(root):
    first = snapshot(root)
    assert [u for u, _, _ in first] == [1, 2, 3, 4, 5]
    assert os.path.exists(os.path.join(root, INDEX_NAME))
    rows = index_rows(root)
    assert sorted(rows) == [1, 2, 3, 4, 5]
    by_base = uidlist_uids(root)
    for uid, (name, _modseq) in rows.items():
        assert by_base[name.split(":2,")[0]] == uid


def test_a_missing_index_is_rebuilt_with_the_same_uids_and_flags(root):
    first = snapshot(root)
    for p in glob.glob(os.path.join(root, INDEX_NAME + "*")):
        os.unlink(p)
    assert snapshot(root) == first
    assert sorted(index_rows(root)) == [u for u, _, _ in first]


@pytest.mark.parametrize("damage", [b"this is not a database at all\n" * 100, b""])
def test_a_corrupt_index_is_moved_aside_and_rebuilt(root, damage):
    first = snapshot(root)
    path = os.path.join(root, INDEX_NAME)
    for extra in ("-wal", "-shm"):
        if os.path.exists(path + extra):
            os.unlink(path + extra)
    with open(path, "wb") as f:
        f.write(damage)
    assert snapshot(root) == first
    if damage:
        assert glob.glob(path + ".corrupt-*"), "the damaged index is kept aside for a post-mortem"
    assert sorted(index_rows(root)) == [u for u, _, _ in first]


def test_an_index_from_an_older_uidvalidity_is_voided(root):
    first = snapshot(root)
    close_idle()
    db = sqlite3.connect(os.path.join(root, INDEX_NAME))
    db.execute("UPDATE meta SET value = 1 WHERE key = 'uidvalidity'")
    db.execute("UPDATE msg SET name = 'bogus' WHERE uid = 1")
    db.commit()
    db.close()
    assert snapshot(root) == first


def test_files_added_and_removed_behind_our_back_are_reconciled(root):
    store = MaildirStore(root)
    box = store.open("INBOX")
    before = box.sync()
    hms0 = box.highestmodseq()
    # mutt/Dovecot/procmail drop a file in new/, someone removes another with rm.
    with open(os.path.join(root, "new", "1700000000.M1P1.elsewhere"), "wb") as f:
        f.write(msg(99, "foreign"))
    victim = before[1]
    os.unlink(os.path.join(root, victim.handle.subdir, victim.handle.name))
    box._stamp = None          # as after the 2 s freshness window: no waiting in tests
    after = box.sync()
    uids = [m.uid for m in after]
    assert victim.uid not in uids
    assert uids == [1, 3, 4, 5, 6]
    assert box.read(after[-1]) == msg(99, "foreign")
    assert box.highestmodseq() > hms0
    assert after[-1].modseq > hms0
    assert box.vanished_since(hms0) == [victim.uid]
    box.close()
    close_idle()
    # The next process sees the same, from the index.
    box = MaildirStore(root).open("INBOX")
    assert [m.uid for m in box.sync()] == uids
    assert box.vanished_since(hms0) == [victim.uid]
    box.close()
    assert sorted(index_rows(root)) == uids


def test_a_flag_change_by_rename_behind_our_back_raises_the_modseq(root):
    box = MaildirStore(root).open("INBOX")
    msgs = box.sync()
    m = next(x for x in msgs if "\\Seen" not in x.flags and x.handle.subdir == "new")
    hms0 = box.highestmodseq()
    base = m.handle.name
    os.rename(os.path.join(root, "new", base), os.path.join(root, "cur", base + ":2,FS"))
    box._stamp = None
    again = {x.uid: x for x in box.sync()}
    assert again[m.uid].flags == frozenset({"\\Seen", "\\Flagged"})
    assert again[m.uid].modseq > hms0 == max(x.modseq for x in msgs)
    untouched = [x for x in msgs if x.uid != m.uid]
    assert all(again[x.uid].modseq == x.modseq for x in untouched)
    box.close()


def test_modseq_and_expunged_uids_persist_across_restart(root):
    box = MaildirStore(root).open("INBOX")
    msgs = box.sync()
    seq = [box.highestmodseq()]
    box.set_flags([(msgs[0], frozenset({"\\Flagged"}))])
    seq.append(box.highestmodseq())
    uid = box.append(msg(42, "appended"), ("$Work",))
    seq.append(box.highestmodseq())
    box.expunge([msgs[1]])
    seq.append(box.highestmodseq())
    assert seq == sorted(seq) and len(set(seq)) == 4, seq
    state = {m.uid: (m.flags, m.modseq) for m in box.sync()}
    box.close()

    close_idle()
    box = MaildirStore(root).open("INBOX")          # a restarted server
    assert box.highestmodseq() == seq[-1]
    assert {m.uid: (m.flags, m.modseq) for m in box.sync()} == state
    assert state[uid][0] == frozenset({"$Work"})
    assert box.vanished_since(seq[2]) == [msgs[1].uid]
    assert box.vanished_since(seq[-1]) == []
    box.close()


def test_appended_uid_matches_dovecot_uidlist_and_nothing_is_duplicated(root):
    box = MaildirStore(root).open("INBOX")
    box.sync()
    uids = [box.append(msg(100 + i, "app")) for i in range(3)]
    assert uids == [6, 7, 8]
    by_base = uidlist_uids(root)
    assert sorted(by_base.values()) == [1, 2, 3, 4, 5, 6, 7, 8]
    box._stamp = None
    assert [m.uid for m in box.sync()] == [1, 2, 3, 4, 5, 6, 7, 8]
    box.close()
    assert sorted(index_rows(root)) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_cached_parts_survive_a_restart_and_go_with_the_message(root):
    box = MaildirStore(root).open("INBOX")
    msgs = box.sync()
    box.cached(msgs[0])["ENVELOPE"] = b"(envelope of 1)"
    box.flush_cached()
    box.close()
    close_idle()
    box = MaildirStore(root).open("INBOX")
    msgs = box.sync()
    assert box.cached(msgs[0]).get("ENVELOPE") == b"(envelope of 1)"
    assert "ENVELOPE" not in box.cached(msgs[1])
    assert box.cached(msgs[0]).get("headers") is None
    box.expunge([msgs[0]])
    box.close()
    db = sqlite3.connect(os.path.join(root, INDEX_NAME))
    assert db.execute("SELECT count(*) FROM msg WHERE envelope IS NOT NULL OR hdr = 1").fetchone()[0] == 0
    db.close()


def test_a_store_without_index_serves_from_the_files_alone(root):
    for p in glob.glob(os.path.join(root, INDEX_NAME + "*")):
        os.unlink(p)
    box = MaildirStore(root, index=False).open("INBOX")
    msgs = box.sync()
    assert [m.uid for m in msgs] == [1, 2, 3, 4, 5]
    assert box.cached(msgs[0]) is None and box.highestmodseq() == 0
    assert box.append(msg(7)) == 6
    box.close()
    assert not glob.glob(os.path.join(root, INDEX_NAME + "*"))


def test_an_index_that_cannot_be_opened_is_put_aside(root):
    snapshot(root)
    for p in glob.glob(os.path.join(root, INDEX_NAME + "*")):
        os.unlink(p)
    os.mkdir(os.path.join(root, INDEX_NAME))       # not a file at all
    assert [u for u, _, _ in snapshot(root)] == [1, 2, 3, 4, 5]
    assert os.path.isfile(os.path.join(root, INDEX_NAME))


def test_a_foreign_change_in_the_same_clock_tick_as_ours_is_seen_soon_after(root):
    """After our own APPEND the mailbox trusts the stamp it took instead of listing the folder;
    a file another process dropped into cur/ within the same timestamp tick (simulated by
    putting the directory's mtime back) must still show up once that tick is surely over."""
    import time

    box = MaildirStore(root).open("INBOX")
    box.sync()
    box.append(msg(50, "ours"))
    cur = os.path.join(root, "cur")
    st = os.stat(cur)
    with open(os.path.join(cur, "1700000001.M1P2.other:2,S"), "wb") as f:
        f.write(msg(51, "theirs"))
    os.utime(cur, ns=(st.st_atime_ns, st.st_mtime_ns))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [m for m in box.sync() if box.read(m) == msg(51, "theirs")]
        if found:
            break
        time.sleep(0.02)   # polling for the condition, not a timing assumption
    assert found, "the foreign message never appeared"
    assert sorted(m.uid for m in box.sync()) == [1, 2, 3, 4, 5, 6, 7]
    box.close()


def test_mbox_mailboxes_keep_modseq_across_restart(tmp_path):
    """The mbox backend keeps MODSEQ in its .NAME.fdimap sidecar: append, flag change and expunge
    raise it; expunged UIDs are remembered."""
    from fetchdeliver.storage.mbox import MboxStore

    path = str(tmp_path / "inbox")
    store = MboxStore(path)
    for i in range(1, 4):
        store.deliver(msg(i))
    box = store.open("INBOX")
    msgs = box.sync()
    h0 = box.highestmodseq()
    assert h0 >= 1 and all(m.modseq >= 1 for m in msgs)
    box.set_flags([(msgs[0], frozenset({"\\Seen"}))])
    h1 = box.highestmodseq()
    uid = box.append(msg(9))
    h2 = box.highestmodseq()
    box.expunge([msgs[1]])
    h3 = box.highestmodseq()
    assert h0 < h1 < h2 < h3, (h0, h1, h2, h3)
    box.close()
    box = MboxStore(path).open("INBOX")         # a restarted server
    again = {m.uid: m for m in box.sync()}
    assert box.highestmodseq() == h3
    assert again[msgs[0].uid].flags == frozenset({"\\Seen"}) and again[msgs[0].uid].modseq >= h1
    assert uid in again and msgs[1].uid not in again
    assert box.vanished_since(h2) == [msgs[1].uid] and box.vanished_since(h3) == []
    box.close()


def test_a_delivery_moved_to_cur_by_another_process_in_our_tick_is_not_lost(root):
    """A scan lists new/ alone while cur/ shows only our own change; a file that left new/ for
    cur/ (another reader took it) within the same timestamp tick as our change must not be taken
    for an expunge: then cur/ is listed too."""
    store = MaildirStore(root)
    box = store.open("INBOX")
    msgs = box.sync()
    receipt = store.deliver(msg(60, "new"))              # into new/
    assert sorted(m.uid for m in box.sync()) == [1, 2, 3, 4, 5, 6]
    box.set_flags([(msgs[0], frozenset({"\\Flagged"}))])   # our own change in cur/
    cur = os.path.join(root, "cur")
    st = os.stat(cur)
    name = os.path.basename(receipt.path)
    os.rename(receipt.path, os.path.join(cur, name + ":2,"))
    os.utime(cur, ns=(st.st_atime_ns, st.st_mtime_ns))   # in the same tick: cur/'s stamp did not move
    after = box.sync()
    assert sorted(m.uid for m in after) == [1, 2, 3, 4, 5, 6]
    assert [box.read(m) for m in after if m.uid == 6] == [msg(60, "new")]
    assert box.vanished_since(0) == []
    box.close()


# -- changes within one timestamp tick (issue #11) ---------------------------------------------
# Two changes of cur/ within one tick of the kernel's clock leave the same directory stamp. The
# tests make that happen on purpose: they put cur/'s mtime back after a change, and keep the
# folder "changed just now" for the whole test by giving a file a stamp in the future (so no
# listing becomes trustworthy by the mere passing of time, however loaded the machine is).


def _keep_fresh(path: str) -> None:
    """Give `path` an mtime well in the future: the folder counts as changed in the current tick."""
    import time

    later = time.time() + 3600
    os.utime(path, (later, later))


def _age(path: str) -> None:
    """Give `path` an mtime long past (its contents are not changed)."""
    import time

    old = time.time() - 3600
    os.utime(path, (old, old))


def _restore(path: str, st: os.stat_result) -> None:
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size   # the simulation: the same stamp as before


def _by_uid(msgs) -> dict:
    return {m.uid: m for m in msgs}


def test_another_session_s_change_in_the_tick_of_ours_is_seen_at_its_next_sync(root):
    """Two mailboxes on one folder in one process (two IMAP sessions): A changes a flag, B changes
    another and expunges a message within the same tick, so cur/'s stamp is the one A took after
    its own change. A's next sync must show B's changes at once (the index says they happened),
    not a tick later."""
    store = MaildirStore(root)
    _age(os.path.join(root, "new"))
    a, b = store.open("INBOX"), store.open("INBOX")
    msgs = _by_uid(a.sync())
    b.sync()
    _keep_fresh(os.path.join(root, "dovecot-uidlist"))
    msgs = _by_uid(a.sync())
    b.sync()
    a.set_flags([(msgs[1], frozenset({"\\Seen", "\\Flagged"}))])
    cur = os.path.join(root, "cur")
    st = os.stat(cur)
    theirs = _by_uid(b.sync())
    assert theirs[1].flags == {"\\Seen", "\\Flagged"}
    b.set_flags([(theirs[3], frozenset({"\\Seen", "\\Answered"}))])
    b.expunge([theirs[5]])
    _restore(cur, st)
    hms = b.highestmodseq()
    now = _by_uid(a.sync())
    assert now[3].flags == {"\\Seen", "\\Answered"}
    assert 5 not in now
    assert now[3].modseq <= hms and a.highestmodseq() == hms
    assert sorted(now) == [1, 2, 3, 4]
    a.close()
    b.close()


def test_another_process_s_change_in_the_tick_of_ours_is_seen_at_our_next_sync(root):
    """As above, with the other writer in another process (its own index connection): a flag
    change and an expunge in cur/ within the tick of our own change are seen at our next sync."""
    import subprocess
    import sys
    import textwrap

    store = MaildirStore(root)
    _age(os.path.join(root, "new"))
    a = store.open("INBOX")
    a.sync()
    _keep_fresh(os.path.join(root, "dovecot-uidlist"))
    msgs = _by_uid(a.sync())
    a.set_flags([(msgs[1], frozenset({"\\Seen", "\\Flagged"}))])
    cur = os.path.join(root, "cur")
    st = os.stat(cur)
    code = textwrap.dedent(f"""
        from fetchdeliver.storage.maildir import MaildirStore
        b = MaildirStore({root!r}).open("INBOX")
        msgs = {{m.uid: m for m in b.sync()}}
        b.set_flags([(msgs[3], frozenset({{"\\\\Seen", "\\\\Answered"}}))])
        b.expunge([msgs[5]])
        b.close()
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    _restore(cur, st)
    now = _by_uid(a.sync())
    assert now[3].flags == {"\\Seen", "\\Answered"}
    assert sorted(now) == [1, 2, 3, 4]
    a.close()


def test_an_outside_rename_and_rm_in_the_tick_of_our_listing_are_seen_at_the_next_sync(root):
    """mutt renames a file in cur/ (a flag change) and `rm` removes one, within the tick of our last
    listing (cur/ changed "now"), so cur/'s stamp does not move and no index records it. The next
    sync must not trust that stamp: it lists cur/ again and sees both."""
    _age(os.path.join(root, "new"))
    cur = os.path.join(root, "cur")
    _keep_fresh(cur)
    a = MaildirStore(root).open("INBOX")
    msgs = _by_uid(a.sync())
    assert msgs[1].flags == {"\\Seen"}
    st = os.stat(cur)
    name = msgs[1].handle.name
    os.rename(os.path.join(cur, name), os.path.join(cur, name.replace(":2,S", ":2,FS")))
    os.unlink(os.path.join(cur, msgs[5].handle.name))
    _restore(cur, st)
    now = _by_uid(a.sync())
    assert now[1].flags == {"\\Seen", "\\Flagged"}
    assert sorted(now) == [1, 2, 3, 4]
    assert a.vanished_since(0) == [5]
    a.close()


def test_what_the_tick_rule_keeps_cheap(root, monkeypatch):
    """The speed the index bought stays: a clean folder is answered without a listing, a delivery
    into new/ lists new/ alone, and after a restart a listing of known files parses no
    dovecot-uidlist."""
    from fetchdeliver.storage import maildir

    store = MaildirStore(root)
    box = store.open("INBOX")
    box.sync()
    _age(os.path.join(root, "new"))
    _age(os.path.join(root, "cur"))
    _age(os.path.join(root, "dovecot-uidlist"))
    box.sync()                              # a listing after the directories' tick: clean
    listed: list[str] = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p: listed.append(os.path.basename(p)) or real_listdir(p))
    assert sorted(m.uid for m in box.sync()) == [1, 2, 3, 4, 5]
    assert listed == []
    store.deliver(msg(70, "new"))
    assert sorted(m.uid for m in box.sync()) == [1, 2, 3, 4, 5, 6]
    assert listed == ["new"]
    box.close()
    close_idle()
    parsed: list[str] = []
    real_parse = maildir.Uidlist.parse.__func__
    monkeypatch.setattr(maildir.Uidlist, "parse",
                        classmethod(lambda cls, data, path: parsed.append(path) or real_parse(cls, data, path)))
    box = MaildirStore(root).open("INBOX")           # a restarted server
    assert sorted(m.uid for m in box.sync()) == [1, 2, 3, 4, 5, 6]
    assert parsed == []
    box.close()
