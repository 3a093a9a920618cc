"""The QUOTA commands' parsers (RFC 9208 syntax) on their own, and the QUOTA response line."""

from __future__ import annotations

import pytest

from fetchdeliver.imapserver.commands import REGISTRY
from fetchdeliver.imapserver.commands.quota import MailboxArgs, RootArgs, SetQuotaArgs, astring, quota_line
from fetchdeliver.imapserver.protocol import ParseError, Parser
from fetchdeliver.storage.base import QuotaStatus


def parse(name: str, args: bytes):
    return REGISTRY[name].parse(Parser(args), False)


def test_getquota_and_getquotaroot():
    assert parse("GETQUOTA", b' "User quota"') == RootArgs("User quota")
    assert parse("GETQUOTA", b' ""') == RootArgs("")
    assert parse("GETQUOTAROOT", b" INBOX") == MailboxArgs("INBOX")
    assert parse("GETQUOTAROOT", b" &AMQ-rger") == MailboxArgs("Ärger")
    for name, bad in (("GETQUOTA", b""), ("GETQUOTA", b" a b"), ("GETQUOTAROOT", b""),
                      ("GETQUOTAROOT", b" INBOX bogus")):
        with pytest.raises(ParseError):
            parse(name, bad)


def test_setquota():
    assert parse("SETQUOTA", b' "" (STORAGE 512)') == SetQuotaArgs("", (("STORAGE", 512),))
    assert parse("SETQUOTA", b' "User quota" (storage 510 MESSAGE 1000)') == \
        SetQuotaArgs("User quota", (("STORAGE", 510), ("MESSAGE", 1000)))
    assert parse("SETQUOTA", b" x ()") == SetQuotaArgs("x", ())
    for bad in (b"", b" x", b" x (STORAGE)", b" x (STORAGE -1)", b" x STORAGE 1", b" x (STORAGE 1) y"):
        with pytest.raises(ParseError):
            parse("SETQUOTA", bad)


def test_quota_line():
    assert quota_line(QuotaStatus("User quota", 6100, 2, 10240, None)) == \
        b'* QUOTA "User quota" (STORAGE 6 10)\r\n'                     # usage in KiB rounded up
    assert quota_line(QuotaStatus("", 0, 42, None, 1000)) == b'* QUOTA "" (MESSAGE 42 1000)\r\n'
    assert quota_line(QuotaStatus("r", 1, 1)) == b'* QUOTA "r" ()\r\n'
    assert astring("INBOX") == b"INBOX" and astring("two words") == b'"two words"' and astring("NIL") == b'"NIL"'
