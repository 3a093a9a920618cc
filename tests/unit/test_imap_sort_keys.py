"""THREAD's facts as the Maildir index keeps them (sort_thread.encode_key/decode_key)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=False)), st.text(), st.booleans(), st.text(),
       st.lists(st.text(), max_size=4))
def test_thread_facts_survive_the_store(date, subj, reply, mid, refs):
    """THREAD's facts as the index keeps them (sort_thread.encode_key/decode_key) come back equal
    and of the same types (sort_thread.py)."""
    from fetchdeliver.imapserver import sort_thread

    facts = (date, subj, reply, mid, tuple(refs))
    back = sort_thread.decode_key("thread:facts", sort_thread.encode_key("thread:facts", facts))
    assert back == facts and type(back[0]) is type(date)
