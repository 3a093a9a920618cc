"""SORT and THREAD (RFC 5256): sort keys (and SORT=DISPLAY's, RFC 5957), the base subject,
ORDEREDSUBJECT and REFERENCES.

Messages come as (MessageInfo, search.Candidate) pairs from the session's search;
header fields are asked of the candidate, which answers from the store's index
(cached header fields) and reads a message only when its fields are not kept yet.
"""

from __future__ import annotations

import calendar
import functools
import re
from email.utils import parsedate_tz

from fetchdeliver.imapserver.protocol import ParseError, Parser

SORT_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO")
THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


def parse_sort_criteria(p: Parser) -> list[tuple[str, bool]]:
    """`(criteria) charset`: [(key, reverse)]; the parser is left before the search keys' space."""
    p.expect(b"(")
    out: list[tuple[str, bool]] = []
    reverse = False
    while True:
        word = p.atom().upper()
        if word == "REVERSE":
            if reverse:
                raise ParseError("REVERSE REVERSE")
            reverse = True
            p.sp()
            continue
        if word not in SORT_KEYS:
            raise ParseError(f"unknown SORT key {word} ({', '.join(SORT_KEYS)})")
        out.append((word, reverse))
        reverse = False
        if p.maybe(b")"):
            break
        p.sp()
    p.sp()
    parse_charset(p)
    return out


def parse_charset(p: Parser) -> str:
    """The charset SORT and THREAD require before their search keys (BadCharset if unknown)."""
    from fetchdeliver.imapserver.search import CHARSETS, BadCharset

    charset = p.astring().decode("ascii", "replace").upper()
    if charset not in CHARSETS:
        raise BadCharset(charset)
    return charset


# -- keys ----------------------------------------------------------------------------------------

_BLOB = r"\[[^\[\]]*\]\s*"
_LEADER = re.compile(rf"(?:(?:{_BLOB})*(?:re|fwd?)\s*(?:{_BLOB})?:\s*|\s+)", re.IGNORECASE)
_BLOB_RX = re.compile(_BLOB)
_TRAILER = re.compile(r"(?:\s|\(fwd\))+\Z", re.IGNORECASE)


@functools.lru_cache(maxsize=8192)
def base_subject(subject: str) -> str:
    """RFC 5256 section 2.1: the subject without Re:/Fwd:/[blob] leaders and (fwd) trailers."""
    s = " ".join(subject.split())
    while True:
        s = _TRAILER.sub("", s)                                   # step 2
        while True:                                               # steps 3-5
            m = _LEADER.match(s)
            if m and m.end():
                s = s[m.end():]
                continue
            m = _BLOB_RX.match(s)
            if m and m.end() < len(s):
                s = s[m.end():]
                continue
            break
        if s[:5].lower() == "[fwd:" and s.endswith("]"):          # step 6
            s = s[5:-1]
            continue
        return s


@functools.lru_cache(maxsize=8192)
def subject_key(subject: str) -> str:
    """What subjects compare by: the base subject, case and accents folded ("Ärger" as "ARGER",
    where Dovecot puts it too; RFC 5256 leaves non-ASCII order to the collation)."""
    base = base_subject(subject)
    if base.isascii():
        return base.upper()
    import unicodedata

    base = unicodedata.normalize("NFKD", base)
    return "".join(ch for ch in base if not unicodedata.combining(ch)).upper()


def _first_value(c, name: str) -> str:
    vals = _values(c, name)
    return vals[0] if vals else ""


_ENCODED = ("subject", "from", "to", "cc")


def _values(c, name: str) -> list[str]:
    """A header field's values; from the index's cached fields when it keeps them (undecoded
    for fields that hold no encoded words), else through the search candidate (which reads and
    caches the message's fields)."""
    if name not in _ENCODED and c.memo is not None:
        field = getattr(c.memo, "header_field", None)
        raw = field(name) if field is not None else None
        if raw is not None:
            return [v.decode("utf-8", "replace") for v in raw]
    return c.header_values(name)


def _first_mailbox(c, name: str) -> str:
    from fetchdeliver.imapserver.mime import parse_addresses

    value = _first_value(c, name)
    if not value:
        return ""
    for _, _, mailbox, host in parse_addresses(value.encode("utf-8", "replace")):
        if host is not None or mailbox:
            return (mailbox or b"").decode("utf-8", "replace").upper()
    return ""


