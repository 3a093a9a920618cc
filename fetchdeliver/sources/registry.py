"""The kinds of account source, by protocol name: `protocol = "imap"` in [[account]] -> its SourceKind.

Built-in kinds are declared here (their modules, and the client libraries those
import, are loaded only when an account is fetched); plugins add theirs through the
entry point group `fetchdeliver.sources`, each entry point naming a SourceKind.
Adding a source to fetchdeliver itself is its module in this folder plus one
SourceKind line here.
"""

from __future__ import annotations

from fetchdeliver.sources.base import SourceKind

ENTRY_POINT_GROUP = "fetchdeliver.sources"

IMAP = SourceKind("imap", "fetchdeliver.sources.imap:ImapSource",
                  default_ports={"implicit": 993, "starttls": 143, "none": 143},
                  after=("keep", "delete", "mark-seen", "move"), folders=True, push=True)
POP3 = SourceKind("pop3", "fetchdeliver.sources.pop3:Pop3Source",
                  default_ports={"implicit": 995, "starttls": 110, "none": 110}, after=("keep", "delete"))

JMAP = SourceKind("jmap", "fetchdeliver.sources.jmap:JmapSource",
                  default_ports={"implicit": 443, "starttls": 443, "none": 80},
                  after=("keep", "delete", "mark-seen", "move"), folders=True,
                  watcher="fetchdeliver.sources.jmap_push:JmapPush", keep_crlf=True)

# One line per built-in source.
BUILTIN: dict[str, SourceKind] = {kind.name: kind for kind in (IMAP, POP3, JMAP)}

_loaded: dict[str, SourceKind] = {}


def _entry_point(name: str) -> SourceKind | None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            kind = ep.load()
            if not isinstance(kind, SourceKind):
                raise TypeError(f"entry point {name} = {ep.value} ({ENTRY_POINT_GROUP}) is not a SourceKind")
            return kind
    return None


def source_kind(name: str) -> SourceKind | None:
    """The kind registered as `name` (built-in first, then the entry points); None if unknown."""
    kind = BUILTIN.get(name) or _loaded.get(name)
    if kind is not None:
        return kind
    kind = _entry_point(name)
    if kind is not None:
        _loaded[name] = kind
    return kind


def available() -> list[str]:
    """Every protocol name an account can use."""
    from importlib.metadata import entry_points

    return sorted(set(BUILTIN) | set(_loaded) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def register(kind: SourceKind) -> None:
    """Register a kind at run time (tests, embedding applications)."""
    _loaded[kind.name] = kind
