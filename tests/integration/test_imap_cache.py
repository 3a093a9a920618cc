"""The server's message cache: ENVELOPE / BODYSTRUCTURE / header fields are kept per (mailbox, UID)."""

from __future__ import annotations

import os

import imapclient

from fetchdeliver.imapserver.cache import MessageCache
from imap_helpers import make_server


def _files(maildir):
    out = []
    for sub in ("cur", "new"):
        out += [os.path.join(maildir, sub, n) for n in os.listdir(os.path.join(maildir, sub))]
    return out


def test_second_session_answers_envelope_and_header_search_from_the_cache(tmp_path):
    server, maildir, _ = make_server(tmp_path, n_plain=3)
    try:
        c = imapclient.IMAPClient("127.0.0.1", port=server.port(), ssl=False, timeout=30)
        c.login("alice", "secret")
        c.select_folder("INBOX", readonly=True)
        first = c.fetch(c.search(), ["ENVELOPE", "BODYSTRUCTURE"])
        assert c.search(["SUBJECT", "number 2"]) == [2]
        c.logout()
        # Content under a UID never changes (RFC 3501); to prove the cache answers, change it anyway.
        for path in _files(maildir):
            with open(path, "r+b") as f:
                data = f.read().replace(b"number", b"xxxxxx")
                f.seek(0)
                f.write(data)
        c = imapclient.IMAPClient("127.0.0.1", port=server.port(), ssl=False, timeout=30)
        c.login("alice", "secret")
        c.select_folder("INBOX", readonly=True)
        again = c.fetch(c.search(), ["ENVELOPE", "BODYSTRUCTURE"])
        assert [again[u][b"ENVELOPE"].subject for u in sorted(again)] == \
               [first[u][b"ENVELOPE"].subject for u in sorted(first)] == \
               [b"m number 1", b"m number 2", b"m number 3"]
        assert c.search(["SUBJECT", "number 2"]) == [2]
        # Bodies are always read from the file: only content-derived summaries are kept.
        assert b"m xxxxxx 1" in c.fetch([1], ["BODY.PEEK[]"])[1][b"BODY[]"]
        c.logout()
    finally:
        server.stop()


def test_cache_is_bounded_and_keyed_by_uidvalidity():
    class Box:
        path = "/m"

    cache = MessageCache(max_entries=2)
    cache.entry(Box, 1, 1)["ENVELOPE"] = b"e1"
    cache.entry(Box, 1, 2)["ENVELOPE"] = b"e2"
    assert cache.entry(Box, 2, 1) == {}               # a new UIDVALIDITY knows nothing
    assert cache.entry(Box, 1, 1) == {}               # the oldest entry was dropped for it
    assert cache.entry(object(), 1, 1) is None        # no identity, no cache