def display_key(c, name: str) -> str:
    """SORT=DISPLAY (RFC 5957): the first address's display name (RFC 2047-decoded), else its
    addr-spec; for a group, the group's name. Upper-cased, as the other address keys."""
    from fetchdeliver.imapserver.mime import parse_addresses
    from fetchdeliver.message import decode_rfc2047

    raw = c.raw_header_values(name)
    if not raw:
        return ""
    for display, _route, mailbox, host in parse_addresses(raw[0]):
        if mailbox is None:
            continue                     # the end of a group
        if host is None:                 # the start of a group: its name
            return mailbox.decode("utf-8", "replace").upper()
        if display:
            return decode_rfc2047(display.decode("utf-8", "replace")).upper()
        spec = mailbox if host == b"MISSING_DOMAIN" else mailbox + b"@" + host
        return spec.decode("utf-8", "replace").upper()
    return ""


def sent_date(c) -> float:
    """The Date: header as UTC seconds; the internal date when it is missing or unparseable."""
    d = _first_value(c, "date")
    t = _parse_date(d) if d else None
    return c.internaldate if t is None else t


@functools.lru_cache(maxsize=8192)
def _parse_date(d: str) -> float | None:
    t = parsedate_tz(d)
    if t is None:
        return None
    return calendar.timegm(t[:6] + (0, 0, 0)) - (t[9] or 0)


def _key(name: str, c):
    if name == "ARRIVAL":
        return c.internaldate
    if name == "DATE":
        return sent_date(c)
    if name == "SIZE":
        return c.size_fn()
    if name == "SUBJECT":
        return subject_key(_first_value(c, "subject"))
    if name.startswith("DISPLAY"):
        return display_key(c, name[7:].lower())
    return _first_mailbox(c, name.lower())


def _same(m, c):
    return c


# The derived keys a store may keep for the next server start (`Mailbox.store_keys`): those that
# cost a header parse each. ARRIVAL and SIZE are at hand; the kept answers are cheap to redo.
STORED = ("sort:DATE", "sort:SUBJECT", "sort:FROM", "sort:TO", "sort:CC", "thread:facts")


def encode_key(name: str, value):
    """A derived key as a store keeps it: a number or text. THREAD's facts are one text: the
    date's repr, subject key, reply flag, Message-ID and references joined by NUL (JSON, which
    starts with "[", in the rare case that a value holds a NUL itself)."""
    if name == "thread:facts":
        date, subj, reply, mid, refs = value
        parts = [subj, mid, *refs]
        if any("\0" in x for x in parts):
            import json

            return json.dumps(value)
        return "\0".join([repr(date), subj, "1" if reply else "", mid, *refs])
    return value


def decode_key(name: str, stored):
    """encode_key's value back (None when it is not one: the key is then computed again)."""
    if name == "thread:facts":
        if not isinstance(stored, str):
            return None
        try:
            if stored.startswith("["):
                import json

                date, subj, reply, mid, refs = json.loads(stored)
                return (date, subj, reply, mid, tuple(refs))
            date_s, subj, reply_s, mid, *refs = stored.split("\0")
            date = int(date_s) if date_s.lstrip("-").isdigit() else float(date_s)
        except ValueError:
            return None
        return (date, subj, reply_s == "1", mid, tuple(refs))
    if name == "sort:DATE":
        return stored if isinstance(stored, (int, float)) else None
    return stored if isinstance(stored, str) else None


def _keys(found: list, name: str, key_table, make) -> dict:
    """{uid: key} for every message of `found`: from the mailbox's table (`key_table(name)`, the
    server's cache; content-derived keys never change under a UID), computed by `make(m, c)` for
    the messages it lacks."""
    table = key_table(name) if key_table is not None else None
    if table is None:
        table = {}
    for m, c in found:
        if m.uid not in table:
            table[m.uid] = make(m, c)
    return table


def known_order(uids: tuple, criteria: list[tuple[str, bool]], key_table) -> list[int] | None:
    """The kept order (indices into `uids`) of the last SORT by `criteria` of exactly these messages."""
    orders = key_table("sort:order") if key_table is not None else None
    last = orders.get(tuple(criteria)) if orders is not None else None
    return last[1] if last is not None and last[0] == uids else None


def known_thread(ident: tuple, algorithm: str, uid: bool, key_table) -> str | None:
    """The kept THREAD answer for these messages under these numbers (`ident`: (UIDs, sequence
    numbers or None)), if it was the last one asked for with this algorithm."""
    answers = key_table("thread:answer") if key_table is not None else None
    last = answers.get((algorithm, uid)) if answers is not None else None
    return last[1] if last is not None and last[0] == ident else None


