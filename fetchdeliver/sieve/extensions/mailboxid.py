"""RFC 9042: mailbox identifiers (`fileinto :mailboxid`, `mailboxidexists`).

The store tells which mailbox has which object id (RFC 8474 MAILBOXID) through
the `[sieve]` option `mailbox_ids`: a table id -> mailbox name, or a callable
(id -> mailbox name or None). `fileinto :mailboxid ID NAME` files into the
mailbox with that id when there is one, otherwise into NAME (RFC 9042 section 4).
"""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("mailboxid", default=False)


def valid_id(objectid: str) -> bool:
    """RFC 8474 objectid: 1 to 255 of A-Z a-z 0-9 "_" "-"."""
    return 0 < len(objectid) <= 255 and all(c.isascii() and (c.isalnum() or c in "_-") for c in objectid)


def mailbox_for(ctx, objectid: str) -> str | None:
    table = ctx.env.options.get("mailbox_ids")
    if table is None or not valid_id(objectid):
        return None
    if callable(table):
        return table(objectid)
    found = table.get(objectid)
    return None if found is None else str(found)


def _check_tag(v, node, out) -> None:
    value = out[2].get("mailboxid")
    if isinstance(value, str) and v.constant(value) and not valid_id(value):
        v.error(f"invalid mailbox id '{value}' (1 to 255 letters, digits, '_' or '-')", node)


EXT.tag("fileinto", "mailboxid", "string", check=_check_tag)


@EXT.test("mailboxidexists", args=("strings",))
def mailboxidexists(ctx, node) -> bool:
    exists = ctx.env.mailbox_exists
    for objectid in ctx.expand_list(node[3][0]):
        name = mailbox_for(ctx, objectid)
        if name is None or (exists is not None and not exists(name)):
            return False
    return True


def resolve(ctx, tags: dict, mailbox: str) -> str:
    """fileinto's target: the mailbox with the :mailboxid when it exists, else the named one."""
    name = mailbox_for(ctx, ctx.expand(tags["mailboxid"]))
    if name is not None:
        exists = ctx.env.mailbox_exists
        if exists is None or exists(name):
            ctx.note(f"fileinto :mailboxid {tags['mailboxid']}: {name}")
            return name
    return mailbox
