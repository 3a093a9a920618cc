"""The MDA's input as Postfix gives it (issue 21): the leading mbox `From sender date` line."""

import pytest

from fetchdeliver.sources.stdin import split_from_line


@pytest.mark.parametrize("raw, rest, sender", [
    (b"From alice@example.org  Wed Dec  2 12:31:01 2026\nSubject: x\n\nbody\n", b"Subject: x\n\nbody\n",
     "alice@example.org"),
    (b"From MAILER-DAEMON  Wed Dec  2 12:31:01 2026\nSubject: bounce\n\n", b"Subject: bounce\n\n", ""),
    (b"From a@b Wed Dec  2 12:31:01 2026\r\nSubject: crlf\r\n\r\n", b"Subject: crlf\r\n\r\n", "a@b"),
    (b"From \nX: y\n", b"X: y\n", ""),
    # Not an envelope line: kept byte for byte.
    (b"From: alice@example.org\nSubject: x\n\n", b"From: alice@example.org\nSubject: x\n\n", None),
    (b"Subject: x\n\nFrom me to you\n", b"Subject: x\n\nFrom me to you\n", None),
    (b"From only-one-line", b"From only-one-line", None),
    (b"", b"", None),
])
def test_split_from_line(raw, rest, sender):
    assert split_from_line(raw) == (rest, sender)


def test_only_the_first_line_goes_and_the_rest_is_byte_exact():
    body = b"Subject: x\n\nFrom the body\n>From quoted\n\x00 nul\r bare cr"
    assert split_from_line(b"From s@x  Thu Jan  1 00:00:00 1970\n" + body) == (body, "s@x")
