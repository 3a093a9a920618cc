"""The selected mailbox as a session sees it: `View` (the sequence numbers and flags the client knows)
and `SelectedMailbox`, the session's side of it that the commands use: the change feed (`sync_out`:
EXISTS / EXPUNGE or VANISHED / FETCH FLAGS after each command), sequence-set resolution, the
content memos for FETCH/SEARCH/SORT/THREAD, and the IDLE watch."""

from __future__ import annotations

import asyncio
import bisect
from typing import TYPE_CHECKING, Any

from fetchdeliver.imapserver import condstore
from fetchdeliver.imapserver import search as searchmod
from fetchdeliver.imapserver import sort_thread
from fetchdeliver.imapserver.commands.registry import AUTH, Bye
from fetchdeliver.imapserver.protocol import ParseError
from fetchdeliver.storage.base import SYSTEM_FLAGS, StorageError


class View:
    """The selected mailbox as the client knows it."""

    def __init__(self, mailbox, readonly: bool, name: str | None = None) -> None:
        self.mailbox = mailbox
        # The name the client selected: with mounted stores (imapserver/mounts.py) a backend's
        # own name for the mailbox ("INBOX" of an archive tree) may differ from it.
        self.name = mailbox.name if name is None else name
        self.readonly = readonly
        self.msgs: list = []          # MessageInfo in sequence order
        self.uids: list[int] = []
        self.flags: dict[int, frozenset] = {}
        self.recent: set[int] = set()
        self.keywords: set[str] = set()   # the keywords announced in FLAGS
        self.uidvalidity = mailbox.uidvalidity
        self.synced: list | None = None   # the list Mailbox.sync() returned at the last diff
        self.rev2 = False     # IMAP4rev2 (RFC 9051): no \Recent flags, no RECENT responses

    def flags_of(self, m) -> bytes:
        return flag_list(self.flags.get(m.uid, m.flags), m.uid in self.recent)


_FLAG_LISTS: dict = {}


def flag_list(flags, recent: bool = False) -> bytes:
    """"(\\Seen $Work)": a mailbox has few distinct flag sets, so the answers are kept."""
    key = (flags, recent)
    try:
        got = _FLAG_LISTS.get(key)
    except TypeError:     # a plain set: not hashable, not kept
        return _flag_list(flags, recent)
    if got is None:
        if len(_FLAG_LISTS) > 4096:
            _FLAG_LISTS.clear()
        got = _FLAG_LISTS[key] = _flag_list(flags, recent)
    return got


def _flag_list(flags, recent: bool) -> bytes:
    sys_part = [f for f in SYSTEM_FLAGS if f in flags]
    kws = sorted(f for f in flags if not f.startswith("\\"))
    if recent:
        sys_part.append("\\Recent")
    return ("(" + " ".join(sys_part + kws) + ")").encode("utf-8", "replace")


