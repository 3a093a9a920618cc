"""What the interpreter, the core and the extensions share at run time.

The import graph is a tree: ``runtime`` (this module) and ``registry`` import
no other part of the Sieve engine; ``core`` and every extension import them
(and other extensions' public names); the interpreter and the validator load
the core and the extensions through the registry. So nothing here may import
the interpreter, the core or an extension.

- The control-flow signals a handler raises: Stop, Return, Break.
- The header and address helpers the core's tests and several extensions use.
- SERVICES: the names under which an extension offers code to the core and the
  interpreter (``EXT.service(NAME)``), found at run time in ``ctx.services``; the
  validator lets a script use a tag only when its extension is required, so the
  service behind that tag is always there when the tag is.
"""

from __future__ import annotations

from fetchdeliver.sieve.errors import SieveRuntimeError

SERVICES = {
    "expand": "variables: expand(ctx, s) -> s with ${...} substituted",
    "parse_flags": "imap4flags: parse_flags(strings) -> the flag list of keep/fileinto :flags",
    "part_header_values": "mime: part_header_values(ctx, tags, name, decode) -> values (:mime, :anychild)",
    "mime_values": "mime: mime_values(ctx, tags, values) -> values (:type, :subtype, :contenttype, :param)",
    "pick_index": "index: pick_index(values, tags) -> values (:index, :last)",
    "redirect_list": "extlists: redirect_list(ctx, name, copy) (redirect :list)",
    "environment:PREFIX": "item(ctx, name) -> value or None: the environment items whose names start with "
                          "PREFIX (vnd.dovecot.environment's \"vnd.dovecot.\")",
}


class Stop(Exception):
    """`stop`: end the whole script."""


class Return(Exception):
    """`return` (include): end the current (included) script."""


class Break(Exception):
    """`break` (foreverypart): leave a loop (name or None for the innermost)."""

    def __init__(self, name=None):
        self.name = name


class OverBudget(SieveRuntimeError):
    """The run used more CPU time than [sieve] max_run_time."""


def valid_header_name(name: str) -> bool:
    """RFC 5322 field-name: printable US-ASCII except ":"."""
    return bool(name) and all(33 <= ord(c) <= 126 and c != ":" for c in name)


def header_values(ctx, names, tags=None, decode: bool = True) -> list[str]:
    """Every value of the named headers (of the current MIME part with :mime), :index applied."""
    out: list[str] = []
    mime = tags is not None and "mime" in tags
    index = tags is not None and "index" in tags
    for name in names:
        if mime:
            values = ctx.services["part_header_values"](ctx, tags, name, decode)
        else:
            values = ctx.message.get_all(name, decode=decode)
        if index:
            values = ctx.services["pick_index"](values, tags)
        out.extend(values)
    return out


def address_values(ctx, addresses, part: str) -> list[str]:
    """The `part` (all, localpart, domain, user, detail) of each address; invalid ones only for :all."""
    out: list[str] = []
    for a in addresses:
        if a is None:
            continue
        if part == "all":
            out.append(a.all())
        elif a.raw is not None:
            continue  # an unparsable address has no local part or domain
        elif part == "localpart":
            out.append(a.local)
        elif part == "domain":
            out.append(a.domain)
        else:
            v = ctx.address_parts[part](ctx, a)
            if v is not None:
                out.append(v)
    return out
