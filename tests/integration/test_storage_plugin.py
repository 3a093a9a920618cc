"""Storage backends by entry point (group "fetchdeliver.storage"): a mail location "NAME:ARGS"
names a plugin's factory; the IMAP server serves what it returns."""

from __future__ import annotations

import imaplib
import sys
import textwrap

import imapclient
import pytest

from fetchdeliver.errors import ConfigError
from fetchdeliver.imapserver.auth import PasswdFileAuthenticator, set_password
from fetchdeliver.imapserver.server import ServerConfig, ThreadedServer
from fetchdeliver.storage import available_backends, open_store
from fetchdeliver.storage.maildir import MaildirStore
from imap_helpers import plain

PLUGIN = '''
"""A storage plugin: a Maildir whose mailboxes are all served read-only."""
from fetchdeliver.storage.maildir import MaildirStore


class ReadOnlyMaildir(MaildirStore):
    def open(self, name, readonly=False):
        return super().open(name, readonly=True)


def make(args):
    return ReadOnlyMaildir(args)
'''


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """An installed distribution (a .dist-info on sys.path) with one `fetchdeliver.storage` entry point."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "fd_roplugin.py").write_text(PLUGIN)
    info = site / "fd_roplugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fd-roplugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [fetchdeliver.storage]
        romaildir = fd_roplugin:make
        """))
    monkeypatch.syspath_prepend(str(site))
    yield "romaildir"
    sys.modules.pop("fd_roplugin", None)


def test_open_store_finds_builtins_and_entry_points(tmp_path, plugin_dist):
    assert isinstance(open_store(f"maildir:{tmp_path}/md"), MaildirStore)
    assert plugin_dist in available_backends()
    store = open_store(f"{plugin_dist}:{tmp_path}/md")
    assert type(store).__name__ == "ReadOnlyMaildir"
    with pytest.raises(ConfigError) as e:
        open_store("nosuch:/x")
    assert "nosuch:/x" in str(e.value) and plugin_dist in str(e.value)


def test_the_imap_server_serves_a_plugin_store(tmp_path, plugin_dist):
    md = str(tmp_path / "Maildir")
    MaildirStore(md).deliver(plain(1))
    passwd = str(tmp_path / "passwd")
    set_password(passwd, "alice", "secret", "SHA256-CRYPT")
    cfg = ServerConfig(listen=["127.0.0.1:0"], authenticator=PasswdFileAuthenticator(passwd),
                       default_mail=f"{plugin_dist}:{md}", login_failure_delay=0)
    server = ThreadedServer(cfg).start()
    try:
        c = imapclient.IMAPClient("127.0.0.1", port=server.port(), ssl=False, timeout=30)
        c.login("alice", "secret")
        with pytest.raises(imaplib.IMAP4.readonly):     # SELECT answered [READ-ONLY]: the plugin's choice
            c.select_folder("INBOX")
        c.select_folder("INBOX", readonly=True)
        assert c.fetch([1], ["ENVELOPE"])[1][b"ENVELOPE"].subject == b"m number 1"
        c.logout()
    finally:
        server.stop()
