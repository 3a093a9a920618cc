"""RFC 3894: :copy for fileinto and redirect (the implicit keep is not cancelled)."""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("copy")
EXT.tag("fileinto", "copy")
EXT.tag("redirect", "copy")
