"""RFC 5260: the date and currentdate tests (:zone, :originalzone, all date parts)."""

from __future__ import annotations

from fetchdeliver.sieve.matching import match
from fetchdeliver.sieve.registry import Extension

EXT = Extension("date")

PARTS = ("year", "month", "day", "date", "julian", "hour", "minute", "second", "time", "iso8601",
         "std11", "zone", "weekday")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_zone(z: str) -> int | None:
    """"+0100" -> 3600 seconds; None when malformed."""
    if len(z) != 5 or z[0] not in "+-" or not z[1:].isdigit():
        return None
    hours, minutes = int(z[1:3]), int(z[3:5])
    if minutes > 59 or hours > 23:
        return None
    off = hours * 3600 + minutes * 60
    return -off if z[0] == "-" else off


def format_zone(off: int) -> str:
    sign = "-" if off < 0 else "+"
    off = abs(off)
    return f"{sign}{off // 3600:02d}{off % 3600 // 60:02d}"


def _check(v, node, out) -> None:
    tags = out[2]
    if "zone" in tags and "originalzone" in tags:
        v.error("the :zone and :originalzone tags cannot be used together", node)
    zone = tags.get("zone")
    if isinstance(zone, str) and v.constant(zone) and parse_zone(zone) is None:
        v.warning = f"invalid :zone '{zone}'"  # Pigeonhole only warns
    part = out[3][-2] if len(out[3]) >= 2 else None
    if isinstance(part, str) and v.constant(part) and part.lower() not in PARTS:
        v.error(f"the {node.name} test: unknown date part '{part}'", node)


def parse_date(value: str):
    """(UTC epoch seconds, zone offset seconds) of an RFC 5322 date, or None."""
    from email.utils import parsedate_tz

    try:
        t = parsedate_tz(value)
    except (TypeError, ValueError, IndexError):
        return None
    if t is None:
        return None
    import calendar

    off = t[9] if t[9] is not None else 0
    try:
        epoch = calendar.timegm((t[0], t[1], t[2], t[3], t[4], t[5], 0, 1, 0)) - off
    except (ValueError, OverflowError):
        return None
    return epoch, off


def date_part(epoch: float, off: int, part: str) -> str | None:
    import time

    tm = time.gmtime(int(epoch) + off)
    part = part.lower()
    if part == "year":
        return f"{tm.tm_year:04d}"
    if part == "month":
        return f"{tm.tm_mon:02d}"
    if part == "day":
        return f"{tm.tm_mday:02d}"
    if part == "date":
        return f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}"
    if part == "julian":
        # Modified Julian Day: days since 1858-11-17
        return str((int(epoch) + off) // 86400 + 40587)
    if part == "hour":
        return f"{tm.tm_hour:02d}"
    if part == "minute":
        return f"{tm.tm_min:02d}"
    if part == "second":
        return f"{tm.tm_sec:02d}"
    if part == "time":
        return f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
    if part == "iso8601":
        z = format_zone(off)
        z = "Z" if off == 0 else f"{z[:3]}:{z[3:]}"
        return (f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}T{tm.tm_hour:02d}:{tm.tm_min:02d}:"
                f"{tm.tm_sec:02d}{z}")
    if part == "std11":
        return (f"{_DAYS[tm.tm_wday]}, {tm.tm_mday:02d} {_MONTHS[tm.tm_mon - 1]} {tm.tm_year:04d} "
                f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {format_zone(off)}")
    if part == "zone":
        return format_zone(off)
    if part == "weekday":
        return str((tm.tm_wday + 1) % 7)
    return None


def _zone(ctx, tags, original: int | None, epoch: float) -> int:
    if "zone" in tags:
        z = parse_zone(ctx.expand(tags["zone"]))
        if z is not None:
            return z
    if "originalzone" in tags and original is not None:
        return original
    return ctx.env.local_offset()


@EXT.test("date", args=("string", "string", "strings"), groups=("comparator", "match"),
          tags={"zone": "string", "originalzone": None}, check=_check)
def date(ctx, node) -> bool:
    from fetchdeliver.sieve.runtime import header_values

    tags = node[2]
    header, part, keys = node[3]
    values = []
    for raw in header_values(ctx, [ctx.expand(header)], tags):
        if ctx.expand(header).lower() == "received" and ";" in raw:
            raw = raw.rsplit(";", 1)[1]
        parsed = parse_date(raw.strip())
        if parsed is None:
            continue
        epoch, off = parsed
        zone = _zone(ctx, tags, off, epoch) if ("zone" in tags or "originalzone" in tags) \
            else ctx.env.local_offset()
        v = date_part(epoch, zone, ctx.expand(part))
        if v is not None:
            values.append(v)
    return match(ctx, tags, values, ctx.expand_list(keys))


@EXT.test("currentdate", args=("string", "strings"), groups=("comparator", "match"),
          tags={"zone": "string"}, check=_check)
def currentdate(ctx, node) -> bool:
    tags = node[2]
    part, keys = node[3]
    now = ctx.env.now
    zone = _zone(ctx, tags, None, now)
    v = date_part(now, zone, ctx.expand(part))
    return match(ctx, tags, [v] if v is not None else [], ctx.expand_list(keys))
