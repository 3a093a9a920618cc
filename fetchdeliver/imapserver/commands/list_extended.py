"""LIST with LIST-EXTENDED (RFC 5258): selection options (SUBSCRIBED, REMOTE, RECURSIVEMATCH,
SPECIAL-USE of RFC 6154), several patterns, return options (SUBSCRIBED, CHILDREN, SPECIAL-USE, and
STATUS of LIST-STATUS, RFC 5819), the CHILDINFO extended data item.

The basic form (`LIST ref pattern`) answers as before: every attribute, \\HasChildren/\\HasNoChildren
included (CHILDREN, RFC 3348). The extended form gives the child attributes only with RETURN (CHILDREN)
(RFC 5258 section 4). Special-use attributes are always given. LSUB stays in commands/authenticated.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fetchdeliver.imapserver.commands.registry import AUTHED, command
from fetchdeliver.imapserver.protocol import ParseError, Parser, decode_mailbox, encode_mailbox
from fetchdeliver.storage.base import SPECIAL_USES, StorageError

if TYPE_CHECKING:
    from fetchdeliver.imapserver.session import Session

SELECTION_OPTIONS = ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE")
RETURN_OPTIONS = ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS")
CHILD_ATTRIBUTES = frozenset({"\\HasChildren", "\\HasNoChildren"})
_SPECIAL = frozenset(SPECIAL_USES)


@dataclass(frozen=True)
class ListArgs:
    reference: str
    patterns: tuple[bytes, ...]
    selection: frozenset[str] = frozenset()     # upper-cased selection options
    returns: frozenset[str] = frozenset()       # upper-cased return options (STATUS among them)
    status_items: tuple[str, ...] | None = None
    extended: bool = False                      # any LIST-EXTENDED syntax was used

    @property
    def select_subscribed(self) -> bool:
        return "SUBSCRIBED" in self.selection

    @property
    def return_subscribed(self) -> bool:
        return "SUBSCRIBED" in self.returns


def _options(p: Parser) -> list[str]:
    p.expect(b"(")
    opts: list[str] = []
    while not p.maybe(b")"):
        if opts:
            p.sp()
        opts.append(p.atom().upper())
    return opts


def parse_list(p: Parser, uid: bool = False) -> ListArgs:
    from fetchdeliver.imapserver.commands.authenticated import parse_status_items

    p.sp()
    extended = False
    selection: set[str] = set()
    if p.peek() == 40:
        extended = True
        for opt in _options(p):
            if opt not in SELECTION_OPTIONS:
                raise ParseError(f"unknown LIST selection option {opt}")
            selection.add(opt)
        if "RECURSIVEMATCH" in selection and not selection - {"RECURSIVEMATCH", "REMOTE"}:
            raise ParseError("RECURSIVEMATCH needs another selection option (RFC 5258 section 3)")
        p.sp()
    ref = decode_mailbox(p.astring(), p.utf8)
    p.sp()
    patterns: list[bytes] = []
    if p.peek() == 40:
        extended = True
        p.i += 1
        while True:
            patterns.append(p.list_mailbox())
            if p.maybe(b")"):
                break
            p.sp()
    else:
        patterns.append(p.list_mailbox())
    returns: set[str] = set()
    status_items = None
    if not p.at_end():
        extended = True
        p.sp()
        p.expect(b"RETURN")
        p.sp()
        p.expect(b"(")
        first = True
        while not p.maybe(b")"):
            if not first:
                p.sp()
            first = False
            opt = p.atom().upper()
            if opt not in RETURN_OPTIONS:
                raise ParseError(f"unknown LIST return option {opt}")
            if opt == "STATUS":
                p.sp()
                status_items = parse_status_items(p)
            returns.add(opt)
    p.end()
    return ListArgs(ref, tuple(patterns), frozenset(selection), frozenset(returns), status_items, extended)


def _ancestors(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def list_lines(s: Session, args: ListArgs) -> list[bytes]:
    """The untagged LIST (and LIST-STATUS STATUS) lines."""
    from fetchdeliver.imapserver.commands.authenticated import list_pattern, status_line

    if args.patterns == (b"",) and not args.selection:
        return [b'* LIST (\\Noselect) "/" ""\r\n']
    entries = {e.name: set(e.attributes) for e in s.storage.list()}
    wants_subs = args.select_subscribed or args.return_subscribed
    subs = set(s.storage.subscriptions()) if wants_subs else set()
    regexes = [list_pattern(args.reference, decode_mailbox(pat, s.utf8)) for pat in args.patterns]

    def match(name: str) -> bool:
        return any(r.match(name) for r in regexes)

    # the names that meet the selection criteria, each with what it meets (for CHILDINFO)
    if args.select_subscribed:
        candidates = set(subs)
    else:
        candidates = set(entries)
    if "SPECIAL-USE" in args.selection:
        candidates = {n for n in candidates if entries.get(n, set()) & _SPECIAL}
    criteria: list[str] = [c for c in ("SUBSCRIBED", "SPECIAL-USE") if c in args.selection]
    listed = {n for n in candidates if match(n)}
    childinfo: dict[str, list[str]] = {}
    if "RECURSIVEMATCH" in args.selection:
        # RFC 5258 3.5: a name the patterns match that has a descendant meeting the criteria which
        # the patterns do not match is listed too (whether or not it meets them), with CHILDINFO
        for n in candidates:
            if match(n):
                continue
            for a in _ancestors(n):
                if match(a):
                    childinfo[a] = criteria
    keep_children = not args.extended or "CHILDREN" in args.returns
    out: list[bytes] = []
    for name in sorted(listed | set(childinfo), key=lambda n: (n.upper() != "INBOX", n)):
        if name in entries:
            attrs = set(entries[name])
            if args.extended and "\\Noselect" in attrs:
                # a level of the hierarchy with no mailbox of its own (Maildir++): \NonExistent
                # (which implies \Noselect, RFC 5258 3.4), as Dovecot says in the extended form
                attrs = (attrs - {"\\Noselect"}) | {"\\NonExistent"}
        else:    # a subscription without its mailbox; it has no children either (else it would be an entry)
            attrs = {"\\NonExistent", "\\HasNoChildren"}
        if not keep_children:
            attrs -= CHILD_ATTRIBUTES
        if name in subs:
            attrs.add("\\Subscribed")
        line = f"* LIST ({' '.join(sorted(attrs, key=_attr_order))}) \"/\" ".encode() + \
            encode_mailbox(name, s.utf8)
        if name in childinfo:
            line += b' ("CHILDINFO" (' + b" ".join(b'"%s"' % c.encode() for c in childinfo[name]) + b"))"
        out.append(line + b"\r\n")
        if args.status_items and name in entries and not attrs & {"\\Noselect", "\\NonExistent"} \
                and name in listed:
            try:
                out.append(status_line(s, name, args.status_items))
            except StorageError:
                pass     # gone meanwhile, or not readable: RFC 5819 lets the STATUS be left out
    return out


def _attr_order(a: str) -> tuple:
    order = ["\\Noselect", "\\HasChildren", "\\HasNoChildren", "\\Subscribed"]   # as LSUB
    return (order.index(a) if a in order else len(order), a)


@command("LIST", AUTHED, parse=parse_list,
         capabilities=("LIST-EXTENDED", "CHILDREN", "SPECIAL-USE", "LIST-STATUS"))
async def list_(s: Session, tag: str, args: ListArgs) -> None:
    await s.send(b"".join(list_lines(s, args)) + f"{tag} OK LIST completed.\r\n".encode())
