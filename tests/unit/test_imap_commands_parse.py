"""IMAP command arguments are parsed outside the handlers: each parser, on its own, into its typed object."""

from __future__ import annotations

import pytest

from fetchdeliver.imapserver.commands import REGISTRY
from fetchdeliver.imapserver.commands.append import AppendMessage
from fetchdeliver.imapserver.commands.authenticated import CreateArgs, ListArgs, SelectArgs, StatusArgs
from fetchdeliver.imapserver.commands.registry import NO_ARGS
from fetchdeliver.imapserver.commands.selected import SAVED, CopyArgs, FetchArgs, StoreArgs
from fetchdeliver.imapserver.fetch import Section
from fetchdeliver.imapserver.protocol import ParseError, Parser
from fetchdeliver.imapserver.search import BadCharset


def parse(name: str, args: bytes, uid: bool = False):
    """What the registry's parser for `name` makes of the text after the command name."""
    return REGISTRY[name].parse(Parser(args), uid)


def test_no_argument_commands():
    for name in ("CAPABILITY", "NOOP", "LOGOUT", "NAMESPACE", "IDLE", "CHECK", "CLOSE", "UNSELECT", "STARTTLS"):
        assert parse(name, b"") is NO_ARGS
        with pytest.raises(ParseError):
            parse(name, b" junk")


def test_login_and_authenticate():
    a = parse("LOGIN", b' alice "pass word"')
    assert (a.user, a.password) == (b"alice", b"pass word")
    a = parse("LOGIN", b" {5}\r\nal ce {2}\r\npw")
    assert (a.user, a.password) == (b"al ce", b"pw")
    with pytest.raises(ParseError):
        parse("LOGIN", b" alice")
    a = parse("AUTHENTICATE", b" plain AGFsaWNlAHNlY3JldA==")
    assert (a.mechanism, a.initial) == ("PLAIN", b"AGFsaWNlAHNlY3JldA==")
    assert parse("AUTHENTICATE", b" XOAUTH2").initial is None
    assert parse("AUTHENTICATE", b" PLAIN =").initial == b"="


def test_id_enable_compress():
    assert parse("ID", b" NIL").params is None
    assert parse("ID", b' ("name" "mutt" "version" NIL)').params == ((b"name", b"mutt"), (b"version", None))
    with pytest.raises(ParseError):
        parse("ID", b' ("name")')
    assert parse("ENABLE", b" condstore QRESYNC X-NONE").extensions == ("CONDSTORE", "QRESYNC", "X-NONE")
    with pytest.raises(ParseError):
        parse("ENABLE", b"")
    assert parse("COMPRESS", b" deflate").mechanism == "DEFLATE"


def test_select_and_examine():
    a = parse("SELECT", b" inbox")
    assert isinstance(a, SelectArgs) and a.mailbox == "INBOX" and not a.params.condstore
    assert parse("EXAMINE", b' "Sent" (CONDSTORE)').params.condstore
    q = parse("SELECT", b" INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))").params
    assert q.qresync and q.uidvalidity == 67890007 and q.modseq == 20050715194045000
    assert q.known_uids == [(41, 41), (43, 211), (214, 541)]
    with pytest.raises(ParseError):
        parse("SELECT", b" INBOX (NOPE)")
    assert parse("SELECT", b" &AMQ-rger").mailbox == "Ärger"


