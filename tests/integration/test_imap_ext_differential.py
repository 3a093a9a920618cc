"""The issue 12 extensions against Dovecot: BINARY, MULTIAPPEND, CATENATE, LIST-EXTENDED and SORT=DISPLAY, the same
session on one Maildir copied twice (test_imap_differential.py's fixture), answers compared after the
normalisation that file describes. IMAP4rev2 and UTF8=ACCEPT are not here: Dovecot 2.3 has neither."""

from __future__ import annotations

import pytest

from imap_helpers import MULTIPART
from test_imap_differential import Conn, _build, norm, parse, run_on_both

pytestmark = pytest.mark.timeout(180)

NEW1 = b"From: a@example.org\r\nSubject: multi one\r\nMessage-ID: <m1@example.org>\r\n\r\nfirst\r\n"
NEW2 = b"From: b@example.org\r\nSubject: multi two\r\nMessage-ID: <m2@example.org>\r\n\r\nsecond\r\n"
BIN = (b"From: c@example.org\r\nSubject: binary\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x"
       b"\r\n\r\n--x\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
       b"AAECAwQFBgc=\r\n--x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
       b"caf=C3=A9 and a soft=\r\n break\r\n--x--\r\n")


def _lit(data: bytes, eight: bool = False) -> bytes:
    return (b"~" if eight else b"") + b"{%d+}\r\n" % len(data) + data


SESSION = [
    b"SELECT INBOX",
    b"FETCH 4 (BINARY.SIZE[1] BINARY.PEEK[1] BINARY.SIZE[3] BINARY.PEEK[3])",
    b"FETCH 4 (BINARY.PEEK[1]<0.10> BINARY.PEEK[2] BINARY.SIZE[2])",
    b"FETCH 5 (BINARY.SIZE[2] BINARY.PEEK[2] BINARY.PEEK[1.1])",
    b"FETCH 1:3 BINARY.SIZE[]",
    b"FETCH 1:3 (BINARY.SIZE[1] BINARY.PEEK[1])",
    # SORT=DISPLAY (RFC 5957)
    b"SORT (DISPLAYFROM) UTF-8 ALL", b"SORT (REVERSE DISPLAYTO ARRIVAL) UTF-8 ALL",
    b"UID SORT (DISPLAYTO DISPLAYFROM) UTF-8 ALL",
    # MULTIAPPEND (RFC 3502)
    b"APPEND INBOX " + _lit(NEW1) + b" (\\Seen $Work) " + _lit(NEW2),
    b"FETCH 11:* (FLAGS BODY.PEEK[])",
    # CATENATE (RFC 4469): URLs of this server's messages (their UIDs are the same on both: 1..10)
    b'APPEND INBOX CATENATE (URL "/INBOX/;UID=4/;SECTION=HEADER" TEXT ' + _lit(b"new body\r\n") + b")",
    b'APPEND INBOX (\\Flagged) CATENATE (TEXT ' + _lit(b"Subject: parts\r\n\r\n") +
    b' URL "/INBOX/;UID=4/;SECTION=1" URL "/INBOX/;UID=5/;SECTION=TEXT")',
    b'APPEND INBOX CATENATE (URL "/INBOX/;UID=999")',
    b'APPEND Nonexistent CATENATE (URL "/INBOX/;UID=1")',
    b"NOOP",
    b"FETCH 13:* (FLAGS BODY.PEEK[])",
    # BINARY's literal8 in APPEND
    b"APPEND INBOX " + _lit(BIN, True),
    b"NOOP",
    b"FETCH 15 (BINARY.SIZE[1] BINARY.PEEK[1] BINARY.SIZE[2] BINARY.PEEK[2] BINARY.PEEK[2]<3.4>)",
    # LIST-EXTENDED (RFC 5258)
    b"CREATE Fruit/Apple", b"CREATE Fruit/Banana", b"CREATE Tofu", b"SUBSCRIBE Fruit/Banana",
    b"SUBSCRIBE Tofu", b"CREATE Gone", b"SUBSCRIBE Gone", b"DELETE Gone",
    b'LIST (SUBSCRIBED) "" "*"',
    b'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"',
    b'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)',
    b'LIST (SUBSCRIBED RECURSIVEMATCH) "" "*a*"',
    b'LIST "" ("INBOX" "Fruit/%" "Tofu")',
    b'LIST "" ("Fruit" "Work/*") RETURN (SUBSCRIBED CHILDREN)',
    b'LIST (REMOTE) "" "%" RETURN (CHILDREN)',
    b'LIST (RECURSIVEMATCH) "" "%"',
    b'LIST (BOGUS) "" "%"',
    b'LIST "" "%" RETURN (BOGUS)',
]


def _norm(cmd: bytes, untagged: list[bytes], tagged: bytes):
    """norm(), with literal8 read as a literal, CHILDINFO kept, and the tagged answer's response code."""
    untagged = [u.replace(b"~{", b"{") for u in untagged]
    status, code, got = norm(cmd, untagged, tagged)
    # the extended items' tags and values are astrings: quoted or not is the server's choice
    childinfo = sorted(repr(parse(u[2:])[4:]).replace("b'", "'").upper() for u in untagged
                       if u.upper().startswith(b"* LIST") and len(parse(u[2:])) > 4)
    t = parse(tagged)
    rcode = t[1].upper().split(" ")[0] if len(t) > 1 and isinstance(t[1], str) and t[1].startswith("[") else None
    if rcode is not None and rcode.startswith(("[APPENDUID", "[READ-")):
        rcode = rcode.split(" ")[0]
    if rcode is not None and rcode.startswith("[MAILBOXID"):
        rcode = None   # RFC 8474: Dovecot 2.3 has no OBJECTID (as norm() leaves it out)
    return status, code or rcode, got, childinfo


def _session(port: int) -> list:
    c = Conn(port)
    untagged, tagged = c.run(b"LOGIN alice secret")
    assert tagged.startswith(b"OK"), tagged
    out = []
    for cmd in SESSION:
        untagged, tagged = c.run(cmd)
        out.append((cmd, _norm(cmd, untagged, tagged), untagged, tagged))
    c.run(b"LOGOUT")
    return out


def test_extensions_like_dovecot(tmp_path):
    assert MULTIPART   # message 4 of the Maildir: quoted-printable, message/rfc822 and base64 parts
    theirs, mine = run_on_both(tmp_path, _build, _session)
    diffs = []
    for (cmd, want, d_untagged, d_tagged), (_c, got, o_untagged, o_tagged) in zip(theirs, mine):
        if want != got:
            diffs.append(f"== {cmd[:120]!r}\n-- dovecot: {d_tagged!r}\n" + "\n".join(repr(x) for x in d_untagged)
                         + f"\n-- fetchdeliver: {o_tagged!r}\n" + "\n".join(repr(x) for x in o_untagged))
    assert not diffs, f"{len(diffs)} of {len(SESSION)} commands differ:\n" + "\n\n".join(diffs)
