"""RFC 5235: spamtestplus, the :percent tag of spamtest (off by default, as in Pigeonhole)."""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("spamtestplus", default=False, implies=("spamtest",))
EXT.tag("spamtest", "percent")
