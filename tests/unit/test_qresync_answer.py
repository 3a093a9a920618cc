"""Reading a QRESYNC SELECT's answer (RFC 7162 3.2.5.2): the FETCH lines of new/changed messages and the
VANISHED (EARLIER) UID set, as imaplib keeps them; anything unreadable is refused so the caller compares
UIDs instead of missing a message."""

import pytest

from fetchdeliver.sources.imap import resync_from, uid_ranges


def test_changed_and_vanished():
    r = resync_from(5, [b"3 (UID 7 MODSEQ (12) FLAGS (\\Seen \\Deleted))", b"4 (UID 9 FLAGS () MODSEQ (13))",
                         b"5 (UID 11 FLAGS (\\Flagged $Label) MODSEQ (14))"],
                     [b"(EARLIER) 1:3,5,300:299"])
    assert r.changed == {7: (b"\\Seen", b"\\Deleted"), 9: (), 11: (b"\\Flagged", b"$Label")}
    assert r.candidates() == [9, 11]                  # \Deleted ones are not fetched
    assert r.vanished == [(1, 3), (5, 5), (299, 300)]
    assert r.gone([1, 2, 4, 5, 6, 299, 300, 301]) == {1, 2, 5, 299, 300}


def test_nothing_changed():
    r = resync_from(5, [], [])
    assert r.changed == {} and r.candidates() == [] and r.gone([1, 2]) == set()


@pytest.mark.parametrize("fetches,vanished", [
    ([b"3 (FLAGS (\\Seen) MODSEQ (4))"], []),         # no UID: cannot tell which message
    ([b"3 (UID 4 MODSEQ (4))"], []),                  # no FLAGS: cannot tell whether it is \Deleted
    ([(b"3 (UID 4 FLAGS () BODY[] {3}", b"abc"), b")"], []),   # a literal
    ([], [(b"(EARLIER) {3}", b"1:3")]),
    ([], [b"(EARLIER) 1:x"]),
])
def test_unreadable_answers_are_refused(fetches, vanished):
    with pytest.raises(ValueError):
        resync_from(5, fetches, vanished)


def test_uid_ranges():
    assert uid_ranges("9:8,1, 4") == [(1, 1), (4, 4), (8, 9)]
    assert uid_ranges("") == []


@pytest.mark.parametrize("line", [
    b"1 (UID 1 FLAGS () MODSEQ (3))",
    b"2 (MODSEQ (4) FLAGS (\\Seen \\Answered $Forwarded NonJunk) UID 17)",
    b"3 (FLAGS (\\Flagged) UID 4294967295 MODSEQ (18446744073709551615))",
    b"4 (UID 8 X-ODD (FLAGS (a)) FLAGS (\\Deleted) MODSEQ (9))",     # nested list: the general parser
    b'5 (UID 9 FLAGS (\\Seen) X-STR "a (b)" MODSEQ (9))',          # a string: the general parser
])
def test_the_direct_reading_agrees_with_imapclients_parser(line):
    from imapclient.response_parser import parse_fetch_response

    (d,) = parse_fetch_response([line], uid_is_key=False).values()
    assert resync_from(1, [line], []).changed == {int(d[b"UID"]): tuple(d[b"FLAGS"])}
