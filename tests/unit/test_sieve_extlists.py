"""RFC 6134 extlists: lists from files and the address book."""

from __future__ import annotations

import pytest

from fetchdeliver.message import Message
from fetchdeliver.sieve import SieveEnv, compile_text, run
from fetchdeliver.sieve.errors import SieveCompileError

MSG = Message(b"From: Boss <Boss@Example.org>\nTo: me@example.net\nSubject: hi\n\nbody\n",
              "boss@example.org", ["me@example.net"])


@pytest.fixture
def options(tmp_path):
    book = tmp_path / "addressbook.txt"
    book.write_text("# my contacts\nBoss <boss@example.org>\n\nfriend@example.com\n", encoding="utf-8")
    vip = tmp_path / "vip.txt"
    vip.write_text("ceo@example.org\n", encoding="utf-8")
    forward = tmp_path / "forward.txt"
    forward.write_text("a@example.com\nB <b@example.com>\n", encoding="utf-8")
    return {"extensions": "+extlists", "addressbook": str(book),
            "lists": {"tag:example.net,2024:vip": str(vip), "forward": str(forward)}}


def actions(script, options):
    compiled = compile_text(script, options=options)
    res = run(compiled, MSG, SieveEnv(MSG, options=options))
    assert not res.errors, res.errors
    return [(a.type, getattr(a, "mailbox", getattr(a, "address", ""))) for a in res.actions]


def test_list_match_type_against_the_address_book_and_files(options):
    script = ('require ["extlists", "fileinto"];\n'
              'if address :list "from" ":addrbook:default" { fileinto "known"; }\n'
              'if address :list "from" "tag:example.net,2024:vip" { fileinto "vip"; }\n'
              'if header :list "subject" "no-such-list" { fileinto "never"; }\n')
    assert actions(script, options) == [("fileinto", "known")]


def test_valid_ext_list_and_redirect_list(options):
    script = ('require "extlists";\n'
              'if allof (valid_ext_list ":addrbook:personal", not valid_ext_list "nope") {\n'
              '  redirect :list "forward";\n}\n')
    assert actions(script, options) == [("redirect", "a@example.com"), ("redirect", "b@example.com")]


def test_redirect_list_needs_the_extension():
    with pytest.raises(SieveCompileError):
        compile_text('redirect :list "forward";\n')