def test_create_list_status():
    assert parse("CREATE", b" Trash (USE (\\Trash))") == CreateArgs("Trash", ("\\Trash",))
    assert parse("CREATE", b" a/b/") == CreateArgs("a/b/", ())
    assert parse("RENAME", b" a b").new == "b"
    a = parse("LIST", b' (SUBSCRIBED) "" ("INBOX" "a/%") RETURN (SUBSCRIBED STATUS (MESSAGES UIDNEXT))')
    assert (a.reference, a.patterns, a.select_subscribed, a.return_subscribed, a.status_items) == \
        ("", (b"INBOX", b"a/%"), True, True, ("MESSAGES", "UIDNEXT"))
    assert parse("LSUB", b' "" *') == ListArgs(True, "", (b"*",))
    with pytest.raises(ParseError):
        parse("LSUB", b' "" (*)')      # no LIST-EXTENDED pattern list in LSUB
    assert parse("STATUS", b" INBOX (messages unseen SIZE)") == StatusArgs("INBOX", ("MESSAGES", "UNSEEN", "SIZE"))
    for bad in (b" INBOX ()", b" INBOX (FOO)", b" INBOX"):
        with pytest.raises(ParseError):
            parse("STATUS", bad)


def test_append():
    a = parse("APPEND", b' Drafts (\\seen $Work) "24-Nov-2025 10:00:00 +0100" {5}\r\nhello')
    assert (a.mailbox, a.messages) == ("Drafts", (AppendMessage(frozenset({"\\Seen", "$Work"}), 1763974800.0, b"hello"),))
    a = parse("APPEND", b" INBOX {0+}\r\n")
    assert (a.mailbox, a.flags, a.date, a.message) == ("INBOX", frozenset(), None, b"")
    with pytest.raises(ParseError):
        parse("APPEND", b" INBOX (\\Recent) {1}\r\nx")
    with pytest.raises(ParseError):
        parse("APPEND", b" INBOX hello")


def test_fetch_store_copy():
    a = parse("FETCH", b" 1:*,3 (UID BODY.PEEK[HEADER]) (CHANGEDSINCE 12 VANISHED)", uid=True)
    assert isinstance(a, FetchArgs) and a.uid and a.set == [(1, None), (3, 3)]
    assert a.items[0] == "UID" and isinstance(a.items[1], Section) and a.items[1].peek
    assert (a.changedsince, a.vanished) == (12, True)
    assert parse("FETCH", b" $ FAST").set == SAVED
    with pytest.raises(ParseError):
        parse("FETCH", b" 1 (NOPE)")
    s = parse("STORE", b" 2:4 (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\deleted $x)")
    assert s == StoreArgs(False, [(2, 4)], "+", True, frozenset({"\\Deleted", "$x"}), 5)
    assert parse("STORE", b" 1 -FLAGS \\Seen \\Flagged").flags == frozenset({"\\Seen", "\\Flagged"})
    with pytest.raises(ParseError):
        parse("STORE", b" 1 +FLAGS (\\Recent)")
    assert parse("COPY", b" 1:2 Archive", uid=True) == CopyArgs(True, [(1, 2)], "Archive")
    assert parse("MOVE", b' $ "Trash"').set == SAVED
    assert parse("EXPUNGE", b"").uids is None
    assert parse("EXPUNGE", b" 3:5", uid=True).uids == [(3, 5)]
    with pytest.raises(ParseError):
        parse("EXPUNGE", b" 3:5")      # only UID EXPUNGE takes a set


def test_search_sort_thread():
    a = parse("SEARCH", b" RETURN (MIN COUNT) UNSEEN SUBJECT hello", uid=True)
    assert a.uid and a.returns == ["MIN", "COUNT"] and a.criteria
    assert parse("SEARCH", b" ALL").returns is None
    with pytest.raises(ParseError):
        parse("SEARCH", b" RETURN (NOPE) ALL")
    with pytest.raises(BadCharset):
        parse("SEARCH", b" CHARSET KOI9 ALL")
    s = parse("SORT", b" (REVERSE DATE SUBJECT) UTF-8 ALL")
    assert s.sort_keys == [("DATE", True), ("SUBJECT", False)] and s.returns is None
    t = parse("THREAD", b" references US-ASCII ALL", uid=True)
    assert t.algorithm == "REFERENCES" and t.uid
    with pytest.raises(ParseError):
        parse("THREAD", b" NOPE UTF-8 ALL")
