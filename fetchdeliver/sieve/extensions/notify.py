"""notify, the deprecated draft before RFC 5435 (draft-martin-sieve-notify-01; Pigeonhole still
runs it, off by default; cannot be combined with enotify).

    notify [:method "mailto"] [:id ID] [:options ADDRESSES] [:low|:normal|:high] [:message TEXT]
    denotify [MATCH-TYPE ID] [:low|:normal|:high]

Only the mailto method exists: the notification goes to the :options addresses. In the
message, $from$, $env-from$, $subject$, $text$ and $text[N]$ stand for the message's From,
envelope sender, Subject and (the first N characters of) its body. `denotify` cancels the
notifications made so far that match the id and importance (all without arguments).
"""

from __future__ import annotations

from fetchdeliver.actions import Notify
from fetchdeliver.sieve.registry import Extension

EXT = Extension("notify", default=False, conflicts={
    "enotify": "the (deprecated) notify extension cannot be used together with the enotify extension"})

class DraftNotify(Notify):
    """A notification of the draft: its mail says "Auto-Submitted: auto-generated" (the draft
    predates RFC 5436's "auto-notified", which enotify's mailto uses)."""

    __slots__ = ()
    auto_submitted = "auto-generated"


IMPORTANCE = {"high": "1", "normal": "2", "low": "3"}
DEFAULT_MESSAGE = "$from$: $subject$"


def _check_importance(v, node, out) -> None:
    given = [t for t in IMPORTANCE if t in out[2]]
    if len(given) > 1:
        v.error(f"the {node.name} command takes only one of :low, :normal and :high", node)


def _check_notify(v, node, out) -> None:
    _check_importance(v, node, out)
    tags = out[2]
    method = tags.get("method")
    if isinstance(method, str) and v.constant(method) and method.lower() != "mailto":
        v.error(f"notify command: invalid method '{method}' (only mailto)", node)
    from fetchdeliver.sieve.addresses import valid_address

    for a in tags.get("options", []) if isinstance(tags.get("options"), list) else []:
        if v.constant(a) and valid_address(a):
            v.error(f"notify command: :options item '{a}' is not a valid address", node)


_LEVELS = {t: None for t in IMPORTANCE}


@EXT.command("notify", check=_check_notify,
             tags={"method": "string", "id": "string", "options": "strings", "message": "string", **_LEVELS})
def notify(ctx, node) -> None:
    from urllib.parse import quote

    tags = node[2]
    to: list[str] = []
    # Duplicates removed, also those an earlier notify of the result already reaches (as Pigeonhole).
    from urllib.parse import unquote

    notified = {unquote(r).lower() for a in ctx.actions if isinstance(a, DraftNotify)
                for r in a.method[7:].split(",")}
    for a in ctx.expand_list(tags.get("options", [])):
        key = a.strip().lower()
        if key and key not in notified:
            notified.add(key)
            to.append(a.strip())
    if not to:
        return  # nobody to notify (Pigeonhole does nothing either)
    level = next((IMPORTANCE[t] for t in IMPORTANCE if t in tags), "2")
    text = _substitute(ctx, ctx.expand(tags["message"]) if "message" in tags else DEFAULT_MESSAGE)
    method = "mailto:" + ",".join(quote(a, safe="@.+-_") for a in to)
    action = DraftNotify(method, importance=level, message=text)
    ctx.add_action(action)
    made = ctx.ext_state.setdefault("deprecated_notify", [])
    made.append((action, ctx.expand(tags["id"]) if "id" in tags else "", level))


def _substitute(ctx, text: str) -> str:
    import re

    msg = ctx.message

    def body(n: int | None) -> str:
        t = msg.body.decode("utf-8", "replace").strip()
        return t if n is None else t[:n]
    values = {"from": msg.get("From") or "", "env-from": ctx.env.envelope_from or "",
              "subject": msg.get("Subject") or ""}

    def repl(m) -> str:
        name, n = m.group(1).lower(), m.group(2)
        if name == "text":
            return body(int(n) if n else None)
        return values.get(name, m.group(0))
    return re.sub(r"\$(from|env-from|subject|text)(?:\[(\d+)\])?\$", repl, text, flags=re.I)


def _check_denotify(v, node, out) -> None:
    _check_importance(v, node, out)
    if sum(1 for t in ("is", "contains", "matches") if t in out[2]) > 1:
        v.error("the denotify command takes only one match type", node)


# The draft's grammar: the id follows the match type (`denotify :is "id" :low`), so the match
# types are tags with a value here.
@EXT.command("denotify", check=_check_denotify,
             tags={"is": "string", "contains": "string", "matches": "string", "comparator": "string", **_LEVELS})
def denotify(ctx, node) -> None:
    from fetchdeliver.sieve.matching import match

    given = node[2]
    level = next((IMPORTANCE[t] for t in IMPORTANCE if t in given), None)
    mtype = next((t for t in ("is", "contains", "matches") if t in given), None)
    key = ctx.expand(given[mtype]) if mtype else None
    tags = {"match": mtype or "is", "comparator": given.get("comparator", "i;ascii-casemap")}
    made = ctx.ext_state.get("deprecated_notify", [])
    keep = []
    for action, ident, importance in made:
        hit = (level is None or importance == level) and (key is None or match(ctx, tags, [ident], [key]))
        if hit and action in ctx.actions:
            ctx.actions.remove(action)
        elif not hit:
            keep.append((action, ident, importance))
    ctx.ext_state["deprecated_notify"] = keep
