"""Outgoing Sieve mail as Pigeonhole writes it, with the [sieve] options of its names
(fetchdeliver/outbound/compose.py); the Pigeonhole testsuite files exercise the same code."""

from __future__ import annotations

import email
from email.header import decode_header, make_header

from fetchdeliver.actions import Notify, Vacation
from fetchdeliver.message import Message
from fetchdeliver.outbound import compose

RAW = b'From: "Stephan Bosch" <stephan@example.org>\nTo: all@example.com\nSubject: Hi\n\nFrop\n'


def msg(raw=RAW, sender="stephan@example.org", final="me@example.com", orig="all@example.com"):
    return Message(raw, sender, [final], original_recipient=orig)


def test_redirect_header_and_loop():
    m = msg()
    raw = compose.redirect_raw(m, "all@example.com", redirected_from="me@example.com")
    assert raw.startswith(b"X-Sieve-Redirected-From: me@example.com\n")
    again = Message(raw, "x@example.org", ["me@example.com"])
    assert compose.redirected_from_loop(again, None, "me@example.com")
    assert not compose.redirected_from_loop(again, "other@example.com", "you@example.com")


def test_redirect_envelope_from():
    kw = {"final": "me@example.com", "original": "all@example.com", "user_email": None}
    assert compose.redirect_envelope_from(None, "s@example.org", **kw) == "s@example.org"
    assert compose.redirect_envelope_from("recipient", "s@example.org", **kw) == "me@example.com"
    assert compose.redirect_envelope_from("orig_recipient", "s@example.org", **kw) == "all@example.com"
    assert compose.redirect_envelope_from("user_email", "s@example.org", **kw) == "me@example.com"
    assert compose.redirect_envelope_from("<b@example.net>", "s@example.org", **kw) == "b@example.net"
    assert compose.redirect_envelope_from("<b@example.net>", "", **kw) == ""


def test_vacation_user_addresses():
    act = Vacation("away")
    assert compose.vacation_refusal(act, msg(), "all@example.com", {}) is not None   # To: the original only
    assert compose.vacation_refusal(act, msg(), "all@example.com",
                                    {"vacation_use_original_recipient": True}) is None
    assert compose.vacation_refusal(act, msg(), "all@example.com",
                                    {"vacation_dont_check_recipient": True}) is None
    assert compose.vacation_refusal(act, msg(), "all@example.com", {"user_email": "all@example.com"}) is None


def test_vacation_to_subject_and_envelope():
    long = b"Subject: " + b"word " * 100 + b"\n"
    m = msg(RAW.replace(b"Subject: Hi\n", long))
    reply = email.message_from_bytes(compose.vacation_reply(Vacation("away"), m, "all@example.com",
                                                            "example.com", {}))
    assert reply["To"] == '"Stephan Bosch" <stephan@example.org>'
    subject = str(make_header(decode_header(reply["Subject"])))
    assert len(subject) == 256 and subject.endswith("\u2026") and subject.startswith("Auto: word")
    assert compose.vacation_recipient(msg(sender="srs0=x@example.net"), {})[1] == "<srs0=x@example.net>"
    assert compose.vacation_recipient(msg(sender="srs0=x@example.net"),
                                      {"vacation_to_header_ignore_envelope": True})[0] == "stephan@example.org"
    assert compose.vacation_envelope_from(m, {}) == ""
    assert compose.vacation_envelope_from(m, {"vacation_send_from_recipient": True}) == "me@example.com"


def test_notify_cc_display_names_and_priority():
    uri = ("mailto:a@example.com?to=%3D%3Futf-8%3Fq%3FG%3DC3%3DBCnther%3F%3D%20%3Cg%40example.com%3E"
           "&cc=a@example.com,c@example.com")
    to, fields = compose.parse_mailto(uri)
    assert to == ["a@example.com", "g@example.com", "c@example.com"]   # a@ once
    raw = compose.notify_mail(Notify(uri), msg(), "me@example.com", "example.com", to, fields)
    note = email.message_from_bytes(raw)
    assert str(make_header(decode_header(note["To"]))) == "a@example.com, Günther <g@example.com>"
    assert note["Cc"] == "c@example.com"
    assert note["X-Priority"].startswith("3 ") and note["Importance"] == "normal"
    kw = {"final": "me@example.com", "original": "me@example.com", "user_email": None, "hostname": "h.test"}
    assert compose.notify_envelope_from(None, None, "s@example.org", **kw) == "postmaster@h.test"
    assert compose.notify_envelope_from(None, "n@example.org", "s@example.org", **kw) == "n@example.org"
    assert compose.notify_envelope_from("sender", "n@example.org", "s@example.org", **kw) == "s@example.org"
    assert compose.notify_envelope_from(None, "n@example.org", "", **kw) == ""
