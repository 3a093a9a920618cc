"""vnd.dovecot.duplicate: Pigeonhole's older name of RFC 7352 duplicate (off by default); it
makes the duplicate test available."""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("vnd.dovecot.duplicate", default=False, implies=("duplicate",))
