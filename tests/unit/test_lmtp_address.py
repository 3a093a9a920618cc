"""The LMTP session's fast address parser gives exactly aiosmtpd's answers."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiosmtpd.smtp import SMTP

from fetchdeliver.sources.lmtp import _Session

CASES = ["<a@b.c>", "<>", "<a@b> SIZE=100", " <x.y+z@ex-ample.org> BODY=8BITMIME", "<one>", "<a..b@c>",
         '<"q"@x>', "<a@b>SIZE=1", "<a@[1.2.3.4]>", "<one+tag>  X=1 ", "<a@b", "a@b", "", "<.a@b>",
         "<a.@b>", "<a@-b>", "<a@b.>"]


def _both(arg: str, limit: int = 0):
    """(ours, aiosmtpd's); where aiosmtpd itself crashes, the right answer is "unparseable"."""
    s = _Session.__new__(_Session)
    s.local_part_limit = limit
    try:
        theirs = SMTP._getaddr(s, arg)
    except Exception:  # IndexError, AttributeError, ...: aiosmtpd answers 500 on these
        theirs = (None, None)
    return _Session._getaddr(s, arg), theirs


def test_known_forms():
    for arg in CASES:
        ours, theirs = _both(arg)
        assert ours == theirs, arg
    ours, theirs = _both("<" + "x" * 70 + "@example.org>", limit=64)
    assert ours == theirs == (None, None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # loaded CI
@given(st.text(alphabet="ab.@<>-+ \"[]=1Z", max_size=24))
def test_random_forms(arg):
    ours, theirs = _both(arg)
    assert ours == theirs
