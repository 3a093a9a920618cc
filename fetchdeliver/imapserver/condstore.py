"""CONDSTORE and QRESYNC (RFC 7162): the parsing and the answers the session adds to its commands.

The store keeps the MODSEQ of every message's last change, the mailbox's
HIGHESTMODSEQ and the UIDs expunged per MODSEQ (storage/index.py); this module
turns those into SELECT/EXAMINE parameters, FETCH/STORE modifiers, the QRESYNC
resync answers (VANISHED (EARLIER) and the changed messages' FETCH lines) and
VANISHED instead of EXPUNGE once a client has enabled QRESYNC.
"""

from __future__ import annotations

from fetchdeliver.imapserver.protocol import ParseError, Parser

MAX_MODSEQ = 2 ** 63 - 1


class SelectParams:
    """What SELECT/EXAMINE (CONDSTORE) or (QRESYNC (...)) asked for."""

    __slots__ = ("condstore", "qresync", "uidvalidity", "modseq", "known_uids", "seq_match")

    def __init__(self) -> None:
        self.condstore = False
        self.qresync = False
        self.uidvalidity = 0
        self.modseq = 0
        self.known_uids = None    # [(lo, hi)] or None for "every UID"
        self.seq_match = None     # ([(lo, hi)] sequence numbers, [(lo, hi)] their UIDs) or None


def modseq_number(p: Parser, nonzero: bool = True) -> int:
    """mod-sequence-value (RFC 7162): a positive 63-bit number (0 where `nonzero` is False)."""
    d = p._run(b"0123456789")
    if not d or len(d) > 19:
        raise p.error("a mod-sequence value")
    v = int(d)
    if v > MAX_MODSEQ or (nonzero and v == 0):
        raise p.error("a mod-sequence value between 1 and 2^63-1" if nonzero else
                      "a mod-sequence value below 2^63")
    return v


def parse_select_params(p: Parser, qresync_enabled: bool) -> SelectParams:
    """` (CONDSTORE)` / ` (QRESYNC (uidvalidity modseq [known-uids [(seqs uids)]]))` after the name."""
    sp = SelectParams()
    if p.at_end():
        return sp
    p.sp()
    p.expect(b"(")
    while not p.maybe(b")"):
        word = p.atom().upper()
        if word == "CONDSTORE":
            sp.condstore = True
        elif word == "QRESYNC":
            if not qresync_enabled:
                raise ParseError("QRESYNC must be enabled (ENABLE QRESYNC) before SELECT (QRESYNC ...)")
            sp.qresync = sp.condstore = True
            p.sp()
            p.expect(b"(")
            sp.uidvalidity = p.nz_number()
            p.sp()
            sp.modseq = modseq_number(p)
            if p.maybe(b" "):
                if p.peek() != 40:
                    sp.known_uids = p.sequence_set()
                    p.maybe(b" ")
                if p.maybe(b"("):
                    seqs = p.sequence_set()
                    p.sp()
                    uids = p.sequence_set()
                    p.expect(b")")
                    sp.seq_match = (seqs, uids)
            p.expect(b")")
        else:
            raise ParseError(f"unknown SELECT parameter {word}")
        p.maybe(b" ")
    p.end()
    return sp


def parse_fetch_modifiers(p: Parser) -> tuple[int | None, bool]:
    """` (CHANGEDSINCE n [VANISHED])` after the FETCH items: (changedsince or None, vanished)."""
    changedsince, vanished = None, False
    if p.at_end():
        return changedsince, vanished
    p.sp()
    p.expect(b"(")
    while not p.maybe(b")"):
        word = p.atom().upper()
        if word == "CHANGEDSINCE":
            p.sp()
            changedsince = modseq_number(p)
        elif word == "VANISHED":
            vanished = True
        else:
            raise ParseError(f"unknown FETCH modifier {word}")
        p.maybe(b" ")
    p.end()
    if vanished and changedsince is None:
        raise ParseError("VANISHED needs CHANGEDSINCE")
    return changedsince, vanished


def parse_store_modifiers(p: Parser) -> int | None:
    """`(UNCHANGEDSINCE n) ` before the STORE flags (the parser is at "("): n, or None when absent."""
    if p.peek() != 40:
        return None
    p.i += 1
    unchangedsince = None
    while not p.maybe(b")"):
        word = p.atom().upper()
        if word != "UNCHANGEDSINCE":
            raise ParseError(f"unknown STORE modifier {word}")
        p.sp()
        unchangedsince = modseq_number(p, nonzero=False)
        p.maybe(b" ")
    p.sp()
    return unchangedsince


def highestmodseq(mbox, msgs) -> int | None:
    """HIGHESTMODSEQ to announce (at least 1, RFC 7162's mod-sequence-value); None (NOMODSEQ) when
    the backend keeps no MODSEQs for a mailbox that has messages."""
    h = mbox.highestmodseq()
    if h == 0 and msgs and all(m.modseq == 0 for m in msgs):
        return None
    return max(h, max((m.modseq for m in msgs), default=0), 1)


def msg_modseq(m) -> int:
    return max(m.modseq, 1)


def uid_set(uids) -> str:
    """[1, 2, 3, 7] -> "1:3,7" (sorted input or not)."""
    out = []
    start = prev = None
    for u in sorted(set(uids)):
        if start is None:
            start = prev = u
        elif u == prev + 1:
            prev = u
        else:
            out.append(f"{start}" if start == prev else f"{start}:{prev}")
            start = prev = u
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}:{prev}")
    return ",".join(out)


def in_ranges(n: int, ranges, star: int) -> bool:
    for a, b in ranges:
        a = star if a is None else a
        b = star if b is None else b
        if a > b:
            a, b = b, a
        if a <= n <= b:
            return True
    return False


def vanished(mbox, modseq: int, ranges, star: int) -> list[int]:
    """UIDs expunged after `modseq`, limited to the UID set `ranges` (None: all)."""
    gone = mbox.vanished_since(modseq)
    if ranges is None:
        return gone
    return [u for u in gone if in_ranges(u, ranges, max(star, u))]


def qresync_select(view, sp: SelectParams) -> list[bytes]:
    """The answers of SELECT (QRESYNC ...) after the usual ones: VANISHED (EARLIER) and a FETCH
    of every message changed since the client's MODSEQ. Nothing when UIDVALIDITY differs."""
    mbox = view.mailbox
    if sp.uidvalidity != view.uidvalidity:
        return []
    out = []
    star = view.uids[-1] if view.uids else 0
    gone = vanished(mbox, sp.modseq, sp.known_uids, star)
    if gone:
        out.append(b"* VANISHED (EARLIER) " + uid_set(gone).encode() + b"\r\n")
    for i, m in enumerate(view.msgs, 1):
        if m.modseq > sp.modseq and (sp.known_uids is None or in_ranges(m.uid, sp.known_uids, star)):
            out.append(b"* %d FETCH (UID %d FLAGS " % (i, m.uid) + view.flags_of(m)
                       + b" MODSEQ (%d))\r\n" % msg_modseq(m))
    return out
