"""The on-disk cache of compiled scripts: marshal files keyed by the script's SHA-256.

The key covers the script bytes, the compiled-form version and the options that
change compilation (enabled extensions, include directories). Each entry lists
the files it included with their SHA-256; a changed or vanished include makes
the entry stale. Entries are written to a temporary file and renamed.
"""

from __future__ import annotations

import marshal
import os

try:  # the builtin module costs nothing to import; hashlib pulls in OpenSSL
    from _sha256 import sha256
except ImportError:  # pragma: no cover - other Python builds
    try:
        from _sha2 import sha256  # type: ignore[no-redef]
    except ImportError:
        from hashlib import sha256  # type: ignore[no-redef]

from fetchdeliver.sieve import FORMAT, Script

_OPTION_KEYS = ("extensions", "personal_dir", "global_dir")
# The compile-time limits count only when set (the keys of scripts compiled with the defaults stay).
_LIMIT_KEYS = ("max_script_size", "max_block_nesting", "max_test_nesting", "editheader_max_header_size",
               "include_max_includes", "include_max_nesting_depth")


def digest(data: bytes) -> str:
    return sha256(data).hexdigest()


def key(raw: bytes, options: dict | None) -> str:
    opts = options or {}
    extra = repr([(k, opts.get(k)) for k in _OPTION_KEYS]
                 + [(k, opts[k]) for k in _LIMIT_KEYS if k in opts]).encode()
    return digest(b"fetchdeliver-sieve\0%d\0" % FORMAT + extra + b"\0" + raw)


def _path(cache_dir: str, key: str) -> str:
    return os.path.join(cache_dir, key + ".svc")


def load(cache_dir: str, key: str, path: str) -> Script | None:
    """The cached script for `key`, or None when absent, unreadable or stale."""
    try:
        with open(_path(cache_dir, key), "rb") as f:
            data = marshal.loads(f.read())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    for dep_path, dep_hash in data.get("deps", ()):
        try:
            with open(dep_path, "rb") as f:
                if digest(f.read()) != dep_hash:
                    return None
        except OSError:
            return None
    data["name"] = path
    data["path"] = path
    return Script(data)


def store(cache_dir: str, key: str, script: Script) -> None:
    """Write the entry atomically; a cache that cannot be written is not an error."""
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        final = _path(cache_dir, key)
        tmp = f"{final}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(marshal.dumps(script.data))
        os.replace(tmp, final)
    except OSError:
        try:
            os.unlink(tmp)  # type: ignore[possibly-undefined]
        except (OSError, UnboundLocalError):
            pass
