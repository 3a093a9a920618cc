"""SORT and THREAD (RFC 5256) against our server, and the same commands against Dovecot on one Maildir."""

from __future__ import annotations


import pytest

from fetchdeliver.delivery.maildir import MaildirStore
from fetchdeliver.imapserver.sort_thread import base_subject
from imap_helpers import RawClient, make_server
from test_imap_differential import Conn, run_on_both

pytestmark = pytest.mark.timeout(120)


def msg(mid, subj, date, refs="", frm="a@example.org", to="t@example.org", cc="", irt="", body="body\n"):
    h = f"From: {frm}\nTo: {to}\nSubject: {subj}\nDate: {date}\n"
    if mid:
        h += f"Message-ID: <{mid}>\n"
    if cc:
        h += f"Cc: {cc}\n"
    if refs:
        h += f"References: {refs}\n"
    if irt:
        h += f"In-Reply-To: {irt}\n"
    return (h + "\n" + body).encode()


# A mailbox with what threading has to get right: replies by References and by In-Reply-To only,
# a missing parent (a dummy with two children), a reference loop, a duplicate Message-ID, no
# Message-ID, subjects with Re:/Fwd:/[list]/(fwd) decorations, an encoded subject, equal dates.
MAILBOX = [
    msg("1@x", "hello", "Mon, 1 Dec 2025 10:00:00 +0000", frm="Zed <zed@example.org>"),
    msg("2@x", "Re: hello", "Mon, 1 Dec 2025 11:00:00 +0000", "<1@x>", frm="bob@example.org", body="b" * 300),
    msg("3@x", "other", "Mon, 1 Dec 2025 09:00:00 +0000", frm="Amy <amy@example.org>", cc="cc@example.org"),
    msg("4@x", "RE: Re: hello", "Mon, 1 Dec 2025 12:00:00 +0100", "<1@x> <2@x>"),
    msg("5@x", "[list] Fwd: other (fwd)", "Mon, 1 Dec 2025 13:00:00 +0000", "<missing@x>"),
    msg("6@x", "Re: lost", "Mon, 1 Dec 2025 14:00:00 +0000", "<missing@x>", to="aa@example.org"),
    msg("7@x", "loop", "Tue, 2 Dec 2025 08:00:00 +0000", "<8@x>"),
    msg("8@x", "loop", "Tue, 2 Dec 2025 08:00:00 +0000", "<7@x>"),
    msg("1@x", "duplicate id", "Wed, 3 Dec 2025 08:00:00 -0500"),
    msg("", "no id", "Wed, 3 Dec 2025 09:00:00 +0000", irt="<3@x>"),
    msg("11@x", "=?UTF-8?Q?=C3=84rger?=", "garbage date", frm="", body="x" * 50),
    msg("12@x", "[fwd: hello]", "Thu, 4 Dec 2025 10:00:00 +0000", irt="<4@x> <2@x>"),
]

COMMANDS = [
    b"SORT (SUBJECT) UTF-8 ALL", b"SORT (REVERSE SUBJECT) UTF-8 ALL", b"SORT (DATE) UTF-8 ALL",
    b"SORT (REVERSE DATE) UTF-8 ALL", b"SORT (ARRIVAL) UTF-8 ALL", b"SORT (FROM) UTF-8 ALL",
    b"SORT (TO) UTF-8 ALL", b"SORT (CC) UTF-8 ALL", b"SORT (SIZE) UTF-8 ALL", b"SORT (REVERSE SIZE DATE) UTF-8 ALL",
    b"SORT (SUBJECT DATE) UTF-8 SINCE 1-Dec-2000", b"UID SORT (SUBJECT) UTF-8 2:*",
    b"THREAD ORDEREDSUBJECT UTF-8 ALL", b"THREAD REFERENCES UTF-8 ALL", b"UID THREAD REFERENCES UTF-8 1:6",
    b"THREAD REFERENCES US-ASCII NOT SUBJECT loop", b"THREAD ORDEREDSUBJECT UTF-8 DELETED",
    # ESORT (RFC 5267)
    b"SORT RETURN (MIN MAX COUNT ALL) (SUBJECT) UTF-8 ALL", b"UID SORT RETURN (ALL) (REVERSE DATE) UTF-8 ALL",
    b"SORT RETURN () (ARRIVAL) UTF-8 ALL", b"SORT RETURN (COUNT MIN) (DATE) UTF-8 DELETED",
]


