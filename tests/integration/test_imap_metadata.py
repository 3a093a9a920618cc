"""METADATA (RFC 5464) on our server over a socket: the RFC's examples, limits (MAXSIZE, DEPTH,
LONGENTRIES, the value size), entries that survive a restart and follow RENAME/DELETE, and
`/shared/imapsieve/script` naming the user's imapsieve script for a mailbox (RFC 6785)."""

from __future__ import annotations

import json
import os

import pytest

from fetchdeliver.imapserver.imapsieve import ImapSieveConfig, Rule
from fetchdeliver.imapserver.metadata import FILE_NAME, MAX_VALUE_SIZE
from fetchdeliver.imapserver.server import ThreadedServer
from imap_helpers import RawClient, make_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def served(tmp_path):
    server, maildir, _ = make_server(tmp_path)
    c = RawClient(server.addresses[0][1])
    assert c.command("a", b"LOGIN alice secret")[-1].startswith(b"a OK")
    yield server, maildir, c
    c.close()
    server.stop()


def test_capability_after_login_only(served):
    server, _, c = served
    caps = c.command("b", b"CAPABILITY")[0].split()
    assert b"METADATA" in caps and b"METADATA-SERVER" in caps
    other = RawClient(server.addresses[0][1])
    try:
        assert b"METADATA" not in other.greeting
    finally:
        other.close()


def test_rfc_5464_examples(served):
    _, maildir, c = served
    # 4.3: SETMETADATA on the server and on a mailbox (a literal spanning lines)
    assert c.command("a", b'SETMETADATA "" (/shared/comment "My new comment")')[-1] == b"a OK Setmetadata completed.\r\n"
    c.send(b"b SETMETADATA INBOX (/private/comment {33}\r\n")
    assert c.line().startswith(b"+")
    c.send(b"My new comment across\r\ntwo lines.)\r\n")
    assert c.until("b")[-1].startswith(b"b OK")
    # 4.2 (with errata 3868): several entries in one METADATA response; an unset one is NIL
    got = c.command("c", b'GETMETADATA "INBOX" (/private/comment /shared/comment)')
    assert got == [b'* METADATA "INBOX" (/private/comment {33}\r\n', b"My new comment across\r\n",
                   b"two lines. /shared/comment NIL)\r\n", b"c OK Getmetadata completed.\r\n"]
    assert c.command("d", b'GETMETADATA "" /shared/comment')[0] == b'* METADATA "" (/shared/comment "My new comment")\r\n'
    # 4.2.1 MAXSIZE: the longer value is left out, LONGENTRIES says how long it is
    c.command("e", b'SETMETADATA INBOX (/shared/comment "short")')
    got = c.command("f", b'GETMETADATA (MAXSIZE 10) "INBOX" (/shared/comment /private/comment)')
    assert got == [b'* METADATA "INBOX" (/shared/comment "short")\r\n',
                   b"f OK [METADATA LONGENTRIES 33] Getmetadata completed.\r\n"]
    # 4.2.2 DEPTH: the entries below, only those that exist
    c.command("g", b'SETMETADATA INBOX (/private/filters/values/small "S" /private/filters/values/big "B" '
                   b'/private/filters/values/big/deeper "D")')
    got = c.command("h", b'GETMETADATA (DEPTH 1) "INBOX" (/private/filters/values)')
    assert got[0] == b'* METADATA "INBOX" (/private/filters/values/big "B" /private/filters/values/small "S")\r\n'
    got = c.command("i", b'GETMETADATA (DEPTH infinity) "INBOX" /private/filters')
    assert got[0].count(b"/private/filters/values/") == 3
    # removing with NIL
    c.command("j", b"SETMETADATA INBOX (/private/comment NIL)")
    assert c.command("k", b"GETMETADATA INBOX /private/comment")[0] == b'* METADATA "INBOX" (/private/comment NIL)\r\n'
    # errors
    assert c.command("l", b'GETMETADATA Nope /private/comment')[-1].startswith(b"l NO [NONEXISTENT]")
    assert c.command("m", b'SETMETADATA INBOX (/vendor/x "1")')[-1].startswith(b"m BAD")
    big = b"x" * (MAX_VALUE_SIZE + 1)
    c.send(b"n SETMETADATA INBOX (/private/big {%d+}\r\n" % len(big) + big + b")\r\n")
    assert c.until("n")[-1] == f"n NO [METADATA MAXSIZE {MAX_VALUE_SIZE}] A value is longer than {MAX_VALUE_SIZE} bytes.\r\n".encode()
    # stored beside the Maildir
    with open(os.path.join(maildir, FILE_NAME)) as f:
        assert json.load(f)[""] == {"/shared/comment": "My new comment"}


