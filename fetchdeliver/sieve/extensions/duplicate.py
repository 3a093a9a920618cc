"""RFC 7352: the duplicate test (the memory is the engine's, reached through env.duplicate_seen)."""

from __future__ import annotations

from fetchdeliver.sieve.registry import Extension

EXT = Extension("duplicate")

DEFAULT_PERIOD = 14 * 86400   # Pigeonhole's sieve_duplicate_default_period
MAX_PERIOD = 7 * 86400        # and sieve_duplicate_max_period


def _check(v, node, out) -> None:
    tags = out[2]
    if "header" in tags and "uniqueid" in tags:
        v.error("the :header and :uniqueid tags of the duplicate test cannot be used together", node)


@EXT.test("duplicate", tags={"handle": "string", "header": "string", "uniqueid": "string",
                             "seconds": "number", "last": None}, check=_check)
def duplicate(ctx, node) -> bool:
    tags = node[2]
    if "uniqueid" in tags:
        value = ctx.expand(tags["uniqueid"])
    else:
        name = ctx.expand(tags.get("header", "Message-ID"))
        values = ctx.message.get_all(name, decode=False)
        if not values:
            return False
        value = values[0].strip()
        if name.lower() == "message-id":
            value = value.strip()
    handle = ctx.expand(tags.get("handle", ""))
    seconds = min(tags.get("seconds", DEFAULT_PERIOD), MAX_PERIOD)
    key = f"{handle}\0{value}"
    checked = ctx.ext_state.setdefault("duplicate_checked", {})
    if key in checked:
        # The same id again in this run: this message is not its own duplicate (the memory
        # records it for later messages), so the answer is the first one's.
        return checked[key]
    seen = False
    callback = ctx.env.duplicate_seen
    if callback is not None:
        seen = bool(callback(key, seconds))
    checked[key] = seen
    ctx.duplicate_keys.append((key, seconds, bool(tags.get("last"))))
    return seen
