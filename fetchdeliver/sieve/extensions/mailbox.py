"""RFC 5490 section 3: mailboxexists and fileinto :create."""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("mailbox")
EXT.tag("fileinto", "create")


@EXT.test("mailboxexists", args=("strings",))
def mailboxexists(ctx, node) -> bool:
    exists = ctx.env.mailbox_exists
    for name in ctx.expand_list(node[3][0]):
        if exists is None:
            if name.upper() != "INBOX":
                return False
        elif not exists(name):
            return False
    return True