def test_entries_survive_a_restart_and_follow_rename_and_delete(tmp_path):
    server, maildir, _ = make_server(tmp_path)
    c = RawClient(server.addresses[0][1])
    c.command("a", b"LOGIN alice secret")
    c.command("b", b"CREATE Work")
    c.command("c", b"CREATE Work/Old")
    c.command("d", b'SETMETADATA Work (/private/color "red")')
    c.command("e", b'SETMETADATA Work/Old (/private/color "grey")')
    c.close()
    server.stop()
    server = ThreadedServer(server.server.config).start()
    c = RawClient(server.addresses[0][1])
    try:
        c.command("a", b"LOGIN alice secret")
        assert c.command("b", b"GETMETADATA Work /private/color")[0] == b'* METADATA "Work" (/private/color "red")\r\n'
        assert c.command("c", b"RENAME Work Job")[-1].startswith(b"c OK")
        assert c.command("d", b"GETMETADATA Job/Old /private/color")[0] == b'* METADATA "Job/Old" (/private/color "grey")\r\n'
        c.command("e", b"CREATE Work")
        assert c.command("f", b"GETMETADATA Work /private/color")[0] == b'* METADATA "Work" (/private/color NIL)\r\n'
        c.command("g", b"DELETE Job/Old")
        c.command("h", b"CREATE Job/Old")
        assert c.command("i", b"GETMETADATA Job/Old /private/color")[0] == b'* METADATA "Job/Old" (/private/color NIL)\r\n'
    finally:
        c.close()
        server.stop()


def test_imapsieve_user_script_named_by_metadata(tmp_path, monkeypatch):
    """RFC 6785: /shared/imapsieve/script on a mailbox names the user's script for its events, run
    between the administrator's before and after scripts; IMAPSIEVE=<url> is advertised."""
    scripts = tmp_path / "sieve"
    scripts.mkdir()
    (scripts / "tagger.sieve").write_text('require ["imapsieve", "imap4flags", "mboxmetadata"];\n'
                                          'if metadata :is "Archive" "/private/tag" "yes" { addflag "$Tagged"; }\n')
    (tmp_path / "after.sieve").write_text('require ["imapsieve", "imap4flags"];\n'
                                          'if hasflag "$Tagged" { addflag "$After"; }\n')
    server, _, _ = make_server(tmp_path)
    server.server.config.imapsieve = ImapSieveConfig(
        [Rule("Archive", ("COPY",), after=str(tmp_path / "after.sieve"))], {"extensions": ["+mboxmetadata"]}, url="sieve://127.0.0.1",
        user_script_dir=str(scripts))
    c = RawClient(server.addresses[0][1])
    try:
        c.command("a", b"LOGIN alice secret")
        assert b"IMAPSIEVE=sieve://127.0.0.1" in c.command("b", b"CAPABILITY")[0].split()
        c.command("c", b"CREATE Archive")
        c.command("d", b'SETMETADATA Archive (/shared/imapsieve/script "tagger" /private/tag "yes")')
        c.command("e", b"SELECT INBOX")
        assert c.command("f", b"COPY 1 Archive")[-1].startswith(b"f OK")
        c.command("g", b"SELECT Archive")
        assert b"FLAGS (\\Recent $After $Tagged)" in c.command("h", b"FETCH 1 FLAGS")[0]
        # without the entry only the after script runs (and does nothing here)
        c.command("i", b"SETMETADATA Archive (/shared/imapsieve/script NIL)")
        c.command("j", b"SELECT INBOX")
        c.command("k", b"COPY 2 Archive")
        c.command("l", b"SELECT Archive")
        assert b"* 2 FETCH (FLAGS (\\Recent))" in c.command("m", b"FETCH 2 FLAGS")[0]
    finally:
        c.close()
        server.stop()