def sort(found: list, criteria: list[tuple[str, bool]], key_table=None, with_headers=_same) -> list:
    """`found` (in sequence order) sorted by the criteria; ties stay in sequence order. Sort keys
    depend on the content only and are kept in `key_table(name)` ({uid: key}, the server's cache);
    `with_headers(msg, cand)` gives a candidate that reads header fields from the store's index.
    The order is a function of the messages' content: the last one per criteria is kept in
    `key_table("sort:order")` and used again for the same messages (a client's resync)."""
    uids = tuple(m.uid for m, _ in found)
    known = known_order(uids, criteria, key_table)
    if known is not None:
        return [found[i] for i in known]
    orders = key_table("sort:order") if key_table is not None else None
    crit = tuple(criteria)
    out = list(range(len(found)))
    for name, reverse in reversed(criteria):       # stable sorts, the last criterion first
        keys = _keys(found, "sort:" + name, key_table, lambda m, c, name=name: _key(name, with_headers(m, c)))
        out.sort(key=lambda i: keys[found[i][0].uid], reverse=reverse)
    if orders is not None:
        if len(orders) >= 16:
            orders.clear()
        orders[crit] = (uids, out)
    return [found[i] for i in out]


# -- threads ---------------------------------------------------------------------------------------

class Node:
    __slots__ = ("num", "cand", "parent", "children", "date", "subj", "reply", "mid", "refs", "seq")

    def __init__(self, num=None, cand=None, facts=None) -> None:
        self.num = num          # the number to print; None for a dummy
        self.cand = cand
        self.parent: Node | None = None
        self.children: list[Node] = []
        self.seq = cand.seq if cand is not None else 0
        # (sent date, subject key, subject is a reply/forward, Message-ID, references)
        self.date, self.subj, self.reply, self.mid, self.refs = facts or (0.0, "", False, "", ())


def _facts(c) -> tuple:
    """What threading needs of one message (content-derived: kept across commands)."""
    raw = _first_value(c, "subject")
    subj = subject_key(raw)
    reply = base_subject(raw) != " ".join(raw.split()) and bool(subj)
    mids = _ids(_first_value(c, "message-id"))
    refs = _ids(" ".join(c.header_values("references")))
    if not refs:
        refs = _ids(_first_value(c, "in-reply-to"))[:1]
    return (sent_date(c), subj, reply, mids[0] if mids else "", tuple(refs))


def _fmt(node: Node) -> str:
    parts = [str(node.num)] if node.num is not None else []
    while len(node.children) == 1 and node.num is not None:
        node = node.children[0]
        parts.append(str(node.num))
    if len(node.children) > 1 or (node.num is None and node.children):
        parts.append("".join(f"({_fmt(ch)})" for ch in node.children))
    return " ".join(parts)


def _format(roots: list[Node]) -> str:
    return "".join(f"({_fmt(r)})" for r in roots)


def thread(found: list, algorithm: str, uid: bool, key_table=None, with_headers=_same) -> str:
    """The THREAD answer (without `* THREAD `). The answer is a function of the messages' content
    and their numbers: the last one per algorithm is kept in `key_table("thread:answer")` and given
    again while the same messages, under the same numbers, are asked about (a client's resync)."""
    uids = tuple(m.uid for m, _ in found)
    ident = (uids, None if uid else tuple(c.seq for _, c in found))
    known = known_thread(ident, algorithm, uid, key_table)
    if known is not None:
        return known
    answers = key_table("thread:answer") if key_table is not None else None
    facts = _keys(found, "thread:facts", key_table, lambda m, c: _facts(with_headers(m, c)))
    nodes = [Node(m.uid if uid else c.seq, c, facts[m.uid]) for m, c in found]
    if algorithm == "ORDEREDSUBJECT":
        text = _format(_ordered_subject(nodes))
    else:
        text = _format(_references(nodes))
    if answers is not None:
        answers[(algorithm, uid)] = (ident, text)
    return text


def _ordered_subject(nodes: list[Node]) -> list[Node]:
    """RFC 5256 3: sort by base subject then sent date; each subject's first message is the parent
    of the others; threads in the order of their first message's sent date."""
    order = sorted(nodes, key=lambda n: (n.subj, n.date, n.seq))
    roots: list[Node] = []
    last = None
    for n in order:
        subj = n.subj
        if roots and subj == last:
            roots[-1].children.append(n)
        else:
            roots.append(n)
            last = subj
    roots.sort(key=lambda r: (r.date, r.seq))
    return roots


_MSGID = re.compile(r"<[^<>]*>")


def _ids(text: str) -> list[str]:
    return [m.group(0)[1:-1].strip() for m in _MSGID.finditer(text or "")]


