"""RFC 5228 section 2.4.2.4: encoded characters ${hex:..} and ${unicode:..} in string literals.

Decoded at compile time (the validator calls `decode` on every string once the
extension is required); a malformed sequence stays as written.
"""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("encoded-character")

_HEX = set("0123456789abcdefABCDEF")


def _decode_seq(kind: str, body: str, problems: list | None = None) -> str | None:
    words = body.replace("\t", " ").replace("\r", " ").replace("\n", " ").split(" ")
    words = [w for w in words if w]
    if not words:
        return None  # "${hex:}" stays as written (Pigeonhole)
    if kind == "hex":
        data = bytearray()
        for w in words:
            if len(w) % 2 or not all(c in _HEX for c in w):
                return None
            data.extend(bytes.fromhex(w))
        return data.decode("utf-8", "replace")
    out = []
    for w in words:
        if not w or len(w) > 8 or not all(c in _HEX for c in w):
            return None
        cp = int(w, 16)
        if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
            # Not a character (beyond Unicode, or a UTF-16 surrogate): an error, as Pigeonhole's
            if problems is not None:
                problems.append(f"invalid unicode character 0x{cp:08x} in encoded character substitution")
            return None
        out.append(chr(cp))
    return "".join(out)


def decode(s: str, problems: list | None = None) -> str:
    """`s` with its encoded characters decoded; invalid code points are added to `problems`."""
    if "${" not in s:
        return s
    out = []
    i = 0
    n = len(s)
    while i < n:
        j = s.find("${", i)
        if j < 0:
            out.append(s[i:])
            break
        out.append(s[i:j])
        colon = s.find(":", j + 2)
        end = s.find("}", j + 2)
        kind = s[j + 2:colon].lower() if colon > 0 else ""
        if colon > 0 and end > colon and kind in ("hex", "unicode"):
            value = _decode_seq(kind, s[colon + 1:end], problems)
            if value is not None:
                out.append(value)
                i = end + 1
                continue
        out.append("${")
        i = j + 2
    return "".join(out)
