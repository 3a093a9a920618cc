"""CONTEXT=SEARCH (RFC 5267 section 4): `SEARCH RETURN (UPDATE ...)` keeps the search alive; the client
is told of each change to its result with `* ESEARCH (TAG "t") [UID] ADDTO (0 set)` / `REMOVEFROM (0
set)` (the position is 0: a SEARCH result has no order), or with new MIN/MAX/COUNT values when those were
asked for, until `CANCELUPDATE "t"` or another mailbox is selected.

The session re-runs each live search against the mailbox as the client knows it whenever it writes to the
client (Session.flush), so the updates come after the EXISTS/EXPUNGE/FETCH that caused them and before
the tagged answer. In a context by sequence number, a message that was expunged is removed by the number
it had before the EXPUNGE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fetchdeliver.imapserver.condstore import uid_set

if TYPE_CHECKING:
    from fetchdeliver.imapserver.session import Session

MAX_CONTEXTS = 20     # per session; more: NO [NOUPDATE "tag"]


@dataclass
class SearchContext:
    tag: str
    uid: bool
    opts: tuple[str, ...]          # the other RETURN options (MIN, MAX, COUNT, ALL)
    tree: tuple
    view: Any                      # the View it was made on
    uids: set[int] = field(default_factory=set)
    seqs: dict[int, int] = field(default_factory=dict)     # uid -> its sequence number when last told


def contexts(s: Session) -> list[SearchContext]:
    got = getattr(s, "search_contexts", None)
    return got if got is not None else []


def add(s: Session, tag: str, uid: bool, opts: list[str], tree: tuple, hits: list) -> bool:
    """Keep the search alive; False when the session has too many already."""
    live = [c for c in contexts(s) if c.view is s.view and c.tag != tag]
    if len(live) >= MAX_CONTEXTS:
        return False
    ctx = SearchContext(tag, uid, tuple(o for o in opts if o not in ("UPDATE", "SAVE")), tree, s.view)
    ctx.uids = {m.uid for m, _ in hits}
    ctx.seqs = {m.uid: c.seq for m, c in hits}
    live.append(ctx)
    s.search_contexts = live
    return True


def cancel(s: Session, tags: list[str]) -> None:
    s.search_contexts = [c for c in contexts(s) if c.tag not in tags]


def updates(s: Session) -> tuple[bytes, bytes]:
    """The ESEARCH updates of every live search whose result changed (and the new results kept):
    (REMOVEFROM and MIN/MAX/COUNT lines, ADDTO lines)."""
    live = [c for c in contexts(s) if c.view is s.view and s.view is not None]
    if len(live) != len(contexts(s)):
        s.search_contexts = live
    if not live:
        return b"", b""
    out = []
    adds = []
    for ctx in live:
        try:
            hits = s.matching(ctx.tree)
        except Exception:     # a message unreadable meanwhile: try again at the next write
            continue
        now = {m.uid: c.seq for m, c in hits}
        added = [u for u in now if u not in ctx.uids]
        removed = [u for u in ctx.uids if u not in now]
        if not added and not removed:
            ctx.seqs = now
            continue
        head = f'* ESEARCH (TAG "{ctx.tag}")' + (" UID" if ctx.uid else "")
        summary = [o for o in ctx.opts if o in ("MIN", "MAX", "COUNT")]
        if summary:
            nums = sorted(now) if ctx.uid else sorted(now.values())
            parts = []
            if nums and "MIN" in summary:
                parts.append(f"MIN {nums[0]}")
            if nums and "MAX" in summary:
                parts.append(f"MAX {nums[-1]}")
            if "COUNT" in summary:
                parts.append(f"COUNT {len(nums)}")
            if parts:
                out.append(f"{head} {' '.join(parts)}\r\n")
        else:
            if removed:
                nums = sorted(removed) if ctx.uid else sorted(ctx.seqs[u] for u in removed if u in ctx.seqs)
                if nums:
                    out.append(f"{head} REMOVEFROM (0 {uid_set(nums)})\r\n")
            if added:
                nums = sorted(added) if ctx.uid else sorted(now[u] for u in added)
                adds.append(f"{head} ADDTO (0 {uid_set(nums)})\r\n")
        ctx.uids = set(now)
        ctx.seqs = now
    return "".join(out).encode(), "".join(adds).encode()