DIFF_SESSION = [
    b'SETMETADATA INBOX (/private/comment {14+}\r\nMy own comment /shared/comment "x")',
    b"GETMETADATA INBOX (/shared/comment /private/comment /private/none)",
    b"GETMETADATA (MAXSIZE 5) INBOX (/shared/comment /private/comment)",
    b'SETMETADATA INBOX (/private/filters/values/small "S" /private/filters/values/big "B" '
    b'/private/filters/values/big/deeper "D")',
    b"GETMETADATA (DEPTH 1) INBOX (/private/filters/values)",
    b"GETMETADATA (DEPTH infinity) INBOX /private/filters",
    b"GETMETADATA INBOX /PRIVATE/Filters/Values/Small",
    b"SETMETADATA INBOX (/private/comment NIL)",
    b"GETMETADATA INBOX /private/comment",
    b"GETMETADATA Nope /private/comment",
    b'SETMETADATA INBOX (/foo/bar "x")',
    b'SETMETADATA "" (/private/vendor/example/x "server-wide, private")',
    b'GETMETADATA "" /private/vendor/example/x',
    b"CREATE Work", b'SETMETADATA Work (/private/color "red")', b"RENAME Work Job",
    b"GETMETADATA Job /private/color", b"DELETE Job", b"CREATE Job", b"GETMETADATA Job /private/color",
    b'SETMETADATA INBOX (/shared/vendor/x/y "1")', b"GETMETADATA INBOX /shared/vendor",
    b"GETMETADATA (DEPTH 1) INBOX /shared/vendor/x",
]


def _normalise(lines: list[bytes], tag: str) -> tuple:
    """(METADATA responses as (mailbox, ((entry, value), ...)), the tagged status word): texts,
    quoting versus literals and response codes Dovecot leaves out (NONEXISTENT, MAILBOXID) aside."""
    from fetchdeliver.imapserver.protocol import Parser

    data = b"".join(lines)
    body, _, last = data.rpartition(tag.encode() + b" ")
    status = last.split(b" ", 1)[0]
    out = []
    for resp in body.split(b"* METADATA ")[1:]:
        p = Parser(resp)
        mailbox = p.mailbox()
        p.sp()
        p.expect(b"(")
        pairs = []
        while not p.maybe(b")"):
            entry = p.astring()
            p.sp()
            pairs.append((entry, p.nstring()))
            p.maybe(b" ")
        out.append((mailbox, tuple(sorted(pairs, key=lambda kv: kv[0]))))   # the order is not meaningful
    return tuple(out), status


def test_the_same_answers_as_dovecot(tmp_path):
    """One session against Dovecot 2.3's imap_metadata (mail_attribute_dict in a file) and against
    ours: the same entries, values, NIL, DEPTH and MAXSIZE answers, RENAME/DELETE effects."""
    from dovecot import Dovecot, DovecotUnavailable

    def session(port: int) -> list[tuple]:
        c = RawClient(port)
        try:
            c.command("a", b"LOGIN alice secret")
            return [_normalise(c.command(f"t{i}", cmd), f"t{i}") for i, cmd in enumerate(DIFF_SESSION)]
        finally:
            c.close()

    server, _, _ = make_server(tmp_path, n_plain=1)
    try:
        ours = session(server.addresses[0][1])
    finally:
        server.stop()
    try:
        dc = Dovecot(users={"alice": "secret"}, extra_config="protocol imap {\n  imap_metadata = yes\n}\n"
                     "mail_attribute_dict = file:%h/dovecot-attributes\n")
        dc.start()
    except DovecotUnavailable as e:
        pytest.skip(str(e))
    try:
        dc.append("alice", b"Subject: x\r\n\r\ny\r\n")
        theirs = session(dc.port("imap"))
    finally:
        dc.stop()
        dc.cleanup()
    for cmd, o, t in zip(DIFF_SESSION, ours, theirs):
        assert o == t, (cmd, o, t)
    assert ours[1][0] == (("INBOX", ((b"/private/comment", b"My own comment"), (b"/private/none", None),
                                     (b"/shared/comment", b"x"))),)
