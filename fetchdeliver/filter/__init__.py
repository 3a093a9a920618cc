"""The content-filter step before Sieve: spamd or rspamd, and clamd.

`Filter.scan()` sends the message to each configured scanner and returns the
header lines to add at the top (X-Spam-*, X-Virus-*). When a scanner is down,
slow or answers nonsense it raises `FilterUnavailable`; `engine.process()`
then tempfails or delivers unfiltered, as `[filter] on_failure` says. This
package is imported only when `[filter]` is configured (MDA start-up time).
"""

from __future__ import annotations

from fetchdeliver.errors import FilterUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.message import Message



def _log():
    import logging  # only when there is something to log (start-up time)

    return logging.getLogger(__name__)

UNFILTERED_HEADER = "X-Fetchdeliver-Filter"
DEFAULT_TIMEOUT = 30
DEFAULT_MAX_SIZE = 10 << 20

# The [sieve] options that make spamtest/virustest read the headers written here (regexes are
# Python's: the interpreter reads "NAME: REGEX", group 1 being the value).
SPAMTEST_OPTIONS = {
    "spamtest_header": r"X-Spam-Status: score=(-?\d+(?:\.\d+)?)",
    "spamtest_max_header": r"X-Spam-Status: required=(-?\d+(?:\.\d+)?)",
    "spamtest_type": "score",
}
VIRUSTEST_OPTIONS = {
    "virustest_header": r"X-Virus-Status: ^(\w+)",
    "virustest_type": "text",
    "virustest_text_values": {"1": "Clean", "5": "Infected"},
}


class ScanResult:
    """The headers to add, and whether the scanners really looked at the message."""

    __slots__ = ("headers", "scanned", "verdicts")

    def __init__(self, headers: list[tuple[str, str]], scanned: bool, verdicts: list) -> None:
        self.headers = headers
        self.scanned = scanned
        self.verdicts = verdicts


class Filter:
    """The scanners of one `[filter]` table."""

    def __init__(self, table: dict) -> None:
        self.rspamd = table.get("rspamd")
        self.spamd = table.get("spamd")
        self.clamd = table.get("clamd")
        self.timeout = float(table.get("timeout", DEFAULT_TIMEOUT))
        self.on_failure = table.get("on_failure", "tempfail")
        self.max_size = table.get("max_size", DEFAULT_MAX_SIZE)
        self.spamd_user = table.get("spamd_user")
        self.applied: set[str] = set()   # the [sieve] keys filled in by apply_sieve_defaults()

    def sieve_defaults(self) -> dict:
        """[sieve] options that line spamtest/virustest up with the headers this filter writes."""
        out: dict = {}
        if self.rspamd or self.spamd:
            out.update(SPAMTEST_OPTIONS)
        if self.clamd:
            out.update(VIRUSTEST_OPTIONS)
        return out

    def apply_sieve_defaults(self, opts: dict) -> dict:
        """Fill in `opts` ([sieve] options) what the user left unset, so that spamtest/virustest read
        the headers written here and may be required (Pigeonhole leaves them disabled by default)."""
        defaults = self.sieve_defaults()
        self.applied = set()
        for key, value in defaults.items():
            if key not in opts:
                opts[key] = value
                self.applied.add(key)
        wanted = []
        if self.rspamd or self.spamd:
            wanted += ["+spamtest", "+spamtestplus"]
        if self.clamd:
            wanted.append("+virustest")
        ext = opts.get("extensions")
        items = ext.split() if isinstance(ext, str) else list(ext or [])
        if all(i[:1] in "+-" for i in items):  # bare names replace the default set: the user chose
            opts["extensions"] = wanted + items   # the user's own "-spamtest" comes later and wins
        return opts

    def scan(self, message: "Message") -> ScanResult:
        """Ask every scanner; FilterUnavailable (naming scanner and reason) when one cannot answer."""
        raw = message.raw
        if self.max_size and len(raw) > self.max_size:
            note = f"not scanned; {len(raw)} bytes, more than max_size {self.max_size}"
            _log().info("%s: %s", message.origin, note)
            return ScanResult([(UNFILTERED_HEADER, note)], False, [])
        verdicts: list = []
        if self.rspamd:
            from fetchdeliver.filter import rspamd

            verdicts.append(rspamd.check(self.rspamd, raw, self.timeout, message.sender,
                                         list(message.recipients)))
        if self.spamd:
            from fetchdeliver.filter import spamd

            verdicts.append(spamd.check(self.spamd, raw, self.timeout, self.spamd_user))
        if self.clamd:
            from fetchdeliver.filter import clamd

            verdicts.append(clamd.check(self.clamd, raw, self.timeout))
        headers = [h for v in verdicts for h in v.headers()]
        return ScanResult(headers, True, verdicts)

    def unfiltered(self, error: FilterUnavailable) -> ScanResult:
        """The result for on_failure = "deliver": one header saying why nothing was scanned."""
        return ScanResult([(UNFILTERED_HEADER, f"unfiltered; {error}")], False, [])


def add_headers(message: "Message", headers: list[tuple[str, str]]) -> "Message":
    """`message` with `headers` at the very top, in the message's own line ending, in the given order."""
    from fetchdeliver.filter.verdict import fold

    if not headers:
        return message
    eol = b"\r\n" if b"\r\n" in message.raw[:4096] else b"\n"
    block = b"".join(fold(name, value, eol) for name, value in headers)
    return message.with_raw(block + message.raw)


__all__ = ["Filter", "FilterUnavailable", "ScanResult", "add_headers"]
