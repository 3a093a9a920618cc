"""METADATA (RFC 5464): the GETMETADATA/SETMETADATA parsers with the RFC's examples, entry names, the
value format, and the JSON file store's limits, atomic replacement, RENAME and DELETE."""

from __future__ import annotations

import json

import pytest

from fetchdeliver.imapserver.commands import REGISTRY
from fetchdeliver.imapserver.commands.metadata import GetMetadataArgs, SetMetadataArgs, format_value
from fetchdeliver.imapserver.metadata import MAX_VALUE_SIZE, FileMetadata, MetadataError, valid_entry
from fetchdeliver.imapserver.protocol import ParseError, Parser


def parse(name: str, args: bytes):
    return REGISTRY[name].parse(Parser(args), False)


def test_getmetadata_rfc_examples():
    # RFC 5464 4.2 and its errata 3868 (several entries are a parenthesised list)
    assert parse("GETMETADATA", b' "" /shared/comment') == GetMetadataArgs("", ("/shared/comment",))
    assert parse("GETMETADATA", b' "INBOX" (/private/comment /shared/comment)') == \
        GetMetadataArgs("INBOX", ("/private/comment", "/shared/comment"))
    assert parse("GETMETADATA", b' (MAXSIZE 1024) "INBOX" (/shared/comment /private/comment)') == \
        GetMetadataArgs("INBOX", ("/shared/comment", "/private/comment"), 1024, "0")
    assert parse("GETMETADATA", b' (DEPTH 1) "INBOX" (/private/filters/values)') == \
        GetMetadataArgs("INBOX", ("/private/filters/values",), None, "1")
    assert parse("GETMETADATA", b' (MAXSIZE 10 DEPTH infinity) inbox /private/x').depth == "infinity"


@pytest.mark.parametrize("bad", [b"", b' ""', b' "" ()', b' "" /other/comment', b' "" /shared//x', b' "" /shared/x/',
                                 b' (DEPTH 2) "" /shared/x', b' (FOO 1) "" /shared/x', b' "" /shared/x extra'])
def test_getmetadata_errors(bad):
    with pytest.raises(ParseError):
        parse("GETMETADATA", bad)


def test_setmetadata_rfc_examples():
    # RFC 5464 4.3
    assert parse("SETMETADATA", b' INBOX (/private/comment {33}\r\nMy new comment across\r\ntwo lines.)') == \
        SetMetadataArgs("INBOX", (("/private/comment", b"My new comment across\r\ntwo lines."),))
    assert parse("SETMETADATA", b' INBOX (/private/comment NIL)') == \
        SetMetadataArgs("INBOX", (("/private/comment", None),))
    assert parse("SETMETADATA", b' "" (/shared/comment "My new comment" /private/x ~{2}\r\n\x00\x01)') == \
        SetMetadataArgs("", (("/shared/comment", b"My new comment"), ("/private/x", b"\x00\x01")))
    for bad in (b" INBOX ()", b" INBOX (/private/comment)", b" INBOX /private/comment x", b" INBOX (/x/y NIL)"):
        with pytest.raises(ParseError):
            parse("SETMETADATA", bad)


def test_entry_names():
    assert valid_entry("/private/comment") and valid_entry("/SHARED/vendor/example.com/x")
    for bad in ("/private/", "private/x", "/public/x", "/private//x", "/private/a*", "/private/%", "/shared/\x7f"):
        assert not valid_entry(bad)


def test_values_are_quoted_or_literals():
    assert format_value(b'say "hi"') == b'"say \\"hi\\""'
    assert format_value(b"two\r\nlines") == b"{10}\r\ntwo\r\nlines"


def test_file_store(tmp_path):
    md = FileMetadata(str(tmp_path / "m.json"))
    md.set("", [("/shared/comment", b"server")])
    md.set("Work", [("/private/Comment", "Grüße".encode()), ("/private/bin", b"\xff\x00")])
    assert md.get("Work", "/PRIVATE/COMMENT") == "Grüße".encode()      # names are case-insensitive
    assert md.entries("Work") == {"/private/comment": "Grüße".encode(), "/private/bin": b"\xff\x00"}
    assert json.loads((tmp_path / "m.json").read_text())["Work"]["/private/bin"] == {"b64": "/wA="}
    with pytest.raises(MetadataError) as e:
        md.set("Work", [("/private/a", b"x"), ("/private/big", b"x" * (MAX_VALUE_SIZE + 1))])
    assert e.value.code == f"METADATA MAXSIZE {MAX_VALUE_SIZE}"
    assert md.get("Work", "/private/a") is None        # all or nothing
    md.set("Work/Sub", [("/private/x", b"1")])
    md.rename("Work", "Job")
    assert md.entries("Work") == {} and md.get("Job/Sub", "/private/x") == b"1"
    md.delete("Job")
    assert md.entries("Job") == {} and md.get("", "/shared/comment") == b"server"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]    # no temporary file left


def test_too_many_entries(tmp_path, monkeypatch):
    import fetchdeliver.imapserver.metadata as m

    monkeypatch.setattr(m, "MAX_ENTRIES", 3)
    md = FileMetadata(str(tmp_path / "m.json"), fsync=False)
    md.set("", [("/private/a", b"1"), ("/private/b", b"2")])
    md.set("INBOX", [("/private/c", b"3")])
    with pytest.raises(MetadataError, match="At most 3") as e:
        md.set("INBOX", [("/private/d", b"4")])
    assert e.value.code == "METADATA TOOMANY"
    md.set("INBOX", [("/private/c", None), ("/private/d", b"4")])    # a removal makes room


def test_total_size_limit(tmp_path, monkeypatch):
    import fetchdeliver.imapserver.metadata as m

    monkeypatch.setattr(m, "MAX_TOTAL_SIZE", 10)
    md = FileMetadata(str(tmp_path / "m.json"), fsync=False)
    md.set("", [("/private/a", b"12345")])
    md.set("INBOX", [("/private/b", b"12345")])
    with pytest.raises(MetadataError) as e:
        md.set("INBOX", [("/private/c", b"1")])
    assert e.value.code == "LIMIT"
    assert md.entries("INBOX") == {"/private/b": b"12345"}      # nothing of the refused change kept
    md.set("INBOX", [("/private/b", b"1234"), ("/private/c", b"1")])
