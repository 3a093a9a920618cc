"""ENVELOPE and BODYSTRUCTURE of odd and malformed mail, ours against the real Dovecot's, message by message.

The same Maildir (tests/corpus/odd, malformed MIME made here, address forms imaptest checks) is
served by Dovecot and by us; each message's ENVELOPE and BODYSTRUCTURE must be the same after
parsing (quoted string versus literal and letter case of atoms aside).
"""

from __future__ import annotations

import os
import shutil

import pytest

from dovecot import Dovecot, DovecotUnavailable
from fetchdeliver.delivery.maildir import MaildirStore
from test_imap_differential import NAMESPACE, Conn, _ours, parse

pytestmark = pytest.mark.timeout(180)

CORPUS = os.path.join(os.path.dirname(__file__), "..", "corpus", "odd")
SKIP_CORPUS = {"20-huge-line-256k.eml"}   # nothing MIME in it; only slows the comparison

MALFORMED = {
    "unterminated-multipart": (
        b"From: a@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b1\n\n"
        b"pre\n--b1\nContent-Type: text/plain\n\none\n--b1\nContent-Type: text/html\n\n<p>two\n"),
    "boundary-prefix-of-another": (
        b"From: a@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=ab\n\n"
        b"--ab\nContent-Type: multipart/alternative; boundary=abc\n\n--abc\nContent-Type: text/plain\n\n"
        b"x\n--abc\nContent-Type: text/html\n\ny\n--abc--\n--ab\nContent-Type: text/plain\n\nz\n--ab--\n"),
    "part-without-headers": (
        b"From: a@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"q\"\n\n"
        b"--q\n\nno headers here\n--q\nContent-Type: application/pdf\n\n%PDF\n--q--\n"),
    "invalid-content-type": (
        b"From: a@example.org\nMIME-Version: 1.0\nContent-Type: text\nContent-Transfer-Encoding: 8bit\n\n"
        b"body\n"),
    "content-type-one-word": (
        b"From: a@example.org\nMIME-Version: 1.0\nContent-Type: garbage\n\nbody\n"),
    "content-type-empty": (
        b"From: a@example.org\nMIME-Version: 1.0\nContent-Type: \n\nbody\n"),
    "content-type-params-then-junk": (
        b"From: a@example.org\nContent-Type: text/plain; charset=utf-8; format=flowed junk; x=y\n\nbody\n"),
    "content-type-garbage-params": (
        b"From: a@example.org\nMIME-Version: 1.0\nContent-Type: text/plain; charset; =x; name=\"a\n\nbody\n"),
    "multipart-without-boundary": (
        b"From: a@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed\n\n--x\n\nbody\n--x--\n"),
    "message-rfc822-empty": (
        b"From: a@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=z\n\n"
        b"--z\nContent-Type: message/rfc822\n\n--z--\n"),
    "addresses": (
        b"From: user@domain (Real Name)\nSender: \nReply-To: \nTo: group: g1@d1.org, g2@d2.org;, "
        b"group2: g3@d3.org;\nCc: group:;, group2: (foo) ;\nBcc: <@route:user@domain>\n\nbody\n"),
    "address-comments": (
        b"From: \"Q\" <q@d> (ignored?), x@y (one), z@w\nTo: a(x)@b(y).c (Name)\n"
        b"Cc: <a@b> (Angle Comment)\nSubject: comments\n\nbody\n"),
}


def _maildir(root: str) -> list[str]:
    store = MaildirStore(root, fsync=False)
    names = []
    for name in sorted(os.listdir(CORPUS)):
        if name.endswith(".eml") and name not in SKIP_CORPUS:
            with open(os.path.join(CORPUS, name), "rb") as f:
                store.deliver(f.read())
            names.append(name)
    for name, raw in MALFORMED.items():
        store.deliver(raw)
        names.append(name)
    return names


def _norm(x):
    if isinstance(x, list):
        return [_norm(y) for y in x]
    if isinstance(x, str):
        return x.upper()
    if isinstance(x, bytes):
        return x.upper() if x.isascii() and len(x) < 40 else x
    return x


def _fetch_all(port: int) -> list:
    c = Conn(port)
    assert c.run(b"LOGIN alice secret")[1].startswith(b"OK")
    assert c.run(b"EXAMINE INBOX")[1].startswith(b"OK")
    untagged, tagged = c.run(b"FETCH 1:* (ENVELOPE BODYSTRUCTURE)")
    assert tagged.startswith(b"OK"), tagged
    out = []
    for r in untagged:
        tokens = parse(r)
        if len(tokens) >= 4 and tokens[2] == "FETCH":
            items = tokens[3]
            out.append((int(tokens[1]), dict(zip(items[::2], items[1::2])), r))
    c.run(b"LOGOUT")
    return sorted(out, key=lambda t: t[0])


def test_envelope_and_bodystructure_match_dovecot(tmp_path):
    src = str(tmp_path / "src")
    names = _maildir(src)
    ours_dir = str(tmp_path / "ours")
    shutil.copytree(src, ours_dir)
    try:
        dc = Dovecot({"alice": "secret"}, extra_config=NAMESPACE)
    except DovecotUnavailable as e:
        pytest.skip(str(e))
    ours = None
    try:
        dc.load_maildir("alice", src)
        dc.start()
        ours = _ours(tmp_path, ours_dir)
        theirs = _fetch_all(dc.port("imap"))
        mine = _fetch_all(ours.port())
    finally:
        if ours is not None:
            ours.stop()
        dc.cleanup()
    assert len(theirs) == len(mine) == len(names)
    diffs = []
    for name, (_n, want, wraw), (_m, got, graw) in zip(names, theirs, mine):
        for item in ("ENVELOPE", "BODYSTRUCTURE"):
            if _norm(want[item]) != _norm(got[item]):
                diffs.append(f"== {name} {item}\n-- dovecot:      {wraw[:1500]!r}\n"
                             f"-- fetchdeliver: {graw[:1500]!r}")
    assert not diffs, f"{len(diffs)} differ:\n" + "\n\n".join(diffs)
