"""Helpers shared by the Sieve unit tests."""

from fetchdeliver.message import Message
from fetchdeliver.sieve import SieveEnv, compile_text, run

MSG = (b"Return-Path: <sender@example.com>\r\n"
       b"Received: from a by b; Mon, 3 Jun 2024 10:00:00 +0200\r\n"
       b"Received: from c by d; Mon, 3 Jun 2024 09:00:00 +0200\r\n"
       b"Date: Mon, 3 Jun 2024 09:30:15 +0200\r\n"
       b"From: \"Alice Example\" <alice+tag@Example.COM>\r\n"
       b"To: rcpt@example.org, Bob <bob@example.net>\r\n"
       b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= [list] Weekly *news*\r\n"
       b"Message-ID: <abc@example.com>\r\n"
       b"X-Spam-Score: 7.5\r\n"
       b"\r\n"
       b"Hello world, this is the body.\r\n")


def message(raw: bytes = MSG, sender: str = "sender@example.com", rcpt: str = "rcpt@example.org"):
    return Message(raw, sender, [rcpt])


def result(script: str, raw: bytes = MSG, options: dict | None = None, **env):
    s = compile_text(script, "test.sieve", options=options)
    m = message(raw, env.pop("sender", "sender@example.com"), env.pop("rcpt", "rcpt@example.org"))
    return run(s, m, SieveEnv(m, options=options, **env))


def actions(script: str, raw: bytes = MSG, options: dict | None = None, **env) -> list:
    """A compact form of the actions: ("fileinto", "Box"), ("keep", "INBOX", implicit), ..."""
    out = []
    for a in result(script, raw, options, **env).actions:
        j = a.to_json()
        if j["type"] in ("keep", "fileinto"):
            item = (j["type"], j["mailbox"])
            if j["flags"]:
                item += (tuple(j["flags"]),)
            if j["implicit"]:
                item += ("implicit",)
            out.append(item)
        elif j["type"] == "redirect":
            out.append(("redirect", j["address"]))
        else:
            out.append((j["type"],))
    return out


IMPLICIT = ("keep", "INBOX", "implicit")


def folders(script: str, raw: bytes = MSG, options: dict | None = None, **env) -> list[str]:
    """The fileinto mailboxes only, in order (for tests that print values through folder names)."""
    return [a[1] for a in actions(script, raw, options, **env) if a[0] == "fileinto"]
