"""Commands of the selected state: CHECK, CLOSE, UNSELECT (RFC 3691), EXPUNGE (UID EXPUNGE: UIDPLUS),
FETCH and STORE (CONDSTORE/QRESYNC modifiers), COPY (COPYUID) and MOVE (RFC 6851), SEARCH (ESEARCH,
SEARCHRES), SORT (ESORT) and THREAD (RFC 5256)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from fetchdeliver.imapserver import condstore, context, esearch, imapsieve
from fetchdeliver.imapserver import fetch as fetchmod
from fetchdeliver.imapserver import search as searchmod
from fetchdeliver.imapserver import sort_thread
from fetchdeliver.imapserver.commands.registry import SELECTED, NoArgs, command, no_args
from fetchdeliver.imapserver.protocol import ParseError, Parser
from fetchdeliver.storage.base import SYSTEM_FLAGS, StorageError, canonical_flag

if TYPE_CHECKING:
    from fetchdeliver.imapserver.session import Session

ONLY_SELECTED = (SELECTED,)
SAVED = "$"    # RFC 5182: the saved search result in place of a sequence set
SeqSet = Union[list[tuple[int | None, int | None]], str]   # ranges ((None = *), or SAVED


def parse_seq_set(p: Parser) -> SeqSet:
    """A sequence set, or `$` (SAVED); the session resolves either against the selected mailbox."""
    return SAVED if p.maybe(b"$") else p.sequence_set()


@command("CHECK", ONLY_SELECTED, parse=no_args)
async def check(s: Session, tag: str, args: NoArgs) -> None:
    await s.sync_out()
    await s.send(f"{tag} OK Check completed.\r\n".encode())


@command("CLOSE", ONLY_SELECTED, parse=no_args)
async def close(s: Session, tag: str, args: NoArgs) -> None:
    v = s.selected()
    if not v.readonly:
        try:
            doomed = [m for m in v.mailbox.sync() if "\\Deleted" in m.flags]
            v.mailbox.expunge(doomed)
        except StorageError:
            pass
    s.close_view()
    await s.send(f"{tag} OK Close completed.\r\n".encode())


@command("UNSELECT", ONLY_SELECTED, parse=no_args, capabilities=("UNSELECT",))
async def unselect(s: Session, tag: str, args: NoArgs) -> None:
    s.close_view()
    await s.send(f"{tag} OK Unselect completed.\r\n".encode())


# -- EXPUNGE ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExpungeArgs:
    uid: bool
    uids: SeqSet | None     # UID EXPUNGE (UIDPLUS): only these


def parse_expunge(p: Parser, uid: bool = False) -> ExpungeArgs:
    uidset = None
    if uid:
        p.sp()
        uidset = parse_seq_set(p)
    p.end()
    return ExpungeArgs(uid, uidset)


@command("EXPUNGE", ONLY_SELECTED, parse=parse_expunge, uid=True, capabilities=("UIDPLUS",))
async def expunge(s: Session, tag: str, args: ExpungeArgs) -> None:
    v = s.selected()
    uidset = None if args.uids is None else s.seq_set(args.uids, True)
    if v.readonly:
        await s.send(f"{tag} NO [READ-ONLY] The mailbox is open read-only.\r\n".encode())
        return
    await s.sync_out(expunge=False)
    star = v.uids[-1] if v.uids else 0
    doomed = [m for m in v.msgs if "\\Deleted" in v.flags.get(m.uid, m.flags)
              and (uidset is None or condstore.in_ranges(m.uid, uidset, star))]
    v.mailbox.expunge(doomed)
    await s.sync_out()
    code = ""
    if s.condstore:     # RFC 7162 3.1.8: the HIGHESTMODSEQ after the expunge
        hms = condstore.highestmodseq(v.mailbox, v.msgs)
        code = f"[HIGHESTMODSEQ {hms}] " if hms is not None else ""
    await s.send(f"{tag} OK {code}Expunge completed.\r\n".encode())


# -- FETCH -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FetchArgs:
    uid: bool
    set: SeqSet
    items: list       # item names (str) and fetch.Section objects
    changedsince: int | None = None     # CONDSTORE (CHANGEDSINCE n)
    vanished: bool = False              # QRESYNC (VANISHED)


def parse_fetch(p: Parser, uid: bool = False) -> FetchArgs:
    p.sp()
    ranges = parse_seq_set(p)
    p.sp()
    items = fetchmod.parse_fetch_atts(p)
    changedsince, want_vanished = condstore.parse_fetch_modifiers(p)
    return FetchArgs(uid, ranges, items, changedsince, want_vanished)


@command("FETCH", ONLY_SELECTED, parse=parse_fetch, uid=True, capabilities=("BINARY", "OBJECTID", "PREVIEW"))
async def fetch(s: Session, tag: str, args: FetchArgs) -> None:
    uid, items, changedsince = args.uid, args.items, args.changedsince
    ranges = s.seq_set(args.set, uid)
    if args.vanished and not (uid and s.qresync):
        raise ParseError("VANISHED needs UID FETCH and ENABLE QRESYNC first")
    if changedsince is not None or "MODSEQ" in items:
        s.enable_condstore()
    await s.sync_out(expunge=uid)
    v = s.selected()
    indices = s.resolve(ranges, uid)
    if uid and "UID" not in items:
        items = ["UID"] + items
    if changedsince is not None:
        indices = [i for i in indices if v.msgs[i].modseq > changedsince]
        if args.vanished:
            gone = condstore.vanished(v.mailbox, changedsince, ranges, v.uids[-1] if v.uids else 0)
            if gone:
                s.out(b"* VANISHED (EARLIER) " + condstore.uid_set(gone).encode() + b"\r\n")
    need_body = fetchmod.needs_body(items)
    mark = fetchmod.sets_seen(items) and not v.readonly
    seen_set = False
    if mark:
        changes = [(v.msgs[i], v.flags[v.msgs[i].uid] | {"\\Seen"}) for i in indices
                   if "\\Seen" not in v.flags[v.msgs[i].uid]]
        if changes:
            v.mailbox.set_flags(changes)
            seen_set = True
            for m, f in changes:
                v.flags[m.uid] = f
            if "FLAGS" not in items:
                items = items + ["FLAGS"]
    # RFC 7162 3.1.4: MODSEQ with CHANGEDSINCE, and whenever the FETCH changed flags (\Seen).
    if "MODSEQ" not in items and (changedsince is not None or (s.condstore and seen_set)):
        items = items + ["MODSEQ"]
    mbox = v.mailbox
    cacheable = all(not isinstance(it, fetchmod.Section) and it in fetchmod.CACHEABLE for it in items)
    pending = 0
    buf: list[bytes] = []
    for i in indices:
        m = v.msgs[i]
        parsed = None
        memo = s.memo(mbox, m) if cacheable and need_body else None
        if need_body and not fetchmod.cached_only(items, memo):
            try:
                parsed = fetchmod.Parsed(mbox.read(m))
            except StorageError:
                continue  # expunged by someone else: nothing to say about it
        try:
            data = fetchmod.render(items, m, mbox, v.flags_of(m), parsed, uid, memo)
        except fetchmod.UnknownCte as e:    # RFC 3516 4.3
            s.out(b"".join(buf))
            await s.send(f"{tag} NO [UNKNOWN-CTE] {e}.\r\n".encode())
            return
        # One write per 256 KB, not per message: a socket send per line costs more than the line.
        buf.append(b"* %d FETCH " % (i + 1) + data + b"\r\n")
        pending += len(data)
        if pending > 256 * 1024:
            s.out(b"".join(buf))
            buf.clear()
            await s.flush()
            pending = 0
    if buf:
        s.out(b"".join(buf))
    if cacheable and need_body:
        mbox.flush_cached()
    await s.send(f"{tag} OK Fetch completed.\r\n".encode())


# -- STORE -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StoreArgs:
    uid: bool
    set: SeqSet
    mode: str                  # "+", "-" or "="
    silent: bool
    flags: frozenset[str]      # canonical names
    unchangedsince: int | None = None   # CONDSTORE (UNCHANGEDSINCE n)


def parse_store(p: Parser, uid: bool = False) -> StoreArgs:
    p.sp()
    ranges = parse_seq_set(p)
    p.sp()
    unchangedsince = condstore.parse_store_modifiers(p)
    mode = "="
    if p.peek() in (43, 45):
        mode = chr(p.b[p.i])
        p.i += 1
    p.expect(b"FLAGS")
    silent = p.maybe(b".SILENT")
    p.sp()
    if p.peek() == 40:
        flags = p.flag_list()
    else:
        flags = [p.flag()]
        while not p.at_end():
            p.sp()
            flags.append(p.flag())
    p.end()
    flags = [canonical_flag(f) for f in flags]
    for f in flags:
        if f.startswith("\\") and f not in SYSTEM_FLAGS:
            raise ParseError(f"the flag {f} cannot be stored")
    return StoreArgs(uid, ranges, mode, silent, frozenset(flags), unchangedsince)


@command("STORE", ONLY_SELECTED, parse=parse_store, uid=True)
async def store(s: Session, tag: str, args: StoreArgs) -> None:
    uid, mode, fs, unchangedsince = args.uid, args.mode, args.flags, args.unchangedsince
    ranges = s.seq_set(args.set, uid)
    if unchangedsince is not None:
        s.enable_condstore()
    v = s.selected()
    if v.readonly:
        await s.send(f"{tag} NO [READ-ONLY] The mailbox is open read-only.\r\n".encode())
        return
    await s.sync_out(expunge=uid)
    indices = s.resolve(ranges, uid)
    changes = []
    modified = []     # UNCHANGEDSINCE failed: changed by someone since the client's MODSEQ
    if unchangedsince is not None:
        kept = []
        for i in indices:
            if v.msgs[i].modseq > unchangedsince:
                modified.append(v.msgs[i].uid if uid else i + 1)
            else:
                kept.append(i)
        indices = kept
    for i in indices:
        m = v.msgs[i]
        cur = v.flags[m.uid]
        if mode == "+":
            new = cur | fs
        elif mode == "-":
            new = frozenset(f for f in cur if f not in fs and (f.startswith("\\") or
                                                               f.lower() not in {x.lower() for x in fs}))
        else:
            new = fs
        if new != cur:
            changes.append((m, new))
    if changes:
        before = {m.uid: v.flags[m.uid] for m, _ in changes}
        v.mailbox.set_flags(changes)
        for m, new in changes:
            v.flags[m.uid] = new
        if s.server.config.imapsieve is not None:    # RFC 6785: FLAG events
            await imapsieve.after_flag_change(s, v.name, [(m.uid, before[m.uid], new) for m, new in changes])
        added = {f for f in fs if not f.startswith("\\")} - v.keywords
        if added and mode != "-":
            # A keyword new to this mailbox: tell the client before the FETCH answers (as Dovecot).
            v.keywords |= added
            s.out(("\r\n".join(s.flags_lines(v)) + "\r\n").encode("utf-8", "replace"))
    if not args.silent:
        lines = []
        for i in indices:
            m = v.msgs[i]
            extra = b" UID %d" % m.uid if uid or s.qresync else b""
            if s.condstore:
                extra += b" MODSEQ (%d)" % condstore.msg_modseq(m)
            lines.append(b"* %d FETCH (FLAGS " % (i + 1) + v.flags_of(m) + extra + b")\r\n")
        s.out(b"".join(lines))
    elif s.condstore and changes:
        # RFC 7162 3.1.3: even .SILENT tells the new MODSEQ of what changed.
        pos = {m.uid: i for i, m in enumerate(v.msgs, 1)}
        s.out(b"".join(b"* %d FETCH (" % pos[m.uid] + (b"UID %d " % m.uid if uid or s.qresync else b"")
                       + b"MODSEQ (%d))\r\n" % condstore.msg_modseq(m) for m, _ in changes))
    if modified:
        await s.send(f"{tag} OK [MODIFIED {condstore.uid_set(modified)}] Conditional STORE failed.\r\n"
                     .encode())
        return
    await s.send(f"{tag} OK Store completed.\r\n".encode())


# -- COPY / MOVE -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CopyArgs:
    uid: bool
    set: SeqSet
    mailbox: str


def parse_copy(p: Parser, uid: bool = False) -> CopyArgs:
    p.sp()
    ranges = parse_seq_set(p)
    p.sp()
    dest_name = p.mailbox()
    p.end()
    return CopyArgs(uid, ranges, dest_name)


@command("COPY", ONLY_SELECTED, parse=parse_copy, uid=True)
async def copy(s: Session, tag: str, args: CopyArgs) -> None:
    await _copy(s, tag, args, move=False)


@command("MOVE", ONLY_SELECTED, parse=parse_copy, uid=True, capabilities=("MOVE",))
async def move(s: Session, tag: str, args: CopyArgs) -> None:
    await _copy(s, tag, args, move=True)


async def _copy(s: Session, tag: str, args: CopyArgs, move: bool) -> None:
    uid = args.uid
    ranges = s.seq_set(args.set, uid)
    v = s.selected()
    if move and v.readonly:
        await s.send(f"{tag} NO [READ-ONLY] The mailbox is open read-only.\r\n".encode())
        return
    await s.sync_out(expunge=uid)
    indices = s.resolve(ranges, uid)
    try:
        dest = s.storage.open(args.mailbox)
    except StorageError as e:
        if e.code == "NONEXISTENT":
            e.code = "TRYCREATE"
        raise
    try:
        msgs = [v.msgs[i] for i in indices]
        for m in msgs:
            m.flags = v.flags[m.uid]
        quota = getattr(s.storage, "quota", None)
        if move and quota is not None:
            quota.moving = True      # RFC 9208 / Dovecot: a MOVE within the quota root frees what it takes
        try:
            new_uids = v.mailbox.copy_to(msgs, dest) if msgs else []
        finally:
            if quota is not None:
                quota.moving = False
        dest_validity = dest.uidvalidity
        s.server.recent.add(dest, new_uids)     # \Recent for the next session that selects it
    finally:
        dest.close()
    if new_uids and s.server.config.imapsieve is not None:   # RFC 6785: COPY (and MOVE) into a mailbox
        await imapsieve.after_copy(s, v.name, args.mailbox, list(new_uids))
    code = ""
    if msgs:
        # Two lists in the same order: source UID i was copied to destination UID i.
        code = (f"[COPYUID {dest_validity} {','.join(str(m.uid) for m in msgs)} "
                f"{','.join(str(u) for u in new_uids)}] ")
    if move:
        if code:
            s.out(f"* OK {code}Moved.\r\n".encode())
        v.mailbox.expunge(msgs)
        await s.sync_out()
        await s.send(f"{tag} OK Move completed.\r\n".encode())
    else:
        await s.sync_out(expunge=uid)
        await s.send(f"{tag} OK {code}Copy completed.\r\n".encode())


# -- CANCELUPDATE (CONTEXT=SEARCH, RFC 5267 4.3) ---------------------------------------------------------

@dataclass(frozen=True)
class CancelUpdateArgs:
    tags: tuple[str, ...]


def parse_cancelupdate(p: Parser, uid: bool = False) -> CancelUpdateArgs:
    tags = []
    while not p.at_end():
        p.sp()
        tags.append(p.string().decode("utf-8", "replace"))
    if not tags:
        raise ParseError("CANCELUPDATE needs the tag of a search")
    return CancelUpdateArgs(tuple(tags))


@command("CANCELUPDATE", ONLY_SELECTED, parse=parse_cancelupdate)
async def cancelupdate(s: Session, tag: str, args: CancelUpdateArgs) -> None:
    context.cancel(s, list(args.tags))
    await s.send(f"{tag} OK Cancelupdate completed.\r\n".encode())


# -- SEARCH / SORT / THREAD ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchArgs:
    uid: bool
    returns: list[str] | None    # ESEARCH RETURN (...) options, or None for a plain SEARCH answer
    criteria: tuple              # search.parse_search's tree (`$` still unresolved)


def parse_search(p: Parser, uid: bool = False) -> SearchArgs:
    p.sp()
    opts = esearch.parse_return(p)
    tree = searchmod.parse_search(p)
    p.end()
    return SearchArgs(uid, opts, tree)


@command("SEARCH", ONLY_SELECTED, parse=parse_search, uid=True,
         capabilities=("ESEARCH", "SEARCHRES", "CONTEXT=SEARCH"))
async def search(s: Session, tag: str, args: SearchArgs) -> None:
    uid, opts = args.uid, args.returns
    if opts is None and s.rev2:
        opts = ["ALL"]       # IMAP4rev2 (RFC 9051 6.4.4): SEARCH answers ESEARCH
    tree = esearch.resolve_saved(args.criteria, s.saved)
    with_modseq = searchmod.uses_modseq(tree)
    if with_modseq:
        s.enable_condstore()
    await s.sync_out(expunge=uid)
    hits = []
    hit_uids: list[int] = []
    modseqs: list[int] = []
    if opts is not None and "UPDATE" in opts:     # CONTEXT=SEARCH (RFC 5267): keep it alive
        if not context.add(s, tag, uid, opts, tree, s.matching(tree)):
            await s.send(f'{tag} NO [NOUPDATE "{tag}"] Too many searches kept up to date.\r\n'.encode())
            return
    found = None if with_modseq else s.matching_indices(tree)
    if found is not None:       # flags and numbers only: answered from the view
        uids = s.selected().uids
        hit_uids = [uids[i] for i in found]
        hits = hit_uids if uid else [i + 1 for i in found]
    else:
        for m, c in s.matching(tree):
            hits.append(m.uid if uid else c.seq)
            hit_uids.append(m.uid)
            if with_modseq:
                modseqs.append(condstore.msg_modseq(m))
    top = max(modseqs, default=0)
    if opts is not None:
        if "SAVE" in opts:
            s.saved = esearch.saved_uids(opts, hit_uids)
        if with_modseq and hits and not {"ALL", "COUNT"} & set(opts):
            # RFC 4731 3.2 / RFC 7162 3.1.5: with MIN and/or MAX alone, the MODSEQ of those.
            top = max(modseqs[i] for i in {0, len(hits) - 1} if
                      (i == 0 and "MIN" in opts) or (i == len(hits) - 1 and "MAX" in opts))
        await s.send(esearch.response(tag, uid, opts, hits, top if with_modseq else None)
                     + f"{tag} OK Search completed.\r\n".encode())
        return
    tail = f" (MODSEQ {top})" if with_modseq and hits else ""
    await s.send(("* SEARCH" + "".join(f" {h}" for h in hits) + tail + "\r\n"
                  f"{tag} OK Search completed.\r\n").encode())


@dataclass(frozen=True)
class SortArgs:
    uid: bool
    returns: list[str] | None      # ESORT RETURN (...) options
    sort_keys: list[tuple[str, bool]]   # (key, reverse)
    criteria: tuple


def parse_sort(p: Parser, uid: bool = False) -> SortArgs:
    p.sp()
    opts = esearch.parse_return(p)         # ESORT (RFC 5267)
    criteria = sort_thread.parse_sort_criteria(p)
    p.sp()
    tree = searchmod.parse_search(p)
    p.end()
    return SortArgs(uid, opts, criteria, tree)


@command("SORT", ONLY_SELECTED, parse=parse_sort, uid=True, capabilities=("SORT", "ESORT", "SORT=DISPLAY"))
async def sort(s: Session, tag: str, args: SortArgs) -> None:
    uid, opts = args.uid, args.returns
    tree = esearch.resolve_saved(args.criteria, s.saved)
    await s.sync_out(expunge=uid)
    idx, uids = _matching_uids(s, tree)
    order = None if idx is None else sort_thread.known_order(uids, args.sort_keys, s.key_table)
    if order is not None and idx is not None:      # the same messages as the last time: that order
        ordered_uids = [uids[k] for k in order]
        nums = ordered_uids if uid else [idx[k] + 1 for k in order]
    else:
        found = s.matching(tree)
        ordered = sort_thread.sort(found, args.sort_keys, s.key_table, s.with_headers)
        s.v_flush()
        ordered_uids = [m.uid for m, _ in ordered]
        nums = ordered_uids if uid else [c.seq for _, c in ordered]
    if opts is not None:
        if "SAVE" in opts:
            s.saved = esearch.saved_uids(opts, ordered_uids)
        await s.send(esearch.response(tag, uid, opts, nums, None, ordered=True)
                     + f"{tag} OK Sort completed.\r\n".encode())
        return
    await s.send(("* SORT" + "".join([" " + str(n) for n in nums]) + "\r\n"
                  f"{tag} OK Sort completed.\r\n").encode())


def _matching_uids(s: Session, tree) -> tuple[list[int] | None, tuple]:
    """(indices into the view, their UIDs) of the messages a flag-and-number search matches
    (SelectedMailbox.matching_indices), without a pair per message; (None, ()) for other searches."""
    idx = s.matching_indices(tree)
    if idx is None:
        return None, ()
    all_uids = s.selected().uids
    return idx, tuple(all_uids) if len(idx) == len(all_uids) else tuple([all_uids[i] for i in idx])


@dataclass(frozen=True)
class ThreadArgs:
    uid: bool
    algorithm: str
    criteria: tuple


def parse_thread(p: Parser, uid: bool = False) -> ThreadArgs:
    p.sp()
    algorithm = p.atom().upper()
    if algorithm not in sort_thread.THREAD_ALGORITHMS:
        raise ParseError(f"unknown THREAD algorithm {algorithm} "
                         f"({', '.join(sort_thread.THREAD_ALGORITHMS)})")
    p.sp()
    sort_thread.parse_charset(p)
    p.sp()
    tree = searchmod.parse_search(p)
    p.end()
    return ThreadArgs(uid, algorithm, tree)


@command("THREAD", ONLY_SELECTED, parse=parse_thread, uid=True,
         capabilities=tuple("THREAD=" + a for a in sort_thread.THREAD_ALGORITHMS))
async def thread(s: Session, tag: str, args: ThreadArgs) -> None:
    tree = esearch.resolve_saved(args.criteria, s.saved)
    await s.sync_out(expunge=args.uid)
    idx, uids = _matching_uids(s, tree)
    text = None
    if idx is not None:       # the same messages under the same numbers as the last time: that answer
        ident = (uids, None if args.uid else tuple([i + 1 for i in idx]))
        text = sort_thread.known_thread(ident, args.algorithm, args.uid, s.key_table)
    if text is None:
        found = s.matching(tree)
        text = sort_thread.thread(found, args.algorithm, args.uid, s.key_table, s.with_headers)
        s.v_flush()
    await s.send(f"* THREAD{' ' + text if text else ''}\r\n{tag} OK Thread completed.\r\n".encode())
