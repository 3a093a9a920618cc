"""RFC 4790 9.1 via RFC 5228 2.7.3: the i;ascii-numeric comparator (require "comparator-i;ascii-numeric")."""

from __future__ import annotations

from fetchdeliver.sieve.matching import Numeric
from fetchdeliver.sieve.registry import Extension

EXT = Extension("comparator-i;ascii-numeric")
EXT.comparator("i;ascii-numeric", Numeric)
