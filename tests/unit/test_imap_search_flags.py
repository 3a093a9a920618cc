"""search.flag_predicate: a search on flags, numbers and MODSEQ answered from a view's memory gives
exactly the answers of search.matches on full candidates."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from fetchdeliver.imapserver import search
from fetchdeliver.imapserver.protocol import Parser

FLAGS = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Work", "$work", "Junk"]

_leaf = st.one_of(
    st.sampled_from(["ALL", "SEEN", "UNSEEN", "FLAGGED", "UNFLAGGED", "DELETED", "UNDELETED", "ANSWERED",
                     "DRAFT", "UNDRAFT", "NEW", "OLD", "RECENT", "KEYWORD $Work", "UNKEYWORD $WORK",
                     "KEYWORD junk", "1:3", "2,5:*", "*", "UID 2:4", "UID 10:*", "MODSEQ 3"]))
_keys = st.recursive(_leaf, lambda inner: st.one_of(
    st.builds(lambda a: f"NOT {a}", inner),
    st.builds(lambda a, b: f"OR {a} {b}", inner, inner),
    st.builds(lambda a, b: f"({a} {b})", inner, inner)), max_leaves=6)
_msgs = st.lists(st.tuples(st.frozensets(st.sampled_from(FLAGS)), st.booleans(), st.integers(1, 6)),
                 min_size=0, max_size=8)


@settings(max_examples=300, deadline=None)
@given(_keys, _msgs)
def test_flag_predicate_answers_as_matches(text, msgs):
    tree = search.parse_search(Parser(text.encode()))
    uids = [3 * i + 2 for i in range(len(msgs))]
    max_uid = uids[-1] if uids else 0
    pred = search.flag_predicate(tree, len(msgs), max_uid)
    assert pred is not None
    for seq, (uid, (flags, recent, modseq)) in enumerate(zip(uids, msgs), 1):
        m = SimpleNamespace(uid=uid, modseq=modseq)
        cand = search.Candidate(seq, uid, flags, recent, None, 0.0, None, modseq=modseq)
        want = search.matches(tree, cand, len(msgs), max_uid)
        assert bool(pred(seq, m, flags, recent)) == want, (text, seq, flags, recent)
        if search.flags_alone(tree):    # the view may then keep one answer per flag set
            assert bool(pred(1, None, flags, False)) == want, (text, seq, flags, recent)


def test_text_keys_need_a_candidate():
    for text in ("SUBJECT x", "SEEN BODY x", "OR SEEN LARGER 5", "NOT SENTON 1-Jan-2020", "SINCE 1-Jan-2020"):
        assert search.flag_predicate(search.parse_search(Parser(text.encode())), 1, 1) is None

