"""One mail store under every face: the interface (base.py), its backends (maildir.py, mbox.py),
the per-mailbox index (index.py), and `open_store()` for a mail location.

Kept import-free at module level: the MDA imports `fetchdeliver.storage.maildir` on every
delivery, and with it this package.

A mail location names a backend and its argument, as Dovecot's mail_location does:

    maildir:~/Maildir                   storage/maildir.py
    mbox:~/mbox                         storage/mbox.py (folders in mail/ beside it)
    mbox:~/mail:INBOX=/var/mail/alice   Dovecot's form: folder directory and INBOX file
    NAME:ARGS                           a plugin: the entry point NAME in group "fetchdeliver.storage"

A plugin's entry point is a callable `factory(args: str) -> Store` (see docs/extending.md).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from fetchdeliver.storage.base import Store

ENTRY_POINT_GROUP = "fetchdeliver.storage"


def maildir_from_location(args: str) -> "Store":
    from fetchdeliver.storage.maildir import MaildirStore

    return MaildirStore(args)


def mbox_from_location(args: str) -> "Store":
    """"FILE" (folders in mail/ beside it) or Dovecot's "DIR:INBOX=FILE"."""
    from fetchdeliver.storage.mbox import MboxStore

    folders, sep, inbox = args.partition(":INBOX=")
    if sep:
        return MboxStore(inbox, folders)
    return MboxStore(args)


BUILTIN = {"maildir": maildir_from_location, "mbox": mbox_from_location}


def backend_factory(name: str) -> Callable[[str], Store] | None:
    """The factory registered as `name` (built-in first, then the entry points); None if unknown."""
    factory = BUILTIN.get(name.lower())
    if factory is not None:
        return factory
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            loaded: Callable[[str], Store] = ep.load()
            return loaded
    return None


def available_backends() -> list[str]:
    from importlib.metadata import entry_points

    return sorted(set(BUILTIN) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def open_store(location: str) -> "Store":
    """The Store for a mail location "NAME:ARGS"; ConfigError names what is known when NAME is not."""
    from fetchdeliver.errors import ConfigError

    name, sep, args = location.partition(":")
    factory = backend_factory(name) if sep and name else None
    if factory is None:
        raise ConfigError(f"unknown mail location {location!r} (expected maildir:PATH or mbox:PATH, or "
                          f"NAME:ARGS for a storage plugin; known: {', '.join(available_backends())})")
    try:
        return factory(args)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"mail location {location!r}: the {name!r} backend failed: {e}") from e
