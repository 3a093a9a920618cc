"""`fetchdeliver convert fetchmailrc|getmailrc`: the [[account]] TOML they print, validated by our loader."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from fetchdeliver.convert import fetchmailrc, getmailrc

FETCHMAILRC = """\
set daemon 300
set logfile ~/.fetchmail.log
poll imap.example.com with proto IMAP port 993
   user "me@example.com" there with password "s3cr\\"et" is "me" here
   options ssl keep folder INBOX,Lists sslcertck sslcertfile /etc/ssl/ca.pem
   mda "/usr/bin/fetchdeliver deliver --maildir /home/me/Maildir --rules /home/me/rules.sieve"
poll pop.example.net protocol pop3 user joe password 'pw' fetchall
poll label.example via 10.0.0.5 proto imap user ann password x sslproto '' keep fetchall
skip old.example.org proto pop3 user x password y
"""


def accounts(toml: str) -> list[dict]:
    return tomllib.loads(toml).get("account", [])


def validate(tmp_path, toml: str) -> None:
    from fetchdeliver.sources import accounts as _  # noqa: F401  (registers [[account]])
    from fetchdeliver.config import load

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[delivery]\nmaildir = "{tmp_path}/Mail"\n' + toml)
    load(str(cfg))


def test_fetchmailrc_accounts(tmp_path):
    r = fetchmailrc.convert([(FETCHMAILRC, "rc")])
    imap, pop, plain = accounts(r.toml)
    assert imap == {"name": "me@example.com@imap.example.com", "protocol": "imap", "host": "imap.example.com",
                    "port": 993, "tls": "implicit", "ca_file": "/etc/ssl/ca.pem", "user": "me@example.com",
                    "password_command": imap["password_command"], "folders": ["INBOX", "Lists"],
                    "after": "mark-seen", "maildir": "/home/me/Maildir", "rules": "/home/me/rules.sieve"}
    assert "replace this password_command" in imap["password_command"]
    assert "s3cr" not in r.toml
    assert pop["after"] == "delete" and pop["tls"] == "starttls" and "folders" not in pop
    assert plain["host"] == "10.0.0.5" and plain["tls"] == "none" and plain["after"] == "mark-seen"
    assert "# [[account]]" in r.toml and 'name = "x@old.example.org"' in r.toml  # skip: commented out
    assert not r.warnings
    validate(tmp_path, r.toml)


def test_fetchmailrc_copy_password_and_pop3_keep(tmp_path):
    r = fetchmailrc.convert([(FETCHMAILRC, "rc")], copy_password=True)
    imap, pop, _ = accounts(r.toml)
    assert imap["password"] == 's3cr"et' and "password_command" not in imap
    r = fetchmailrc.convert([("poll h proto pop3 user u password p keep ssl\n", "rc")])
    (acc,) = accounts(r.toml)
    assert acc["after"] == "keep" and acc["tls"] == "implicit"
    validate(tmp_path, r.toml)


def test_fetchmailrc_defaults_apply_to_later_polls():
    r = fetchmailrc.convert([("defaults proto pop3 ssl\npoll a user u1 password p\npoll b user u2\n", "rc")])
    assert [(a["host"], a["protocol"], a["tls"]) for a in accounts(r.toml)] == [
        ("a", "pop3", "implicit"), ("b", "pop3", "implicit")]


def test_fetchmailrc_warnings_for_what_is_not_converted():
    r = fetchmailrc.convert([("poll h proto imap user u password p limit 5000 no sslcertck "
                              "mda \"maildrop\"\n", "rc")])
    text = "\n".join(r.warnings)
    assert "limit 5000" in text and "no sslcertck" in text and "maildrop" in text
    assert "rc:1:" in r.warnings[0]
    assert "# NOT CONVERTED: rc:1:" in r.toml


def test_fetchmailrc_syntax_errors():
    with pytest.raises(fetchmailrc.ParseError, match="outside a poll"):
        fetchmailrc.convert([("user x\n", "rc")])
    with pytest.raises(fetchmailrc.ParseError, match="unterminated"):
        fetchmailrc.convert([('poll h user "x\n', "rc")])


GETMAILRC = """\
[retriever]
type = SimpleIMAPSSLRetriever
server = imap.example.com
username = me
password = hunter2
mailboxes = ("INBOX", "Lists")
ca_certs = /etc/ssl/ca.pem

[destination]
type = Maildir
path = ~/Maildir/