class SelectedMailbox:
    """The part of a Session that deals with its selected mailbox (a mixin: Session has the
    attributes used here: view, state, server, saved, condstore, qresync, changed, loop, out/send)."""

    view: View | None
    state: str
    server: Any
    saved: set[int]
    condstore: bool
    qresync: bool
    changed: asyncio.Event
    loop: asyncio.AbstractEventLoop
    _watch_tokens: list
    _keys_used: frozenset[str] = frozenset()     # derived-key tables a command used (v_flush keeps their additions)

    if TYPE_CHECKING:
        def out(self, data: bytes) -> None: ...

        async def send(self, data: bytes) -> None: ...

    def selected(self) -> View:
        """The selected mailbox's view (the state machine calls selected-state commands only with one)."""
        v = self.view
        if v is None:
            raise RuntimeError("no mailbox is selected")
        return v

    def enable_condstore(self) -> None:
        """CONDSTORE on (RFC 7162 3.1): the first enabling command in the selected state is told
        the mailbox's HIGHESTMODSEQ."""
        if not self.condstore and self.view is not None:
            hms = condstore.highestmodseq(self.view.mailbox, self.view.msgs)
            self.out(f"* OK [HIGHESTMODSEQ {hms}] Highest.\r\n".encode() if hms is not None else
                     b"* OK [NOMODSEQ] No permanent modsequences.\r\n")
        self.condstore = True

    @staticmethod
    def flags_lines(view) -> list[str]:
        """The FLAGS and PERMANENTFLAGS answers for the keywords the client has been told of."""
        flags = " ".join(list(SYSTEM_FLAGS) + sorted(view.keywords))
        perm = "" if view.readonly else flags + (" \\*" if view.mailbox.permanent_keywords else "")
        return [f"* FLAGS ({flags})", f"* OK [PERMANENTFLAGS ({perm})] Flags permitted."]

    def close_view(self) -> None:
        if self.view is not None:
            self.unwatch()
            self.view.mailbox.close()
            self.view = None
            self.state = AUTH

    def resolve(self, ranges, uid: bool) -> list[int]:
        """Indices into view.msgs for a sequence set (by UID when `uid`)."""
        v = self.selected()
        n = len(v.msgs)
        idx: set[int] = set()
        if uid:
            star = v.uids[-1] if v.uids else 0
            for a, b in ranges:
                a = star if a is None else a
                b = star if b is None else b
                if a > b:
                    a, b = b, a
                lo = bisect.bisect_left(v.uids, a)
                hi = bisect.bisect_right(v.uids, b)
                idx.update(range(lo, hi))
        else:
            for a, b in ranges:
                a = n if a is None else a
                b = n if b is None else b
                if a > b:
                    a, b = b, a
                if b > n or a < 1:
                    raise ParseError(f"invalid message sequence number {b if b > n else a} "
                                     f"(the mailbox has {n} messages)")
                idx.update(range(a - 1, b))
        return sorted(idx)

    def seq_set(self, parsed, uid: bool) -> list:
        """A parsed sequence set as ranges; `$` (RFC 5182) as the saved search result's UIDs or
        sequence numbers."""
        if parsed != "$":
            return parsed
        if uid:
            return [(u, u) for u in sorted(self.saved)]
        return [(i, i) for i, m in enumerate(self.selected().msgs, 1) if m.uid in self.saved]

    def memo(self, mbox, m) -> dict | None:
        """What is kept about a message's content: the store's index, else the server's memory."""
        memo = mbox.cached(m)
        if memo is None:
            memo = self.server.cache.entry(mbox, self.selected().uidvalidity, m.uid)
        return memo

    def matching(self, tree) -> list:
        """(MessageInfo, search.Candidate) of every message of the view that matches `tree`, in order.
        A search on flags, numbers and MODSEQ alone answers from the view's flags with a
        `search.Hit` (the sequence number) in place of a candidate, and builds nothing else."""
        v = self.selected()
        max_seq = len(v.msgs)
        max_uid = v.uids[-1] if v.uids else 0
        found = self.matching_indices(tree)
        if found is not None:
            msgs, Hit = v.msgs, searchmod.Hit
            return [(msgs[i], Hit(i + 1)) for i in found]
        with_memo = searchmod.needs_text(tree)
        mbox = v.mailbox
        out = []
        skip: set = set()
        for ok, known in searchmod.prefilter(tree, mbox):
            skip |= known - ok          # known not to match one key of the AND
        for i, m in enumerate(v.msgs, 1):
            if m.uid in skip:
                continue
            c = searchmod.Candidate(i, m.uid, v.flags.get(m.uid, m.flags), m.uid in v.recent,
                                    lambda m=m: mbox.size(m), m.internaldate, lambda m=m: _read_or_empty(mbox, m),
                                    memo=self.memo(mbox, m) if with_memo else None, modseq=m.modseq)
            if searchmod.matches(tree, c, max_seq, max_uid):
                out.append((m, c))
        mbox.flush_cached()
        return out

    def matching_indices(self, tree) -> list[int] | None:
        """Indices into the view's messages of those that match `tree`, when it asks only for
        what the view holds (flags, \\Recent, numbers, MODSEQ: search.flag_predicate); else None."""
        v = self.selected()
        msgs = v.msgs
        pred = searchmod.flag_predicate(tree, len(msgs), v.uids[-1] if v.uids else 0)
        if pred is None:
            return None
        if pred is searchmod.EVERY:
            return list(range(len(msgs)))
        fget, recent = v.flags.get, v.recent
        if searchmod.flags_alone(tree):
            # The answer depends on the flag set alone, and a mailbox has few distinct ones.
            memo: dict = {}
            out = []
            try:
                for i, m in enumerate(msgs):
                    fl = fget(m.uid, m.flags)
                    ok = memo.get(fl)
                    if ok is None:
                        ok = memo[fl] = bool(pred(i + 1, m, fl, False))
                    if ok:
                        out.append(i)
                return out
            except TypeError:       # a store's flags that are a plain set: not hashable
                pass
        return [i for i, m in enumerate(msgs) if pred(i + 1, m, fget(m.uid, m.flags), m.uid in recent)]

    def with_headers(self, m, c):
        """`c`, or a candidate for `m` that reads header fields through the store's index."""
        if c.memo is not None:
            return c
        v = self.selected()
        mbox = v.mailbox
        return searchmod.Candidate(c.seq, m.uid, v.flags.get(m.uid, m.flags), m.uid in v.recent,
                                   lambda: mbox.size(m), m.internaldate, lambda: _read_or_empty(mbox, m),
                                   memo=self.memo(mbox, m), modseq=m.modseq)

    def key_table(self, name: str) -> dict | None:
        """The server-wide {uid: value} of one content-derived key (a sort key, threading facts)
        for the selected mailbox; on first use filled with what the store kept of it
        (`Mailbox.stored_keys`, e.g. the Maildir index), and what is added is kept there by v_flush()."""
        v = self.selected()
        cache = self.server.cache
        table = cache.key_table(v.mailbox, v.uidvalidity, name)
        if table is None or name not in sort_thread.STORED:
            return table
        kept = cache.key_table(v.mailbox, v.uidvalidity, "stored:" + name)   # {uid: None}; None: loaded
        if None not in kept:
            kept[None] = None
            stored = getattr(v.mailbox, "stored_keys", None)   # a plugin's store may lack it
            for uid, value in ((stored(name) if stored is not None else None) or {}).items():
                key = sort_thread.decode_key(name, value)
                if key is not None:
                    table.setdefault(uid, key)
                    kept[uid] = None
        self._keys_used = self._keys_used | {name}
        return table

    def v_flush(self) -> None:
        """Keep what sorting and threading cached (header fields, derived keys) in the store's index."""
        v = self.selected()
        v.mailbox.flush_cached()
        used, self._keys_used = self._keys_used, frozenset()
        cache = self.server.cache
        for name in used:
            table = cache.key_table(v.mailbox, v.uidvalidity, name)
            kept = cache.key_table(v.mailbox, v.uidvalidity, "stored:" + name)
            if table is None or kept is None or len(kept) > len(table):
                continue
            new = {u: sort_thread.encode_key(name, k) for u, k in table.items() if u not in kept}
            store = getattr(v.mailbox, "store_keys", None)
            if new and store is not None:
                store(name, new)
            kept.update(dict.fromkeys(new))

    async def sync_out(self, expunge: bool = True) -> None:
        """Re-read the selected mailbox; tell the client what changed."""
        v = self.view
        if v is None:
            return
        try:
            msgs: list = v.mailbox.sync()
        except StorageError as e:
            if e.code == "NONEXISTENT":
                raise Bye("The selected mailbox was deleted.") from None
            raise
        if v.mailbox.uidvalidity != v.uidvalidity:
            raise Bye("The mailbox's UIDVALIDITY changed; please resynchronize.")
        if msgs is v.synced and len(msgs) == len(v.msgs):
            return    # the store handed back the very list we diffed last time: nothing changed
        v.synced = msgs
        n = len(v.msgs)
        if len(msgs) > n and (n == 0 or (msgs[n - 1] is v.msgs[-1] and
                                         all(a is b for a, b in zip(v.msgs, msgs)))):
            # The known messages are the very objects we hold (the store changes an object only
            # by replacing it): only new messages to announce.
            out: list = []
            self._new_keywords(v, msgs[n:], out)
            await self._announce(v, msgs[n:], out)
            return
        current = {m.uid: m for m in msgs}
        out = []
        if expunge:
            i = len(v.msgs) - 1
            gone = []
            while i >= 0:
                m = v.msgs[i]
                if m.uid not in current:
                    gone.append(m.uid)
                    if not self.qresync:
                        out.append(b"* %d EXPUNGE\r\n" % (i + 1))
                    del v.msgs[i]
                    del v.uids[i]
                    v.flags.pop(m.uid, None)
                    v.recent.discard(m.uid)
                i -= 1
            if gone and self.qresync:     # RFC 7162 3.2.10: VANISHED replaces EXPUNGE
                out.append(b"* VANISHED " + condstore.uid_set(gone).encode() + b"\r\n")
        last = v.uids[-1] if v.uids else 0
        new = [m for m in msgs if m.uid > last]
        changed = []
        for i, m in enumerate(v.msgs):
            cur = current.get(m.uid)
            if cur is None:
                continue
            v.msgs[i] = cur
            if cur.flags != v.flags.get(m.uid):
                v.flags[m.uid] = cur.flags
                changed.append((i, cur))
        self._new_keywords(v, [m for _, m in changed] + new, out)
        for i, cur in changed:
            extra = b""
            if self.qresync:
                extra += b" UID %d" % cur.uid
            if self.condstore:
                extra += b" MODSEQ (%d)" % condstore.msg_modseq(cur)
            out.append(b"* %d FETCH (FLAGS " % (i + 1) + v.flags_of(cur) + extra + b")\r\n")
        await self._announce(v, new, out)

    def _new_keywords(self, v: View, msgs: list, out: list) -> None:
        """A keyword another session or process set is announced in FLAGS before any FETCH uses it."""
        added = {f for m in msgs for f in m.flags if not f.startswith("\\")} - v.keywords
        if added:
            v.keywords |= added
            out.extend(ln.encode("utf-8", "replace") + b"\r\n" for ln in self.flags_lines(v))

    async def _announce(self, v: View, new: list, out: list) -> None:
        if new:
            taken = self.server.recent.take(v.mailbox, (m.uid for m in new), v.readonly)
            for m in new:
                v.msgs.append(m)
                v.uids.append(m.uid)
                v.flags[m.uid] = m.flags
                if (m.recent or m.uid in taken) and not v.rev2:
                    v.recent.add(m.uid)
            out.append(b"* %d EXISTS\r\n" % len(v.msgs))
            if not v.rev2:
                out.append(b"* %d RECENT\r\n" % len(v.recent))
            if not v.readonly and any(m.recent for m in new) and hasattr(v.mailbox, "take_recent"):
                v.mailbox.take_recent(new)
        if out:
            await self.send(b"".join(out))

    def watch(self, mbox) -> None:
        self.unwatch()
        loop = self.loop
        changed = self.changed

        def notify():
            loop.call_soon_threadsafe(changed.set)

        self._watch_tokens = self.server.watcher.subscribe(mbox.watch_paths(), notify)

    def unwatch(self) -> None:
        if self._watch_tokens:
            self.server.watcher.unsubscribe(self._watch_tokens)
            self._watch_tokens = []


def _read_or_empty(mbox, m) -> bytes:
    try:
        return mbox.read(m)
    except StorageError:
        return b""
