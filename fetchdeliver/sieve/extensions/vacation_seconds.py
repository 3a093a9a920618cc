"""RFC 6131: vacation-seconds, the :seconds tag of vacation (off by default, as in Pigeonhole)."""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("vacation-seconds", default=False, implies=("vacation",), delivery_only=True)
EXT.tag("vacation", "seconds", "number")
