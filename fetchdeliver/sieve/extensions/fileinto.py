"""RFC 5228 section 4.1: fileinto."""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("fileinto")


def _check(v, node, out) -> None:
    name = out[3][0] if out[3] else None
    if isinstance(name, str) and v.constant(name):
        if not name:
            v.error("fileinto: the mailbox name is empty", node)
        elif not valid_utf8(name):
            v.error(f"fileinto: invalid folder name {name!r}: not valid UTF-8", node)


def valid_utf8(name: str) -> bool:
    """False when the name came from bytes that are not UTF-8 (decoded as U+FFFD or surrogates)."""
    return "\ufffd" not in name and not any("\udc80" <= c <= "\udcff" for c in name)


@EXT.command("fileinto", args=("string",), names=("folder",), check=_check)
def fileinto(ctx, node) -> None:
    mailbox = ctx.expand(node[3][0])
    if not mailbox:
        ctx.fail("fileinto: the mailbox name is empty")
    if not valid_utf8(mailbox):
        ctx.fail(f"fileinto: invalid folder name {mailbox!r}: not valid UTF-8")
    tags = node[2]
    if "specialuse" in tags:
        from fetchdeliver.sieve.extensions.special_use import resolve

        mailbox = resolve(ctx, tags, mailbox)
    if "mailboxid" in tags:
        from fetchdeliver.sieve.extensions.mailboxid import resolve as resolve_id

        mailbox = resolve_id(ctx, tags, mailbox)
    ctx.store(mailbox, tags, "fileinto")
