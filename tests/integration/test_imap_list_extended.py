"""LIST-EXTENDED (RFC 5258) over a socket: RFC 5258 section 5's examples on its own hierarchies."""

from __future__ import annotations

import pytest

from imap_helpers import RawClient, make_server

pytestmark = pytest.mark.timeout(120)

# RFC 5258 example 9's hierarchy: (name, subscribed)
EXAMPLE9 = [("foo2", False), ("foo2/bar1", True), ("foo2/bar2", True), ("baz2", False), ("baz2/bar2", True),
            ("baz2/bar22", True), ("baz2/bar222", True), ("eps2", True), ("eps2/mamba", True),
            ("qux2/bar2", True)]


@pytest.fixture
def client(tmp_path):
    server, _maildir, _ = make_server(tmp_path, n_plain=0, idle_poll=600)
    c = RawClient(server.port())
    c.command("a0", b"LOGIN alice secret")
    yield c
    c.close()
    server.stop()


def _setup(c: RawClient, tree) -> None:
    for name, subscribed in tree:
        assert c.command("c", b"CREATE " + name.encode())[-1].startswith(b"c OK")
        if subscribed:
            assert c.command("s", b"SUBSCRIBE " + name.encode())[-1].startswith(b"s OK")


def _list(c: RawClient, args: bytes) -> list[bytes]:
    got = c.command("L", b"LIST " + args)
    assert got[-1].startswith(b"L OK"), got
    return [ln.rstrip(b"\r\n") for ln in got[:-1]]


def test_capability(client):
    assert b"LIST-EXTENDED" in client.command("a1", b"CAPABILITY")[0].split()


def test_rfc5258_example9_recursivematch(client):
    _setup(client, EXAMPLE9)
    got = _list(client, b'(RECURSIVEMATCH SUBSCRIBED) "" "*2"')
    assert set(got) == {
        b'* LIST () "/" "foo2" ("CHILDINFO" ("SUBSCRIBED"))',
        b'* LIST (\\Subscribed) "/" "foo2/bar2"',
        b'* LIST (\\Subscribed) "/" "baz2/bar2"',
        b'* LIST (\\Subscribed) "/" "baz2/bar22"',
        b'* LIST (\\Subscribed) "/" "baz2/bar222"',
        b'* LIST (\\Subscribed) "/" "eps2" ("CHILDINFO" ("SUBSCRIBED"))',
        b'* LIST (\\Subscribed) "/" "qux2/bar2"',
    }
    # with "%", baz2's subscribed children are outside the pattern: it gets CHILDINFO too
    got = _list(client, b'(RECURSIVEMATCH SUBSCRIBED) "" "%"')
    assert b'* LIST () "/" "baz2" ("CHILDINFO" ("SUBSCRIBED"))' in got
    assert b'* LIST () "/" "foo2" ("CHILDINFO" ("SUBSCRIBED"))' in got
    assert b'* LIST (\\Subscribed) "/" "eps2" ("CHILDINFO" ("SUBSCRIBED"))' in got
    assert any(ln.endswith(b'"qux2" ("CHILDINFO" ("SUBSCRIBED"))') for ln in got)
    assert not any(b'"foo2/' in ln for ln in got)


def test_rfc5258_selection_and_return_options(client):
    _setup(client, [("Fruit", True), ("Fruit/Apple", True), ("Fruit/Banana", False), ("Tofu", False),
                    ("Vegetable", True), ("Vegetable/Broccoli", True), ("Vegetable/Corn", False)])
    client.command("d", b"DELETE Fruit/Apple")        # its subscription stays (RFC 3501 6.3.6)
    # RFC 5258 example 3 (section 5): subscribed mailboxes, the deleted one \NonExistent
    assert set(_list(client, b'(SUBSCRIBED) "" "*"')) == {
        b'* LIST (\\Subscribed) "/" "Fruit"', b'* LIST (\\Subscribed \\NonExistent) "/" "Fruit/Apple"',
        b'* LIST (\\Subscribed) "/" "Vegetable"', b'* LIST (\\Subscribed) "/" "Vegetable/Broccoli"'}
    # example 4: RETURN (CHILDREN)
    got = set(_list(client, b'"" "%" RETURN (CHILDREN)'))
    assert {b'* LIST (\\HasChildren) "/" "Fruit"', b'* LIST (\\HasNoChildren) "/" "Tofu"',
            b'* LIST (\\HasChildren) "/" "Vegetable"'} <= got
    # example 5: RETURN (SUBSCRIBED) with the basic selection
    got = set(_list(client, b'"" "*" RETURN (SUBSCRIBED)'))
    assert {b'* LIST (\\Subscribed) "/" "Fruit"', b'* LIST () "/" "Fruit/Banana"', b'* LIST () "/" "Tofu"',
            b'* LIST (\\Subscribed) "/" "Vegetable/Broccoli"', b'* LIST () "/" "Vegetable/Corn"'} <= got
    # example 6: several patterns
    assert set(_list(client, b'"" ("Tofu" "Vegetable/%")')) == {
        b'* LIST () "/" "Tofu"', b'* LIST () "/" "Vegetable/Broccoli"', b'* LIST () "/" "Vegetable/Corn"'}
    # the basic form keeps the CHILDREN attributes (RFC 3348)
    assert b'* LIST (\\HasNoChildren) "/" "Tofu"' in _list(client, b'"" "Tofu"')
    # REMOTE: no remote mailboxes here, the same answer
    assert set(_list(client, b'(REMOTE) "" "%"')) == set(_list(client, b'"" ("%")'))


def test_special_use_selection_and_status(client):
    client.command("c", b"CREATE Sent (USE (\\Sent))")
    client.command("c", b"CREATE Stuff")
    assert _list(client, b'(SPECIAL-USE) "" "*" RETURN (SPECIAL-USE)') == [b'* LIST (\\Sent) "/" "Sent"']
    got = _list(client, b'"" ("Sent" "Stuff") RETURN (STATUS (MESSAGES))')
    assert got == [b'* LIST (\\Sent) "/" "Sent"', b'* STATUS "Sent" (MESSAGES 0)', b'* LIST () "/" "Stuff"',
                   b'* STATUS "Stuff" (MESSAGES 0)']


@pytest.mark.parametrize("bad", [b'(IMAPTEST) "" ""', b'(RECURSIVEMATCH) "" "%"', b'(RECURSIVEMATCH REMOTE) "" "%"',
                                 b'"" "%" RETURN (IMAPTEST)', b'"" ("%"', b'() "" "%" RETURN'])
def test_errors_are_bad(client, bad):
    assert client.command("b", b"LIST " + bad)[-1].startswith(b"b BAD")
