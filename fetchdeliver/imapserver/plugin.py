"""Plugging in your own login check and mailbox mapping.

`[imap] backend = "mypkg.mymod:make"` names a callable; it is called with the
whole validated config dict and returns an object with

    authenticate(user: str, password: str) -> Account | None
    storage_for(account: Account) -> Storage          (optional)

`Account` is fetchdeliver.imapserver.auth.Account; `Storage` / `Mailbox` are in
fetchdeliver.imapserver.storage (MaildirStorage in .maildir is a ready one;
wrap it to present several trees under one login, or open mailboxes read-only
by returning Mailbox objects whose `readonly` is True). Without storage_for,
`account.mail` ("maildir:PATH") or [delivery]'s folder is served.
"""

from __future__ import annotations

from fetchdeliver.errors import ConfigError


def load_backend(spec: str, config: dict):
    import importlib

    mod_name, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"cannot import {mod_name!r}: {e}", key="imap.backend") from None
    factory = getattr(mod, attr, None)
    if factory is None:
        raise ConfigError(f"{mod_name!r} has no {attr!r}", key="imap.backend")
    backend = factory(config)
    if not callable(getattr(backend, "authenticate", None)):
        raise ConfigError(f"{spec} did not return an object with authenticate(user, password)",
                          key="imap.backend")
    return backend
