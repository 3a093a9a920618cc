"""NOTIFY (RFC 5465): the command's parser with the RFC's examples and its syntax rules."""

from __future__ import annotations

import pytest

from fetchdeliver.imapserver.commands import REGISTRY
from fetchdeliver.imapserver.commands.notify import NotifyArgs
from fetchdeliver.imapserver.notify import Group
from fetchdeliver.imapserver.protocol import ParseError, Parser


def parse(args: bytes) -> NotifyArgs:
    return REGISTRY["NOTIFY"].parse(Parser(args), False)


def test_rfc_5465_examples():
    # section 6 (and 8): the selected mailbox with fetch attributes, and personal mailboxes
    got = parse(b" SET (selected (MessageNew (uid body.peek[header.fields (from to subject)]) MessageExpunge)) "
                b"(subtree Lists (MessageNew MessageExpunge)) (mailboxes misc (MessageNew MessageExpunge))")
    sel, lists, misc = got.groups
    assert sel.filter == "SELECTED" and sel.events == ("MessageNew", "MessageExpunge")
    assert sel.fetch_atts[0] == "UID" and sel.fetch_atts[1].label == b"BODY[header.fields (from to subject)]"
    assert lists == Group("SUBTREE", ("Lists",), ("MessageNew", "MessageExpunge"))
    assert misc == Group("MAILBOXES", ("misc",), ("MessageNew", "MessageExpunge"))
    assert parse(b" NONE") == NotifyArgs(None)
    got = parse(b" SET STATUS (personal (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange))")
    assert got.status and got.groups[0].events[-1] == "SubscriptionChange"
    assert parse(b" SET (inboxes NONE) (mailboxes (a b) (MailboxName))").groups[1].mailboxes == ("a", "b")
    assert parse(b" SET (personal (MessageNew MessageExpunge AnnotationChange))").unsupported == ("AnnotationChange",)


@pytest.mark.parametrize("bad", [
    b"", b" SET", b" SET ()", b" SET (nowhere (MessageNew MessageExpunge))", b" SET (personal ())",
    b" SET (personal (MessageNew))",                        # MessageNew needs MessageExpunge
    b" SET (personal (FlagChange))",                        # FlagChange needs both
    b" SET (personal (MessageNew (UID) MessageExpunge))",   # fetch-att only for SELECTED
    b" SET (selected (MailboxName))",
    b" SET (selected (MessageNew MessageExpunge)) (selected-delayed (MessageNew MessageExpunge))",
    b" SET (subtree (MessageNew MessageExpunge))", b" SET (personal (Bogus))", b" NONE x"])
def test_errors(bad):
    with pytest.raises(ParseError):
        parse(bad)