[options]
delete = false
read_all = false
"""


def test_getmailrc_accounts(tmp_path):
    pop = ("[retriever]\ntype = SimplePOP3Retriever\nserver = pop.example.net\nusername = joe\n"
           "password_command = (\"/usr/bin/pass\", \"show\", \"mail/pop\")\n"
           "[destination]\ntype = Mboxrd\npath = /home/joe/inbox\n[options]\ndelete = true\n")
    r = getmailrc.convert([(GETMAILRC, "a.rc"), (pop, "b.rc")])
    imap, p = accounts(r.toml)
    assert imap["tls"] == "implicit" and imap["folders"] == ["INBOX", "Lists"] and imap["after"] == "keep"
    assert imap["maildir"] == "~/Maildir" and imap["ca_file"] == "/etc/ssl/ca.pem"
    assert "hunter2" not in r.toml and "replace this password_command" in imap["password_command"]
    assert p["protocol"] == "pop3" and p["tls"] == "none" and p["after"] == "delete"
    assert p["password_command"] == "/usr/bin/pass show mail/pop" and p["mbox"] == "/home/joe/inbox"
    validate(tmp_path, r.toml)
    r = getmailrc.convert([(GETMAILRC, "a.rc")], copy_password=True)
    assert accounts(r.toml)[0]["password"] == "hunter2"


def test_getmailrc_errors_and_warnings():
    with pytest.raises(getmailrc.ParseError, match="no \\[retriever\\]"):
        getmailrc.convert([("[options]\ndelete = true\n", "x.rc")])
    r = getmailrc.convert([(GETMAILRC.replace("type = Maildir", "type = MultiDestination"), "x.rc")])
    assert any("MultiDestination" in w for w in r.warnings)


def test_command_line(tmp_path):
    rc = tmp_path / "fetchmailrc"
    rc.write_text("poll h proto imap user u password secret ssl\n")
    fd = [sys.executable, "-m", "fetchdeliver", "convert"]
    r = subprocess.run(fd + ["fetchmailrc", str(rc)], capture_output=True, text=True)
    assert r.returncode == 0 and "[[account]]" in r.stdout and "secret" not in r.stdout
    r = subprocess.run(fd + ["fetchmailrc", str(rc), "--copy-password", "-o", str(tmp_path / "o.toml")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and 'password = "secret"' in (tmp_path / "o.toml").read_text()
    g = tmp_path / "getmailrc"
    g.write_text(GETMAILRC.replace("type = Maildir", "type = MultiDestination"))
    r = subprocess.run(fd + ["getmailrc", str(g)], capture_output=True, text=True)
    assert r.returncode == 1 and "warning:" in r.stderr


def test_fetchmailrc_multidrop_and_commands_are_warned_about():
    rc = ("poll mx.example.com via 127.0.0.1 proto pop3 aka example.com mail.example.com\n"
          "  localdomains example.com envelope 1 X-Original-To qvirtual fd-\n"
          "  preconnect \"ssh -f tunnel sleep 10\" plugin \"nc %h %p\"\n"
          "  user joe password pw is joe ann here options uidl keep\n")
    r = fetchmailrc.convert([(rc, "rc")])
    text = "\n".join(r.warnings)
    for what in ("rc:1: aka example.com mail.example.com: multidrop", "rc:2: localdomains example.com",
                 "rc:2: envelope X-Original-To: multidrop", "rc:2: qvirtual fd-",
                 "rc:3: preconnect 'ssh -f tunnel sleep 10'", "rc:3: plugin 'nc %h %p'",
                 "rc:4: is joe ann: several local users"):
        assert what in text, text
    (acc,) = accounts(r.toml)
    assert acc["host"] == "127.0.0.1" and acc["protocol"] == "pop3" and acc["after"] == "keep"
    assert any("uidl" in n for n in r.notes)


def test_getmailrc_multidestination_first_store_and_warnings(tmp_path):
    rc = ("[retriever]\ntype = SimpleIMAPSSLRetriever\nserver = imap.example.com\nusername = me\n"
          "password = pw\n\n[destination]\ntype = MultiDestination\n"
          "destinations = ('[main]', '/home/me/backup.mbox', 'bogus')\n\n"
          "[main]\ntype = Maildir\npath = /home/me/Maildir/\n\n[options]\nread_all = true\ndelete = false\n")
    r = getmailrc.convert([(rc, "gm")])
    (acc,) = accounts(r.toml)
    assert acc["maildir"] == "/home/me/Maildir"
    text = "\n".join(r.warnings)
    assert "the copy to /home/me/backup.mbox is not converted" in text
    assert "'bogus' is neither" in text
    assert any("read_all = true" in n for n in r.notes)
    validate(tmp_path, r.toml)
