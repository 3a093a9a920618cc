"""imapserver/recent.py: which UIDs a session takes as \\Recent, and the tracker's bound."""

from __future__ import annotations

from fetchdeliver.imapserver.recent import RecentTracker


class Box:
    def __init__(self, path: str, uidvalidity: int = 1) -> None:
        self.path, self.uidvalidity = path, uidvalidity


def test_taken_once_peeked_by_examine():
    t, a = RecentTracker(), Box("/m/a")
    t.add(a, [5, 6])
    assert t.take(a, [1, 5, 6], readonly=True) == {5, 6}
    assert t.pending(a) == {5, 6}
    assert t.take(a, [5]) == {5}
    assert t.take(a, [5, 6]) == {6}
    assert t.take(a, [5, 6]) == set() and t.pending(a) == set()


def test_keyed_by_mailbox_and_uidvalidity():
    t = RecentTracker()
    t.add(Box("/m/a", 1), [1])
    assert t.take(Box("/m/a", 2), [1]) == set()     # recreated mailbox: other UIDs
    assert t.take(Box("/m/b", 1), [1]) == set()
    assert t.take(Box("/m/a", 1), [1]) == {1}
    t.add(object(), [1])                            # no identity: nothing remembered
    assert t.take(object(), [1]) == set()


def test_bounded():
    t = RecentTracker(max_uids=10)
    boxes = [Box(f"/m/{i}") for i in range(3)]
    t.add(boxes[0], range(1, 5))
    t.add(boxes[1], range(1, 5))
    t.add(boxes[2], range(1, 5))     # 12 > 10: the oldest mailbox's go
    assert t.pending(boxes[0]) == set() and t.pending(boxes[2]) == {1, 2, 3, 4}
    t.add(boxes[2], range(5, 30))    # one mailbox alone: its newest 10 kept
    assert t.pending(boxes[2]) == set(range(20, 30)) and t.pending(boxes[1]) == set()
