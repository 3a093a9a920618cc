"""LSUB and LIST (SUBSCRIBED) (RFC 3501 6.3.9, RFC 5258 3.1; imaptest's "subscribe" group): a parent that `%`
matches over a subscribed inferior is listed \\Noselect unless it is subscribed itself, and a subscribed
name whose mailbox does not exist is still listed; on our server and against Dovecot."""

from __future__ import annotations

import pytest

from fetchdeliver.delivery.maildir import MaildirStore
from imap_helpers import RawClient, make_server
from test_imap_differential import Conn, norm, run_on_both

pytestmark = pytest.mark.timeout(120)

# (A deleted mailbox's subscription stays, in Dovecot and in our Maildir store (RFC 3501 6.3.6);
# test_imap_ext_differential.py compares that case.)
SETUP = [b"CREATE box/test", b"CREATE box/test2/test", b"CREATE box/test3/test3", b"CREATE box/test2",
         b"SUBSCRIBE box/test", b"SUBSCRIBE box/test2/test", b"SUBSCRIBE box/test3/test3",
         b"CREATE gone", b"SUBSCRIBE gone"]

# (LIST-EXTENDED's other answers, \\NonExistent for a missing hierarchy level, are not compared here:
# we do not offer LIST-EXTENDED, and Dovecot answers them only to its extended forms.)
QUERIES = [b'LSUB "" "box/%"', b'LSUB "" "*test"', b'LSUB "" "%"', b'LSUB "" "*"', b'LSUB "box/" "%"',
           b'LIST (SUBSCRIBED) "" "*"', b"UNSUBSCRIBE box/test",
           b'LSUB "" "box/%"', b"UNSUBSCRIBE box/test2/test", b'LSUB "" "box/*"', b'LSUB "" "box/%"',
           # DELETE keeps the subscription (RFC 3501 6.3.6), as Dovecot does
           b"DELETE gone", b'LSUB "" "gone"', b'LIST (SUBSCRIBED) "" "gone"', b"UNSUBSCRIBE gone",
           b'LSUB "" "gone"']


def test_lsub_noselect_parents_and_missing_mailboxes(tmp_path):
    server, _maildir, _passwd = make_server(tmp_path, n_plain=0, idle_poll=600)
    c = RawClient(server.port())
    try:
        c.command("a0", b"LOGIN alice secret")
        # Dovecot refuses to subscribe a name without a mailbox; RFC 3501 6.3.6 lets a server accept it
        for i, cmd in enumerate(SETUP + [b"SUBSCRIBE never/there"]):
            assert c.command(f"s{i}", cmd)[-1].startswith(f"s{i} OK".encode()), cmd

        def lsub(pattern: bytes) -> list[bytes]:
            out = c.command("q", b'LSUB "" ' + pattern)
            assert out[-1].startswith(b"q OK")
            return sorted(out[:-1])

        assert lsub(b'"box/%"') == [b'* LSUB () "/" "box/test"\r\n', b'* LSUB (\\Noselect) "/" "box/test2"\r\n',
                                    b'* LSUB (\\Noselect) "/" "box/test3"\r\n']
        assert lsub(b'"*test"') == [b'* LSUB () "/" "box/test"\r\n', b'* LSUB () "/" "box/test2/test"\r\n']
        assert lsub(b'"%"') == [b'* LSUB () "/" "gone"\r\n', b'* LSUB (\\Noselect) "/" "box"\r\n',
                                b'* LSUB (\\Noselect) "/" "never"\r\n']
        assert b'* LSUB () "/" "never/there"\r\n' in lsub(b'"*"')
        c.command("u", b"SUBSCRIBE box/test2")
        assert b'* LSUB () "/" "box/test2"\r\n' in lsub(b'"box/%"')
        listed = c.command("l", b'LIST (SUBSCRIBED) "" "*"')
        assert b'* LIST (\\Subscribed \\NonExistent) "/" "never/there"\r\n' in listed
        assert b'* LIST (\\Subscribed) "/" "box/test"\r\n' in listed
        # DELETE keeps the subscription (RFC 3501 6.3.6; Dovecot too): listed until UNSUBSCRIBE
        assert c.command("d", b"DELETE box/test")[-1].startswith(b"d OK")
        assert b'* LSUB () "/" "box/test"\r\n' in lsub(b'"box/%"')
        assert b'* LIST (\\Subscribed \\NonExistent) "/" "box/test"\r\n' in c.command("l2", b'LIST (SUBSCRIBED) "" "box/test"')
        c.command("u2", b"UNSUBSCRIBE box/test")
        assert b'* LSUB () "/" "box/test"\r\n' not in lsub(b'"box/%"')
    finally:
        c.close()
        server.stop()


def _fill(root: str) -> None:
    MaildirStore(root, fsync=False).deliver(b"Subject: x\n\nbody\n")


def _session(port: int) -> list:
    c = Conn(port)
    assert c.run(b"LOGIN alice secret")[1].startswith(b"OK")
    for cmd in SETUP:
        c.run(cmd)
    out = []
    for cmd in QUERIES:
        untagged, tagged = c.run(cmd)
        out.append((cmd, norm(cmd, untagged, tagged)))     # (status, code, sorted normalized lines)
    c.run(b"LOGOUT")
    return out


def test_subscriptions_like_dovecot(tmp_path):
    theirs, mine = run_on_both(tmp_path, _fill, _session)
    diffs = [f"{cmd.decode()}\n  dovecot:      {t!r}\n  fetchdeliver: {o!r}"
             for (cmd, t), (_c, o) in zip(theirs, mine) if t != o]
    assert not diffs, f"{len(diffs)} of {len(QUERIES)} differ:\n" + "\n".join(diffs)
