"""NOTIFY (RFC 5465) on our server over a socket: one connection idling hears of new mail (with the
fetch attributes asked for) in the selected mailbox, STATUS for other mailboxes when mail arrives,
goes or changes flags, MailboxName (create, rename with OLDNAME, delete) and SubscriptionChange, made
by another connection and by a deliverer; NOTIFY SET STATUS, NOTIFY NONE and BADEVENT."""

from __future__ import annotations


import re

import pytest

from fetchdeliver.storage.maildir import MaildirStore
from imap_helpers import RawClient, make_server, plain

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def two(tmp_path):
    server, maildir, _ = make_server(tmp_path, n_plain=2, idle_poll=0.3)
    store = MaildirStore(maildir)
    store.create("Work")
    store.create("Lists")
    store.create("Lists/python")
    a, b = RawClient(server.addresses[0][1]), RawClient(server.addresses[0][1])
    for c in (a, b):
        assert c.command("l", b"LOGIN alice secret")[-1].startswith(b"l OK")
    yield store, a, b
    a.close()
    b.close()
    server.stop()


def bl(lines: list[bytes]) -> list[bytes]:
    """UIDVALIDITY values blinded (they are the time a mailbox was made), HIGHESTMODSEQ left out."""
    return [re.sub(rb" HIGHESTMODSEQ \d+", b"", re.sub(rb"UIDVALIDITY \d+", b"UIDVALIDITY V", ln)) for ln in lines]


def idle_until(c: RawClient, want: list[bytes], timeout: float = 20.0) -> list[bytes]:
    """Read untagged lines while idling until every line of `want` came, then DONE; a timer sends DONE
    when they do not come in time (the test then fails on what did come)."""
    import threading

    got: list[bytes] = []
    done = threading.Event()

    def finish() -> None:
        if not done.is_set():
            done.set()
            c.send(b"DONE\r\n")

    timer = threading.Timer(timeout, finish)
    timer.start()
    try:
        while True:
            ln = c.line()
            if not ln:
                raise EOFError(got)
            got += bl([ln])
            if ln.startswith(b"i "):
                return got
            if all(w in got for w in want):
                finish()
    finally:
        timer.cancel()


def start_idle(c: RawClient) -> None:
    c.send(b"i IDLE\r\n")
    assert c.line() == b"+ idling\r\n"


def test_new_mail_everywhere_reaches_one_connection(two):
    store, a, b = two
    a.command("s", b"SELECT INBOX")
    got = bl(a.command("n", b"NOTIFY SET STATUS (SELECTED (MessageNew (UID BODY.PEEK[HEADER.FIELDS (Subject)]) "
                         b"MessageExpunge)) (PERSONAL (MessageNew MessageExpunge FlagChange))"))
    # SET STATUS: the STATUS of every other mailbox at once
    assert got[-1] == b"n OK NOTIFY completed.\r\n"
    assert sorted(got[:-1]) == [b'* STATUS "Lists" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY V UNSEEN 0)\r\n',
                                b'* STATUS "Lists/python" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY V UNSEEN 0)\r\n',
                                b'* STATUS "Work" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY V UNSEEN 0)\r\n']
    start_idle(a)
    store.deliver(plain(3))                       # the selected mailbox: EXISTS and the FETCH asked for
    store.deliver(plain(4), "Work")               # another: STATUS
    b.command("x", b"SELECT Lists/python")
    raw = plain(5).replace(b"\n", b"\r\n")
    b.send(b"y APPEND Lists/python {%d+}\r\n" % len(raw) + raw + b"\r\n")
    b.until("y")
    want = [b"* 3 EXISTS\r\n", b"* 3 FETCH (UID 3 BODY[HEADER.FIELDS (Subject)] {23}\r\n",
            b'* STATUS "Work" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY V UNSEEN 1)\r\n',
            b'* STATUS "Lists/python" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY V UNSEEN 1)\r\n']
    got = idle_until(a, want)
    for w in want:
        assert w in got, got
    assert b"Subject: m number 3\r\n" in got
    # FlagChange and MessageExpunge in a mailbox that is not selected
    start_idle(a)
    b.command("z", b"STORE 1 +FLAGS (\\Seen)")
    got = idle_until(a, [b'* STATUS "Lists/python" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY V UNSEEN 0)\r\n'])
    assert b'* STATUS "Lists/python" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY V UNSEEN 0)\r\n' in got
    start_idle(a)
    b.command("z1", b"STORE 1 +FLAGS (\\Deleted)")
    b.command("z2", b"EXPUNGE")
    got = idle_until(a, [b'* STATUS "Lists/python" (MESSAGES 0 UIDNEXT 2 UIDVALIDITY V UNSEEN 0)\r\n'])
    assert b'* STATUS "Lists/python" (MESSAGES 0 UIDNEXT 2 UIDVALIDITY V UNSEEN 0)\r\n' in got
    # NOTIFY NONE: back to plain IDLE; another mailbox's mail is not told
    assert a.command("o", b"NOTIFY NONE")[-1] == b"o OK NOTIFY completed.\r\n"
    store.deliver(plain(6), "Work")
    assert a.command("p", b"NOOP") == [b"p OK NOOP completed.\r\n"]


def test_subtree_and_mailboxes_filters(two):
    store, a, b = two
    got = a.command("n", b"NOTIFY SET (SUBTREE Lists (MessageNew MessageExpunge)) (MAILBOXES INBOX (MessageNew MessageExpunge))")
    assert got == [b"n OK NOTIFY completed.\r\n"]
    store.deliver(plain(7), "Work")        # not covered
    store.deliver(plain(8), "Lists/python")
    store.deliver(plain(9))
    raw = a.command("p", b"NOOP")
    assert len(raw) == 3 and all(b" HIGHESTMODSEQ " in ln for ln in raw[:-1])   # as Dovecot sends it
    got = bl(raw)
    assert sorted(got[:-1]) == [b'* STATUS "INBOX" (MESSAGES 3 UIDNEXT 4 UIDVALIDITY V UNSEEN 3)\r\n',
                                b'* STATUS "Lists/python" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY V UNSEEN 1)\r\n']


def test_mailbox_name_and_subscription_changes(two):
    store, a, b = two
    assert a.command("n", b"NOTIFY SET (PERSONAL (MailboxName SubscriptionChange))")[-1].startswith(b"n OK")
    start_idle(a)
    b.command("c", b"CREATE Projects")
    b.command("d", b"RENAME Work Job")
    b.command("e", b"SUBSCRIBE Lists")
    b.command("f", b"DELETE Lists/python")
    want = [b'* LIST () "/" "Projects"\r\n', b'* LIST () "/" "Job" ("OLDNAME" ("Work"))\r\n',
            b'* LIST (\\Subscribed) "/" "Lists"\r\n', b'* LIST (\\NonExistent) "/" "Lists/python"\r\n']
    got = idle_until(a, want)
    for w in want:
        assert w in got, got
    b.command("g", b"UNSUBSCRIBE Lists")
    assert a.command("p", b"NOOP")[0] == b'* LIST () "/" "Lists"\r\n'


def test_badevent(two):
    _, a, _ = two
    got = a.command("n", b"NOTIFY SET (PERSONAL (MessageNew MessageExpunge MailboxMetadataChange))")
    assert got == [b"n NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)] "
                   b"Not offered: MailboxMetadataChange.\r\n"]
    assert a.command("m", b"NOTIFY SET (PERSONAL (MessageNew))")[-1].startswith(b"m BAD")
