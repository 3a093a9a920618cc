"""LIST-STATUS (RFC 5819) and STATUS=SIZE (RFC 8438): the RFCs' examples, and the same against Dovecot."""

from __future__ import annotations

import re

import pytest

from fetchdeliver.delivery.maildir import MaildirStore
from imap_helpers import RawClient, make_server, plain
from test_imap_differential import Conn, run_on_both

pytestmark = pytest.mark.timeout(120)


def _fill(root: str) -> None:
    store = MaildirStore(root, fsync=False)
    for i in range(3):
        store.deliver(plain(i), flags=("\\Seen",) if i == 0 else ())
    store.create_mailbox("Work")
    store.create_mailbox("Work/Sub")
    store.deliver(plain(9, "work"), "Work")
    store.create_mailbox("Empty")


def test_rfc5819_and_rfc8438_examples(tmp_path):
    server, maildir, passwd = make_server(tmp_path, n_plain=0, idle_poll=600)
    _fill(maildir)
    c = RawClient(server.port())
    try:
        c.command("a0", b"LOGIN alice secret")
        caps = c.command("a1", b"CAPABILITY")[0].split()
        assert b"LIST-STATUS" in caps and b"STATUS=SIZE" in caps
        # RFC 5819 section 5: each selectable mailbox's LIST line is followed by its STATUS.
        got = c.command("A01", b'LIST "" % RETURN (STATUS (MESSAGES UNSEEN))')
        assert got[-1] == b"A01 OK LIST completed.\r\n"
        lines = got[:-1]
        for i, ln in enumerate(lines):
            if ln.startswith(b"* LIST"):
                name = ln.rsplit(b" ", 1)[1].strip()
                assert lines[i + 1] == {b'"INBOX"': b'* STATUS "INBOX" (MESSAGES 3 UNSEEN 2)\r\n',
                                        b'"Work"': b'* STATUS "Work" (MESSAGES 1 UNSEEN 1)\r\n',
                                        b'"Empty"': b'* STATUS "Empty" (MESSAGES 0 UNSEEN 0)\r\n'}[name], lines
        assert len([ln for ln in lines if ln.startswith(b"* STATUS")]) == 3
        # A \Noselect parent gets no STATUS.
        store = MaildirStore(maildir, fsync=False)
        store.create_mailbox("Only/Child")
        got = c.command("A02", b'LIST "" "Only*" RETURN (STATUS (MESSAGES))')
        assert [ln for ln in got if ln.startswith(b"* STATUS")] == [b'* STATUS "Only/Child" (MESSAGES 0)\r\n']
        # RFC 8438 section 2: STATUS SIZE, the total of RFC822.SIZEs.
        got = c.command("A03", b"STATUS INBOX (MESSAGES SIZE)")
        sizes = sum(len(plain(i)) + plain(i).count(b"\n") for i in range(3))
        assert got[0] == b'* STATUS "INBOX" (MESSAGES 3 SIZE %d)\r\n' % sizes
        assert c.command("A04", b'LIST "" "*" RETURN (STATUS (BOGUS))')[-1].startswith(b"A04 BAD")
    finally:
        c.close()
        server.stop()


def _sorted_status(line: bytes) -> bytes:
    """A STATUS line with its items in a fixed order (the order is the server's choice)."""
    m = re.match(rb"(\* STATUS \S+) \((.*)\)$", line)
    if not m:
        return line
    words = m.group(2).split()
    pairs = sorted(zip(words[::2], words[1::2]))
    return m.group(1) + b" (" + b" ".join(k + b" " + v for k, v in pairs) + b")"


def _session(port: int) -> list:
    c = Conn(port)
    c.run(b"LOGIN alice secret")
    out = []
    for cmd in (b'LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN UIDNEXT SIZE))',
                b'LIST "" "%" RETURN (CHILDREN STATUS (MESSAGES))',
                b"STATUS INBOX (MESSAGES SIZE UNSEEN)", b"STATUS Work (SIZE)"):
        untagged, tagged = c.run(cmd)
        # Which attributes a LIST line carries without RETURN (CHILDREN) is the server's choice, and
        # so is quoting a name that is an atom.
        norm = sorted((re.sub(rb"^\* LIST \([^)]*\)", b"* LIST ()", u) if b"CHILDREN" not in cmd else u)
                      .replace(b'"', b"") for u in untagged)
        norm = [_sorted_status(u) for u in norm]
        out.append((cmd, norm, tagged.split(b" ")[0]))
    return out


def test_list_status_like_dovecot(tmp_path):
    theirs, mine = run_on_both(tmp_path, _fill, _session)
    for m, t in zip(mine, theirs):
        assert m == t, f"\n  ours:    {m!r}\n  Dovecot: {t!r}"
