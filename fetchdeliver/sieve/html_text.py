"""HTML as plain text, as the body extension's :text and extracttext see a text/html part
(scripts and styles dropped, tags removed, entities decoded), in linear time."""

from __future__ import annotations


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


def _drop_scripts(html: str) -> str:
    """Each <script ...>...</script > and <style ...>...</style> block as one space.

    What re.sub(r"(?is)<(script|style)\\b.*?</\\1\\s*>", " ", html) does, in linear time: that
    regex rescans to the end for every opening tag without a closing one (minutes on a few
    hundred kilobytes of "<script>" from a hostile sender, in one call that holds the GIL).
    """
    from fetchdeliver.sieve.matching import ascii_lower

    low = ascii_lower(html)
    n = len(low)
    out: list[str] = []
    pos = 0      # html[pos:] is not yet written
    scan = 0     # where to look for the next opening tag
    dead: set[str] = set()   # names with no closing tag left: later openings cannot match either
    while True:
        best = -1
        name = ""
        for cand in ("script", "style"):
            if cand in dead:
                continue
            i = low.find("<" + cand, scan)
            while i >= 0 and i + 1 + len(cand) < n and _is_word(low[i + 1 + len(cand)]):
                i = low.find("<" + cand, i + 1)
            if i >= 0 and (best < 0 or i < best):
                best, name = i, cand
        if best < 0:
            break
        closing = "</" + name
        j = low.find(closing, best + 1 + len(name))
        end = -1
        while j >= 0:
            k = j + len(closing)
            while k < n and low[k].isspace():
                k += 1
            if k < n and low[k] == ">":
                end = k + 1
                break
            j = low.find(closing, j + 1)
        if end < 0:
            dead.add(name)
            scan = best + 1
            continue
        out.append(html[pos:best])
        out.append(" ")
        pos = scan = end
    out.append(html[pos:])
    return "".join(out)


def _drop_tags(html: str) -> str:
    """Each <...> as one space: re.sub(r"(?s)<[^>]*>", " ", html) in linear time."""
    out: list[str] = []
    pos = 0
    while True:
        i = html.find("<", pos)
        if i < 0:
            break
        j = html.find(">", i + 1)
        if j < 0:
            break    # no ">" after this "<": no tag can start here or later
        out.append(html[pos:i])
        out.append(" ")
        pos = j + 1
    out.append(html[pos:])
    return "".join(out)


def html_to_text(html: str) -> str:
    import html as h

    return h.unescape(_drop_tags(_drop_scripts(html)))
