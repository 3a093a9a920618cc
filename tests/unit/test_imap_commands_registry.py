"""The IMAP command registry (imapserver/commands/): every command is complete, and CAPABILITY is the registry's."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import re

import pytest

from fetchdeliver import sasl
from fetchdeliver.delivery.maildir import MaildirStore
from fetchdeliver.imapserver import commands
from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password
from fetchdeliver.imapserver.commands.registry import ANY, REGISTRY, Command
from fetchdeliver.imapserver.server import Server, ServerConfig
from fetchdeliver.imapserver.session import Session

# The capabilities advertised before this registry existed; a change here is a change of the public contract.
BASE_CAPABILITIES = {"IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UIDPLUS", "MOVE",
                     "UNSELECT", "CHILDREN", "SPECIAL-USE", "CREATE-SPECIAL-USE", "CONDSTORE", "QRESYNC",
                     "ESEARCH", "SEARCHRES", "SORT", "ESORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES",
                     "LIST-STATUS", "STATUS=SIZE"}
BASE_CAPABILITIES |= {"BINARY", "MULTIAPPEND", "CATENATE", "LIST-EXTENDED", "IMAP4rev2", "UTF8=ACCEPT",
                      "SORT=DISPLAY"}    # issue 12
BASE_CAPABILITIES -= {"LITERAL+"}    # dynamic: LITERAL+ or, with literal_plus = false, LITERAL- (RFC 7888)
DYNAMIC_ALWAYS = {"LITERAL+", f"APPENDLIMIT={64 * 1024 * 1024}"}
BASE_CAPABILITIES |= {"OBJECTID", "PREVIEW", "NOTIFY", "CONTEXT=SEARCH"}    # issue 12 (h/imapext2)


def test_every_command_has_a_handler_a_parser_and_states():
    assert len(REGISTRY) >= 33
    for name, cmd in REGISTRY.items():
        assert isinstance(cmd, Command) and cmd.name == name == name.upper()
        assert inspect.iscoroutinefunction(cmd.handler), name
        assert callable(cmd.parse), name
        assert cmd.states and set(cmd.states) <= set(ANY), name
        assert all(isinstance(c, str) and c and " " not in c for c in cmd.capabilities), name


def test_uid_forms_and_states():
    assert {n for n, c in REGISTRY.items() if c.uid} == {"FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE",
                                                         "SORT", "THREAD"}
    assert REGISTRY["LOGIN"].states == ("not authenticated",)
    assert set(REGISTRY["SELECT"].states) == {"authenticated", "selected"}
    assert REGISTRY["FETCH"].states == ("selected",)
    assert set(REGISTRY["NOOP"].states) == set(ANY)


def test_every_command_module_registers_commands():
    """A module dropped into imapserver/commands/ must be imported by the package (and so registered)."""
    handlers = {c.handler.__module__ for c in REGISTRY.values()}
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name == "registry":
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        assert module.__name__ in handlers, f"{info.name} registers no command, or is not imported by the package"
        assert getattr(commands, info.name) is module, f"commands/__init__.py does not import {info.name}"


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError):
        commands.registry.command("NOOP", ANY, parse=commands.registry.no_args)(REGISTRY["NOOP"].handler)


class _Writer:
    def __init__(self):
        self.data = bytearray()

    def write(self, b):
        self.data += b

    async def drain(self):
        pass

    def close(self):
        pass

    def get_extra_info(self, name, default=None):
        return ("192.0.2.7", 5555) if name == "peername" else default


def _server(tmp_path, **kw) -> Server:
    md = str(tmp_path / "Maildir")
    MaildirStore(md, fsync=False).deliver(b"Subject: one\n\nbody\n")
    pw = str(tmp_path / "passwd")
    set_password(pw, "alice", "secret", "SHA256-CRYPT")
    return Server(ServerConfig(listen=[], authenticator=PasswdFileAuthenticator(pw), default_mail="maildir:" + md,
                               login_failure_delay=0, **kw))


def _session_output(server: Server, script: bytes) -> str:
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(script)
        reader.feed_eof()
        w = _Writer()
        await asyncio.wait_for(Session(server, reader, w, False).run(), 30)
        return bytes(w.data).decode()

    return asyncio.run(go())


def _caps(out: str, tag: str) -> list[str]:
    m = re.search(r"\* CAPABILITY (.*)\r\n" + tag + " OK", out)
    assert m, out
    return m.group(1).split()


@pytest.mark.parametrize("plaintext", [True, False])
def test_capability_is_the_registry_capabilities(tmp_path, plaintext):
    server = _server(tmp_path, allow_plaintext_auth=plaintext)
    out = _session_output(server, b"a CAPABILITY\r\nb LOGIN alice secret\r\nc CAPABILITY\r\nd LOGOUT\r\n")
    static = {c for cmd in REGISTRY.values() for c in cmd.capabilities}
    assert static == BASE_CAPABILITIES
    before, after = _caps(out, "a"), _caps(out, "c") if plaintext else None
    assert len(before) == len(set(before))
    mechs = {"AUTH=" + m for m in sasl.offered(server.config.authenticator, plaintext)}
    assert set(before) == static | mechs | DYNAMIC_ALWAYS | (set() if plaintext else {"LOGINDISABLED"})
    # the greeting says the same
    assert out.startswith(f"* OK [CAPABILITY {' '.join(before)}]")
    if plaintext:
        # after login: COMPRESS, and METADATA where the store keeps it (a Maildir does)
        assert set(after) == static | DYNAMIC_ALWAYS | {"COMPRESS=DEFLATE", "METADATA", "METADATA-SERVER"}
        assert f"b OK [CAPABILITY {' '.join(after)}] Logged in." in out
    else:
        assert "b NO [PRIVACYREQUIRED]" in out


def test_dispatch_checks_state_and_uid_form(tmp_path):
    out = _session_output(_server(tmp_path, allow_plaintext_auth=True),
                          b"a FETCH 1 FLAGS\r\nb UID NOOP\r\nc NOPE\r\nd LOGIN alice secret\r\n"
                          b"e LOGIN alice secret\r\nf SELECT INBOX\r\ng UID FETCH 1:* (FLAGS)\r\n"
                          b"h FETCH 1 (NOPE)\r\ni LOGOUT\r\n")
    assert "a BAD FETCH is not valid in the not authenticated state." in out
    assert "b BAD Unknown UID command NOOP." in out
    assert "c BAD Unknown command NOPE." in out
    assert "d OK" in out
    assert "e BAD LOGIN is not valid in the authenticated state." in out
    assert re.search(r"\* 1 FETCH \(UID \d+ FLAGS \([^)]*\)\)\r\ng OK Fetch completed", out), out
    assert "h BAD Error in IMAP command FETCH:" in out
    assert "i OK Logout completed." in out