def _references(nodes: list[Node]) -> list[Node]:
    """RFC 5256 3 REFERENCES (Jamie Zawinski's algorithm)."""
    table: dict[str, Node] = {}

    def container(msgid: str) -> Node:
        n = table.get(msgid)
        if n is None:
            n = table[msgid] = Node()
        return n

    def reaches(a: Node, b: Node) -> bool:
        """Whether b is a itself or one of a's descendants (so linking would make a loop)."""
        stack = [a]
        while stack:
            x = stack.pop()
            if x is b:
                return True
            stack.extend(x.children)
        return False

    def link(parent: Node, child: Node) -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = parent
        parent.children.append(child)

    for n in nodes:
        mid = n.mid
        if not mid or (mid in table and table[mid].cand is not None):
            mid = f"\0{n.num}"        # no or a duplicate Message-ID: a unique one of our own
        refs = n.refs
        # 1A: link the references in order, each the parent of the next, unless one already has one.
        prev = None
        for r in refs:
            cont = container(r)
            if prev is not None and cont.parent is None and not reaches(cont, prev):
                link(prev, cont)
            prev = cont
        # 1B: the message's own container; its parent is the last reference.
        me = table.get(mid)
        if me is None:
            me = table[mid] = n
        else:      # a dummy made for a reference: the message takes its place
            n.children = me.children
            for ch in n.children:
                ch.parent = n
            if me.parent is not None:
                idx = me.parent.children.index(me)
                me.parent.children[idx] = n
                n.parent = me.parent
            table[mid] = me = n
        if me.parent is not None:
            me.parent.children.remove(me)
            me.parent = None
        if prev is not None and not reaches(me, prev):
            link(prev, me)
    # 2: the root set.
    roots = [n for n in table.values() if n.parent is None]
    # 4: prune dummies.
    roots = _prune(roots, top=True)
    # Sort siblings by sent date (a dummy takes its first child's), then 5: group by subject.
    for r in roots:
        _sort_tree(r)
    roots.sort(key=_node_key)
    roots = _group_by_subject(roots)
    for r in roots:
        _sort_tree(r)
    roots.sort(key=_node_key)
    return roots


def _prune(nodes: list[Node], top: bool) -> list[Node]:
    out: list[Node] = []
    for n in nodes:
        n.children = _prune(n.children, top=False)
        for ch in n.children:
            ch.parent = n
        if n.cand is None:
            if not n.children:
                continue
            if not top or len(n.children) == 1:
                for ch in n.children:
                    ch.parent = None if top else n.parent
                out.extend(n.children)
                continue
        out.append(n)
    return out


def _node_key(n: Node):
    while n.cand is None and n.children:
        n = n.children[0]
    return (n.date, n.seq)


def _sort_tree(n: Node) -> None:
    for ch in n.children:
        _sort_tree(ch)
    n.children.sort(key=_node_key)


def _subject_of(n: Node) -> tuple[str, bool]:
    m = n if n.cand is not None else n.children[0]
    return m.subj, m.reply


def _replace(out: list[Node], at: dict[int, int], old: Node, new: Node) -> None:
    """`new` takes `old`'s place in `out`, or goes at its end when `old` is not in it."""
    idx = at.pop(id(old), None)
    if idx is not None:
        out[idx] = new
    else:
        idx = len(out)
        out.append(new)
    at[id(new)] = idx


def _group_by_subject(roots: list[Node]) -> list[Node]:
    """RFC 5256 REFERENCES step 5: threads whose roots share a base subject are merged."""
    table: dict[str, Node] = {}
    for r in roots:
        subj, reply = _subject_of(r)
        if not subj:
            continue
        old = table.get(subj)
        if old is None or (r.cand is None and old.cand is not None) or \
                (old.cand is not None and r.cand is not None and _subject_of(old)[1] and not reply):
            table[subj] = r
    out: list[Node] = []
    at: dict[int, int] = {}      # id(node) -> its place in `out` (a node enters `out` at most once)
    for r in roots:
        if r.parent is not None:       # merged into a later root already
            continue
        subj, reply = _subject_of(r)
        keep = table.get(subj) if subj else None
        if keep is None or keep is r:
            at[id(r)] = len(out)
            out.append(r)
            continue
        if keep.cand is None and r.cand is None:
            for ch in r.children:
                ch.parent = keep
            keep.children.extend(r.children)
        elif keep.cand is None:
            r.parent = keep
            keep.children.append(r)
        elif r.cand is None:
            # The dummy takes the kept root's place in the output, with it as a child.
            keep.parent = r
            r.children.append(keep)
            table[subj] = r
            _replace(out, at, keep, r)
        elif reply and not _subject_of(keep)[1]:
            r.parent = keep
            keep.children.append(r)
        else:
            dummy = Node()
            for x in (keep, r):
                x.parent = dummy
                dummy.children.append(x)
            table[subj] = dummy
            _replace(out, at, keep, dummy)
    # A kept root that had not been emitted yet (it comes later in `roots`) is emitted when reached;
    # drop roots that became children.
    seen: set[int] = set()
    result = []
    for r in out:
        if r.parent is None and id(r) not in seen:
            seen.add(id(r))
            result.append(r)
    return result
