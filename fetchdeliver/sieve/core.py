"""RFC 5228 core: control commands, keep/discard/redirect, and the base tests."""

from __future__ import annotations

from fetchdeliver.sieve.addresses import parse_address_list, valid_address
from fetchdeliver.sieve.matching import Casemap, Octet, match
from fetchdeliver.sieve.registry import Extension
from fetchdeliver.sieve.runtime import Stop, address_values, header_values, valid_header_name

EXT = Extension("core")
EXT.comparator("i;octet", Octet)
EXT.comparator("i;ascii-casemap", Casemap)
EXT.group_tag("comparator", "comparator", "string")
for _name in ("is", "contains", "matches"):
    EXT.group_tag("match", _name)
for _name in ("all", "localpart", "domain"):
    EXT.group_tag("address-part", _name)


def _noop(ctx, node) -> None:
    pass


def _run_if(ctx, node) -> None:
    for test, block in node[4]:
        if test is None or ctx.test(test):
            ctx.run_block(block)
            return


def _check_never(v, node, out) -> None:
    pass


EXT.command("if", tests=1, block=True)(_run_if)
EXT.command("elsif", tests=1, block=True)(_noop)
EXT.command("else", block=True)(_noop)


@EXT.command("stop")
def _stop(ctx, node) -> None:
    ctx.note("stop")
    raise Stop()


@EXT.command("keep")
def _keep(ctx, node) -> None:
    ctx.store("INBOX", node[2], "keep")


@EXT.command("discard")
def _discard(ctx, node) -> None:
    ctx.discard()


def _check_redirect(v, node, out) -> None:
    if "list" in out[2]:
        return  # extlists: the argument names a list, not an address
    address = out[3][0] if out[3] else None
    if isinstance(address, str) and v.constant(address):
        why = valid_address(address)
        if why:
            v.error(f"specified redirect address '{address}' is invalid: {why}", node.args[-1])


@EXT.command("redirect", args=("string",), check=_check_redirect)
def _redirect(ctx, node) -> None:
    if "list" in node[2]:
        return ctx.services["redirect_list"](ctx, ctx.expand(node[3][0]), bool(node[2].get("copy")))
    address = ctx.expand(node[3][0])
    why = valid_address(address)
    if why:
        ctx.fail(f"specified redirect address '{address}' is invalid: {why}")
    addr = parse_address_list(address)[0]
    ctx.redirect(addr.all(), bool(node[2].get("copy")))


# -- tests ----------------------------------------------------------------------

@EXT.test("true")
def _true(ctx, node) -> bool:
    return True


@EXT.test("false")
def _false(ctx, node) -> bool:
    return False


@EXT.test("not", tests=1)
def _not(ctx, node) -> bool:
    return not ctx.test(node[4])


@EXT.test("allof", tests="list")
def _allof(ctx, node) -> bool:
    for t in node[4]:
        if not ctx.test(t):
            return False
    return True


@EXT.test("anyof", tests="list")
def _anyof(ctx, node) -> bool:
    for t in node[4]:
        if ctx.test(t):
            return True
    return False


def _check_header_names(v, node, out) -> None:
    names = out[3][0] if out[3] else []
    for name in names:
        if v.constant(name) and not valid_header_name(name):
            # A warning, as in Pigeonhole: the script runs and the test never matches that name.
            v.warning(f"specified header field name '{name}' is invalid", node)


@EXT.test("header", args=("strings", "strings"), names=("header names", "key list"), groups=("comparator", "match"),
          check=_check_header_names)
def _header(ctx, node) -> bool:
    tags = node[2]
    values = header_values(ctx, ctx.expand_list(node[3][0]), tags)
    if "mime" in tags:  # :count counts the extracted values too (RFC 5703 4.2)
        values = ctx.services["mime_values"](ctx, tags, values)
    return match(ctx, tags, values, ctx.expand_list(node[3][1]))


# RFC 5228 5.1: "Implementations MUST restrict the address test to headers that contain
# addresses". The RFC 5322 address fields, their Resent- forms, and the other fields known to
# carry addresses (the same names Pigeonhole accepts, and a few more).
ADDRESS_HEADERS = frozenset((
    "from", "sender", "reply-to", "to", "cc", "bcc",
    "resent-from", "resent-sender", "resent-reply-to", "resent-to", "resent-cc", "resent-bcc",
    "delivered-to", "x-original-to", "envelope-to", "errors-to", "return-receipt-to",
    "disposition-notification-to", "mail-followup-to", "mail-reply-to", "apparently-to", "x-beenthere",
    "for-approval", "for-handling", "for-comment", "x-admin", "read-receipt-to", "x-confirm-reading-to",
    "return-receipt-requested", "registered-mail-reply-requested-by", "abuse-reports-to",
    "x-complaints-to", "x-report-abuse-to"))


def _check_address(v, node, out) -> None:
    _check_header_names(v, node, out)
    if "mime" in out[2]:
        return  # :mime looks at MIME part headers (RFC 5703), checked there
    for name in (out[3][0] if out[3] else []):
        if v.constant(name) and name.lower() not in ADDRESS_HEADERS and valid_header_name(name):
            v.error(f"specified header '{name}' is not allowed for the address test "
                    f"(it does not hold addresses)", node)


@EXT.test("address", args=("strings", "strings"), names=("header list", "key list"),
          groups=("comparator", "match", "address-part"),
          check=_check_address)
def _address(ctx, node) -> bool:
    tags = node[2]
    raw_values = header_values(ctx, ctx.expand_list(node[3][0]), tags, decode=False)
    addresses = []
    for value in raw_values:
        addresses.extend(parse_address_list(value))
    return match(ctx, tags, address_values(ctx, addresses, tags.get("part", "all")),
                 ctx.expand_list(node[3][1]))


@EXT.test("exists", args=("strings",), check=_check_header_names)
def _exists(ctx, node) -> bool:
    tags = node[2]
    for name in ctx.expand_list(node[3][0]):
        if not header_values(ctx, [name], tags, decode=False):
            return False
    return True


def _check_size(v, node, out) -> None:
    tags = out[2]
    if ("over" in tags) == ("under" in tags):
        v.error("the size test requires exactly one of the :over or :under tags", node)


@EXT.test("size", args=("number",), tags={"over": None, "under": None}, check=_check_size)
def _size(ctx, node) -> bool:
    limit = node[3][0]
    size = ctx.message.size
    if "over" in node[2]:
        return size > limit
    return size < limit
