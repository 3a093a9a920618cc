"""Who a logged-in user may send as, who counts as local, and the per-user rate limit.

A user's addresses (RFC 6409 section 8.1, the sender checks):

- the login name itself, when it is an address;
- passwd-file extra fields `address=a@x` and `addresses=a@x,b@y` (an Account's `extra`);
- every address of a `[[recipient]]` table that holds one of the above, or whose `maildir`
  is the user's mail folder;
- `[submission] aliases = { user = ["other@x", "@domain"] }` ("@domain": any address there).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fetchdeliver.imapserver.auth import Account
    from fetchdeliver.recipients import Recipient


def bare(addr: str) -> str:
    return (addr or "").strip().strip("<>").strip().lower()


def _extra_addresses(extra: dict) -> list[str]:
    out = []
    for key in ("address", "addresses"):
        for a in (extra.get(key) or "").split(","):
            if bare(a):
                out.append(bare(a))
    return out


def _maildir_of(mail: str | None) -> str | None:
    if mail and mail.startswith("maildir:"):
        return os.path.normpath(mail[len("maildir:"):])
    return None


class Identity:
    """The addresses one user may use as envelope sender and in From:."""

    __slots__ = ("user", "addresses", "domains")

    def __init__(self, user: str, addresses: set[str], domains: set[str]) -> None:
        self.user = user
        self.addresses = addresses
        self.domains = domains

    def owns(self, address: str) -> bool:
        a = bare(address)
        if not a:
            return False
        return a in self.addresses or ("@" in a and a.rpartition("@")[2] in self.domains)

    def primary(self) -> str:
        return sorted(self.addresses)[0] if self.addresses else self.user


class Directory:
    """Addresses of users and local recipients, from the settings and the Authenticator."""

    def __init__(self, settings, authenticator, aliases: dict[str, list[str]] | None = None) -> None:
        from fetchdeliver.recipients import RecipientMap

        self.settings = settings
        self.authenticator = authenticator
        self.aliases = aliases or {}
        self.recipients = RecipientMap.from_settings(settings)
        self._passwd_stamp = None
        self._passwd_targets: dict[str, "Recipient"] = {}
        self._lock = threading.Lock()

    # -- senders ----------------------------------------------------------------------------
    def identity(self, account: "Account") -> Identity:
        addrs: set[str] = set()
        if "@" in account.user:
            addrs.add(bare(account.user))
        addrs.update(_extra_addresses(account.extra or {}))
        maildir = _maildir_of(account.mail)
        for r in self.recipients.recipients:
            mine = {bare(a) for a in r.addresses}
            if mine & addrs or bare(account.user) in mine or \
                    (maildir and r.maildir and os.path.normpath(r.maildir) == maildir):
                addrs.update(a for a in mine if "@" in a)
        domains = set()
        for a in self.aliases.get(account.user, []):
            if a.startswith("@"):
                domains.add(a[1:])
            else:
                addrs.add(a)
        return Identity(account.user, addrs, domains)

    # -- local recipients ---------------------------------------------------------------------
    def local_target(self, address: str) -> "Recipient | None":
        """The local recipient `address` is delivered to, or None (it leaves through the queue)."""
        if self.recipients.catch_all is None:
            found = self.recipients.lookup(address)
            if found is not None:
                return found
        return self._passwd_targets_now().get(bare(address))

    def _passwd_targets_now(self) -> dict[str, "Recipient"]:
        users = getattr(self.authenticator, "users", None)
        if users is None:
            return {}
        try:
            entries = users()
        except Exception:  # an unreadable passwd-file: no local users by address this time
            return self._passwd_targets
        with self._lock:
            if entries is self._passwd_stamp:
                return self._passwd_targets
            from fetchdeliver.imapserver.auth import mail_location
            from fetchdeliver.recipients import Recipient

            targets = {}
            for name, e in entries.items():
                addrs = ([bare(name)] if "@" in name else []) + _extra_addresses(e.extra)
                if not addrs:
                    continue
                loc = mail_location(e) or ""
                kind, _, path = loc.partition(":")
                rules = os.path.join(e.home, ".dovecot.sieve") if e.home else ""
                r = Recipient(addrs, maildir=path if kind == "maildir" else None,
                              mbox=path if kind == "mbox" else None, rules=rules)
                for a in addrs:
                    targets[a] = r
            self._passwd_stamp = entries
            self._passwd_targets = targets
            return targets


class RateLimiter:
    """At most `count` accepted messages per user in any `period` seconds (0: no limit)."""

    def __init__(self, count: int, period: float) -> None:
        self.count = count
        self.period = period
        self._sent: dict[str, deque] = {}
        self._lock = threading.Lock()

    def _window(self, user: str, now: float) -> deque:
        q = self._sent.setdefault(user, deque())
        while q and q[0] <= now - self.period:
            q.popleft()
        return q

    def allows(self, user: str, now: float | None = None) -> bool:
        if not self.count:
            return True
        now = time.monotonic() if now is None else now
        with self._lock:
            return len(self._window(user, now)) < self.count

    def record(self, user: str, now: float | None = None) -> None:
        if not self.count:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            self._window(user, now).append(now)
