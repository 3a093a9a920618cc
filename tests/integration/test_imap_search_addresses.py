"""SEARCH FROM/TO/CC/BCC match the parsed addresses (comments, routes, groups, encoded names), as
Dovecot does (imaptest's "search-addresses" group), on our server and against Dovecot on one Maildir."""

from __future__ import annotations

import pytest

from fetchdeliver.delivery.maildir import MaildirStore
from fetchdeliver.imapserver.search import address_text
from imap_helpers import RawClient, make_server
from test_imap_differential import Conn, run_on_both

pytestmark = pytest.mark.timeout(120)

MAILBOX = [
    b"From: user-from@domain.org\nTo: user-to@domain.org\nCc: user-cc@domain.org\nBcc: user-bcc@domain.org\n\nb1\n",
    b"From: RealFrom <user-from@domain.org>\nTo: RealTo <user-to@domain.org>\n\nb2\n",
    b"From: <user-from (comment)@ (comment) domain.org>\nTo: <@route1,@route2:user-to@domain.org>\n\nb3\n",
    b"From: user-from@domain.org (RealFrom)\nTo: user-to@domain.org (RealTo)\n\nb4\n",
    b"From: user-from1@domain.org, user-from2@domain.org\nCc: user-cc@domain.org\n\nb5\n",
    b"From: RealFrom <user-from@domain.org>\nTo: groupname: groupuser1@domain.org, groupuser2@domain.org;,\n"
    b"  groupname2: groupuser3@domain.org;\n\nb6\n",
    b"From: =?UTF-8?Q?J=C3=BCrgen?= <juergen@example.de>\nTo: groupname:;\n\nb7\n",
]

# (search key, the sequence numbers it finds: imaptest's answers, and Dovecot's for the rest)
SEARCHES = [
    (b"FROM user-from@domain.org", [1, 2, 3, 4, 6]),
    (b"FROM realfrom", [2, 4, 6]),
    (b"FROM comment", []),                 # a comment inside the address is not part of it
    (b"FROM ser-fro", [1, 2, 3, 4, 5, 6]),
    (b"FROM user-from2", [5]),
    (b"TO user-to@domain.org", [1, 2, 3, 4]),
    (b"TO route1", [3]),                   # a source route is (Dovecot writes it out)
    (b"TO groupname", [6, 7]),
    (b"TO groupname2", [6]),
    (b"TO groupuser3", [6]),
    (b"CC user-cc", [1, 5]),
    (b"BCC user-bcc@domain.org", [1]),
    (b'HEADER TO ""', [1, 2, 3, 4, 6, 7]),
    (b"FROM \"J\xc3\xbcrgen\"", [7]),
]


def _fill(root: str) -> None:
    store = MaildirStore(root, fsync=False)
    for raw in MAILBOX:
        store.deliver(raw)


def test_address_text_is_the_parsed_addresses():
    assert address_text(b"<user-from (comment)@ (comment) domain.org>") == "user-from@domain.org"
    assert address_text(b"user-from@domain.org (RealFrom)") == "RealFrom <user-from@domain.org>"
    assert address_text(b"<@r1,@r2:u@h>") == "<@r1,@r2:u@h>"
    assert address_text(b"Name <@r1:u@h>") == "Name <@r1:u@h>"
    assert address_text(b"g: a@b, c@d;, e@f") == "g: a@b, c@d;, e@f"
    assert address_text(b"=?UTF-8?Q?J=C3=BCrgen?= <j@x.de>") == "J\u00fcrgen <j@x.de>"


def test_search_addresses(tmp_path):
    server, _maildir, _passwd = make_server(tmp_path, n_plain=0, extra=MAILBOX, idle_poll=600)
    c = RawClient(server.port())
    try:
        c.command("a0", b"LOGIN alice secret")
        c.command("a1", b"SELECT INBOX")
        for i, (key, want) in enumerate(SEARCHES):
            expected = ("* SEARCH" + "".join(f" {n}" for n in want) + "\r\n").encode()
            # twice: the second search may answer from the store's index of header fields
            for attempt in ("first", "again"):
                got = c.command(f"s{i}{attempt}", b"SEARCH CHARSET UTF-8 " + key)[0]
                assert got == expected, (key, attempt, got)
    finally:
        c.close()
        server.stop()


def _session(port: int) -> list:
    c = Conn(port)
    assert c.run(b"LOGIN alice secret")[1].startswith(b"OK")
    c.run(b"SELECT INBOX")
    out = [(key, c.run(b"SEARCH CHARSET UTF-8 " + key)) for key, _ in SEARCHES]
    c.run(b"LOGOUT")
    return [(key, untagged, tagged.split(b" ")[0]) for key, (untagged, tagged) in out]


def test_search_addresses_like_dovecot(tmp_path):
    theirs, mine = run_on_both(tmp_path, _fill, _session)
    diffs = [f"{key.decode()}\n  dovecot:      {t!r} {tt!r}\n  fetchdeliver: {o!r} {ot!r}"
             for (key, t, tt), (_k, o, ot) in zip(theirs, mine) if (t, tt) != (o, ot)]
    assert not diffs, f"{len(diffs)} of {len(SEARCHES)} differ:\n" + "\n".join(diffs)
