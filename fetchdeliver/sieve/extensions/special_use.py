"""RFC 8579: special-use mailboxes (`specialuse_exists`, `fileinto :specialuse`).

Which mailbox carries which special-use attribute (RFC 6154: \\All, \\Archive,
\\Drafts, \\Flagged, \\Junk, \\Sent, \\Trash, ...) is told by the `[sieve]` option
`special_use`: a table of attribute -> mailbox name (e.g. {"\\\\Junk" = "Spam"}), or a
callable (attribute -> mailbox name or None) set by the store. When no mailbox
has the attribute, `fileinto :specialuse` files into the named mailbox, as
RFC 8579 section 4 requires.
"""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("special-use", default=False)


def valid_attribute(attr: str) -> bool:
    """A special-use attribute is "\\" followed by an IMAP atom (RFC 6154)."""
    if len(attr) < 2 or attr[0] != "\\":
        return False
    return all(33 <= ord(c) <= 126 and c not in '(){%*"\\]' for c in attr[1:])


def mailbox_for(ctx, attr: str) -> str | None:
    """The mailbox that carries special-use attribute `attr`, or None."""
    table = ctx.env.options.get("special_use")
    if table is None:
        return None
    if callable(table):
        return table(attr)
    want = attr.lower()
    for a, mailbox in table.items():
        if str(a).lower() == want:
            return str(mailbox)
    return None


def _check_attrs(v, attrs, node) -> None:
    for a in attrs:
        if v.constant(a) and not valid_attribute(a):
            v.error(f"invalid special-use flag '{a}' (expected \\\\ followed by an atom)", node)


def _check_exists(v, node, out) -> None:
    args = out[3]
    if not args:
        return
    _check_attrs(v, args[-1], node)
    if len(args) == 2 and v.constant(args[0]):
        from fetchdeliver.sieve.mailbox_names import mailbox_name_problem

        why = mailbox_name_problem(args[0])
        if why:
            # A warning, as mailboxexists gives in Pigeonhole: the test is false for such a name.
            v.warning(f"specialuse_exists: invalid mailbox name '{args[0]}': {why}", node)


@EXT.test("specialuse_exists", args=(("strings",), ("string", "strings")), check=_check_exists)
def specialuse_exists(ctx, node) -> bool:
    args = node[3]
    attrs = ctx.expand_list(args[-1])
    if any(not valid_attribute(a) for a in attrs):
        return False
    if len(args) == 2:
        mailbox = ctx.expand(args[0])
        exists = ctx.env.mailbox_exists
        if exists is not None and not exists(mailbox):
            return False
        return all((mailbox_for(ctx, a) or "").lower() == mailbox.lower() or
                   ((mailbox_for(ctx, a) or "").upper() == "INBOX" == mailbox.upper()) for a in attrs)
    return all(mailbox_for(ctx, a) is not None for a in attrs)


def _check_tag(v, node, out) -> None:
    value = out[2].get("specialuse")
    if isinstance(value, str):
        _check_attrs(v, [value], node)


EXT.tag("fileinto", "specialuse", "string", check=_check_tag)


def resolve(ctx, tags: dict, mailbox: str) -> str:
    """fileinto's target: the mailbox with the :specialuse attribute when there is one."""
    attr = ctx.expand(tags["specialuse"])
    if not valid_attribute(attr):
        ctx.fail(f"fileinto: invalid special-use flag '{attr}'")
    found = mailbox_for(ctx, attr)
    if found:
        ctx.note(f"fileinto :specialuse {attr}: {found}")
        return found
    return mailbox
