"""vnd.dovecot.duplicate: Pigeonhole's older form of RFC 7352 duplicate (off by default).

The same `duplicate` test under the old name; as in Pigeonhole, a script cannot require both
names (the two would define one test twice).
"""

from __future__ import annotations

from fetchdeliver.sieve.extensions.duplicate import EXT as DUPLICATE
from fetchdeliver.sieve.registry import Extension

EXT = Extension("vnd.dovecot.duplicate", default=False, conflicts={
    "duplicate": "the (deprecated) vnd.dovecot.duplicate extension cannot be used together with the "
                 "duplicate extension"})

_spec = DUPLICATE.tests["duplicate"]
EXT.test("duplicate", args=_spec.args[0], tags={t: ty for t, (ty, _) in _spec.tags.items()},
         check=_spec.check)(_spec.run)
