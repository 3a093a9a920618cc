"""Mailbox names: validation, modified UTF-7 (RFC 3501 5.1.3), Maildir++ and mbox paths."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fetchdeliver.delivery.names import (maildir_folder, mbox_relpath, name_from_maildir_folder,
                                         name_from_mbox_relpath, split_name, utf7_decode,
                                         utf7_encode)
from fetchdeliver.errors import InvalidMailboxName, PermanentDeliveryError

# (name, Maildir++ directory, mbox path); the directories are what `doveadm mailbox create`
# wrote for these names (Dovecot 2.3.19, LAYOUT=maildir++, separator "/").
VALID = [
    ("INBOX", "", None),
    ("inbox", "", None),
    ("InBoX", "", None),
    ("Work", ".Work", "Work"),
    ("Work/Reports", ".Work.Reports", "Work/Reports"),
    ("INBOX/Sub", ".INBOX.Sub", "INBOX/Sub"),
    ("inbox/Low", ".INBOX.Low", "INBOX/Low"),
    ("Ärger", ".&AMQ-rger", "&AMQ-rger"),
    ("R&D", ".R&-D", "R&-D"),
    ("日本語/子", ".&ZeVnLIqe-.&W1A-", "&ZeVnLIqe-/&W1A-"),
    ("Ünï/cödé", ".&ANw-n&AO8-.c&APY-d&AOk-", "&ANw-n&AO8-/c&APY-d&AOk-"),
    ("😀", ".&2D3eAA-", "&2D3eAA-"),
    ("sp ace", ".sp ace", "sp ace"),
    ("a/~b", ".a.~b", "a/~b"),
    ("x" * 254, "." + "x" * 254, "x" * 254),
]


@pytest.mark.parametrize("name,maildir,mbox", VALID)
def test_valid_names_map_like_dovecot(name, maildir, mbox):
    assert maildir_folder(name) == maildir
    assert mbox_relpath(name) == mbox
    if maildir:
        assert name_from_maildir_folder(maildir) == (name if not name.lower().startswith("inbox/")
                                                     else "INBOX" + name[5:])
        assert name_from_mbox_relpath(mbox) == name_from_maildir_folder(maildir)


INVALID = [
    ("", "empty"),
    ("a//b", "empty component"),
    ("trail/", "empty component"),
    ("/abs", "absolute"),
    ("/etc/passwd", "absolute"),
    ("..", "'..'"),
    ("a/../b", "'..'"),
    ("./a", "'.'"),
    ("a/.", "'.'"),
    ("nul\x00byte", "control character"),
    ("tab\there", "control character"),
    ("new\nline", "control character"),
    ("del\x7f", "control character"),
    ("~home", "'~'"),
    ("bad\ud800surrogate", "surrogate"),
]


@pytest.mark.parametrize("name,why", INVALID)
def test_invalid_names_are_rejected_with_a_reason(name, why):
    for fn in (maildir_folder, mbox_relpath):
        with pytest.raises(InvalidMailboxName) as e:
            fn(name)
        msg = str(e.value)
        assert repr(name) in msg and why in msg
    assert isinstance(e.value, PermanentDeliveryError)


@pytest.mark.parametrize("name", ["a.b", "Work/v1.2", "x/..y", ".hidden"])
def test_dot_inside_a_component_cannot_be_maildir_plus_plus(name):
    with pytest.raises(InvalidMailboxName, match=r"contains '\.'"):
        maildir_folder(name)
    assert mbox_relpath(name) == name  # the fs layout of mbox folders has no such limit


def test_length_limit_is_255_bytes_on_disk():
    assert maildir_folder("x" * 254) == "." + "x" * 254
    with pytest.raises(InvalidMailboxName, match="256 bytes"):
        maildir_folder("x" * 255)
    # Non-ASCII counts as encoded: each "ä" costs far more than one byte on disk.
    with pytest.raises(InvalidMailboxName, match="more than 255"):
        maildir_folder("ä" * 120)
    with pytest.raises(InvalidMailboxName, match="more than 255"):
        mbox_relpath("ok/" + "x" * 256)


def test_mbox_names_may_not_shadow_a_dotlock():
    with pytest.raises(InvalidMailboxName, match=r"\.lock"):
        mbox_relpath("Work.lock")
    assert mbox_relpath("Work.lock/x") == "Work.lock/x"


def test_inbox_prefix_is_case_insensitive_only_as_the_first_component():
    assert split_name("iNbOx/Sub") == ("INBOX", "Sub")
    assert split_name("Sub/inbox") == ("Sub", "inbox")
    assert split_name("INBOX") == ()


# RFC 3501 section 5.1.3 and its examples.
RFC_EXAMPLES = [
    ("~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e"),
    ("&Jjo-!", "\u263a!"),
    ("&-", "&"),
    ("Entw&APw-rfe", "Entw\u00fcrfe"),
    ("plain", "plain"),
]


@pytest.mark.parametrize("encoded,text", RFC_EXAMPLES)
def test_modified_utf7_rfc_examples(encoded, text):
    assert utf7_decode(encoded) == text
    assert utf7_encode(text) == encoded


@pytest.mark.parametrize("bad,why", [
    ("&Jjo!", "no closing"),             # RFC: not valid (the run is not closed by "-")
    ("&U,BTFw-&ZeVnLIqe-", "adjacent"),  # RFC: not valid (two runs must be one)
    ("&AGE-", "printable"),              # encodes "a", which must stand for itself
    ("&2D0-", "surrogate"),              # a lone high surrogate
    ("&AMQ", "no closing"),
    ("&AMR-", "does not end"),           # non-zero padding bits
    ("caf\u00e9", "not printable"),      # raw 8-bit is not modified UTF-7
])
def test_modified_utf7_decoder_rejects_malformed_input(bad, why):
    with pytest.raises(ValueError, match=why):
        utf7_decode(bad)


def test_foreign_dot_directories_are_not_folder_names():
    for d in (".", "..", "x", ".a..b"):
        with pytest.raises(ValueError):
            name_from_maildir_folder(d)


text_without_surrogates = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(text_without_surrogates)
def test_modified_utf7_round_trips_and_is_printable_ascii(text):
    enc = utf7_encode(text)
    assert all(" " <= c <= "~" for c in enc)
    assert utf7_decode(enc) == text


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40))
def test_modified_utf7_agrees_with_pythons_utf7_codec(text):
    # An independent encoder: RFC 2152 UTF-7 with the RFC 3501 changes applied by hand.
    expected = []
    run = []
    for ch in text:
        if " " <= ch <= "~":
            if run:
                b64 = "".join(run).encode("utf-7")[1:].rstrip(b"-").decode()
                expected.append("&" + b64.replace("/", ",") + "-")
                run = []
            expected.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    if run:
        b64 = "".join(run).encode("utf-7")[1:].rstrip(b"-").decode()
        expected.append("&" + b64.replace("/", ",") + "-")
    assert utf7_encode(text) == "".join(expected)