def _load(root: str) -> None:
    store = MaildirStore(root, fsync=False)
    for raw in MAILBOX:
        store.deliver(raw)


def test_base_subject_rfc5256():
    # RFC 5256 section 2.1's rules, one by one.
    assert base_subject("Re: hello") == "hello"
    assert base_subject("RE: re:  Fwd:hello (fwd)") == "hello"
    assert base_subject("[list] Re: [other] hello") == "hello"
    assert base_subject("[fwd: Re: hello]") == "hello"
    assert base_subject("[only a blob]") == "[only a blob]"
    assert base_subject("  many   spaces  ") == "many spaces"
    assert base_subject("Re:") == ""


def test_sort_thread_session(tmp_path):
    server, maildir, passwd = make_server(tmp_path, n_plain=0, extra=MAILBOX, idle_poll=600)
    c = RawClient(server.port())
    try:
        c.command("a0", b"LOGIN alice secret")
        caps = c.command("a1", b"CAPABILITY")[0].split()
        assert b"SORT" in caps and b"THREAD=REFERENCES" in caps and b"THREAD=ORDEREDSUBJECT" in caps
        c.command("a2", b"SELECT INBOX")
        assert c.command("a3", b"SORT (SUBJECT) UTF-8 1:6")[0] == b"* SORT 1 2 4 6 3 5\r\n"
        assert c.command("a4", b"THREAD ORDEREDSUBJECT UTF-8 1:6")[0] == b"* THREAD (3 5)(1 (2)(4))(6)\r\n"
        # RFC 5256 REFERENCES: 5 and 6 share a missing parent (a dummy); 3 joins them by subject.
        assert c.command("a5", b"THREAD REFERENCES UTF-8 1:6")[0] == b"* THREAD ((3)(5)(6))(1 2 4)\r\n"
        assert c.command("a6", b"SORT (SUBJECT) KOI8-R ALL")[0].startswith(b"a6 NO [BADCHARSET")
        assert c.command("a7", b"SORT (BOGUS) UTF-8 ALL")[0].startswith(b"a7 BAD")
        assert c.command("a8", b"THREAD X UTF-8 ALL")[0].startswith(b"a8 BAD")
        assert c.command("a9", b"SORT (SUBJECT) UTF-8 DELETED")[0] == b"* SORT\r\n"
        # RFC 5267 4.2 (ESORT): MIN/MAX are the first and last in sort order; ALL keeps the order.
        assert b"ESORT" in caps
        assert c.command("b1", b"SORT RETURN (MIN MAX COUNT ALL) (SUBJECT) UTF-8 1:6")[0] == \
            b'* ESEARCH (TAG "b1") MIN 1 MAX 5 ALL 1:2,4,6,3,5 COUNT 6\r\n'
        assert c.command("b2", b"UID SORT RETURN (COUNT) (SUBJECT) UTF-8 DELETED")[0] == \
            b'* ESEARCH (TAG "b2") UID COUNT 0\r\n'
    finally:
        c.close()
        server.stop()


def _session(port: int) -> list[tuple[bytes, list[bytes], bytes]]:
    c = Conn(port)
    assert c.run(b"LOGIN alice secret")[1].startswith(b"OK")
    c.run(b"SELECT INBOX")
    out = []
    for cmd in COMMANDS:
        untagged, tagged = c.run(cmd)
        # Dovecot ends an empty THREAD answer with a space; RFC 5256's grammar has none.
        out.append((cmd, [u.rstrip(b" ") for u in untagged], tagged.split(b" ")[0]))
    c.run(b"LOGOUT")
    return out


def test_sort_thread_like_dovecot(tmp_path):
    theirs, mine = run_on_both(tmp_path, _load, _session)
    diffs = [f"{cmd.decode()}\n  dovecot:      {t_unt!r} {t_tag!r}\n  fetchdeliver: {o_unt!r} {o_tag!r}"
             for (cmd, t_unt, t_tag), (_c, o_unt, o_tag) in zip(theirs, mine) if (t_unt, t_tag) != (o_unt, o_tag)]
    assert not diffs, f"{len(diffs)} of {len(COMMANDS)} differ:\n" + "\n".join(diffs)
