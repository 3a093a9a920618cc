"""Leases in PostgreSQL: a piece of work (an account to fetch, a queue run) is held by one node at a
time, renewed while the work runs; a node that dies loses its leases when they expire, and another
node takes the work over.

    leases = Leases("postgresql://fetchdeliver@db/mail")
    with leases.hold("fetch:alice@imap.example.org", ttl=60) as lease:
        if lease:               # False: another node holds it
            ...                 # renewed every ttl/3 in the background; lease.lost tells

Time is the database's (`now()`), so the nodes' clocks do not matter. Taking a lease is one
INSERT ... ON CONFLICT DO UPDATE ... WHERE the old lease expired (or is ours): atomic, no lock
held between statements.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading

from fetchdeliver.errors import TemporaryDeliveryError

log = logging.getLogger(__name__)


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leases:
    def __init__(self, url: str, node: str | None = None) -> None:
        from fetchdeliver.storage.postgres import PostgresStore

        self._store = PostgresStore(url, user="-")     # for its pooled connections
        self.node = node or node_name()

    def acquire(self, name: str, ttl: float) -> bool:
        """Take `name` for `ttl` seconds if it is free, expired or already ours."""
        with self._store.connection() as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO fd_lease (name, holder, expires) VALUES (%s, %s, now() + %s * interval '1 second') "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires, "
                "taken = CASE WHEN fd_lease.holder = excluded.holder THEN fd_lease.taken ELSE now() END "
                "WHERE fd_lease.expires < now() OR fd_lease.holder = excluded.holder RETURNING holder",
                (name, self.node, ttl)).fetchone()
        return row is not None

    def renew(self, name: str, ttl: float) -> bool:
        """Extend our lease; False when it is no longer ours (it expired and another node took it)."""
        with self._store.connection() as conn, conn.transaction():
            return conn.execute("UPDATE fd_lease SET expires = now() + %s * interval '1 second' "
                                "WHERE name = %s AND holder = %s AND expires >= now() RETURNING 1",
                                (ttl, name, self.node)).fetchone() is not None

    def release(self, name: str) -> None:
        with self._store.connection() as conn, conn.transaction():
            conn.execute("DELETE FROM fd_lease WHERE name = %s AND holder = %s", (name, self.node))

    def holder(self, name: str) -> str | None:
        with self._store.connection() as conn:
            row = conn.execute("SELECT holder FROM fd_lease WHERE name = %s AND expires >= now()",
                               (name,)).fetchone()
        return row[0] if row else None

    def hold(self, name: str, ttl: float = 60.0) -> "Held":
        return Held(self, name, ttl)


class Held:
    """`with leases.hold(name, ttl) as lease`: truthy when taken; renewed every ttl/3 until the block
    ends, then released. `lost` is set when a renewal found the lease gone (stop the work)."""

    def __init__(self, leases: Leases, name: str, ttl: float) -> None:
        self.leases = leases
        self.name = name
        self.ttl = ttl
        self.taken = False
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __bool__(self) -> bool:
        return self.taken

    def __enter__(self) -> "Held":
        self.taken = self.leases.acquire(self.name, self.ttl)
        if self.taken:
            self._thread = threading.Thread(target=self._renew, daemon=True, name=f"lease {self.name}")
            self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.leases.renew(self.name, self.ttl):
                    log.warning("lease %s lost (expired and taken by another node)", self.name)
                    self.lost.set()
                    return
            except TemporaryDeliveryError as e:   # the database is away: try again; it may expire
                log.warning("lease %s not renewed: %s", self.name, e)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.taken and not self.lost.is_set():
            try:
                self.leases.release(self.name)
            except TemporaryDeliveryError as e:
                log.warning("lease %s not released (it expires by itself): %s", self.name, e)


def fetch_lease(settings, account: str, ttl: float | None = None) -> "Held | None":
    """For `fetchdeliver fetch` with [storage] url: the entered lease "fetch:ACCOUNT" (falsy when
    another node is fetching the account); None without [storage] url (one node: no lease).
    ttl: [storage] lease_ttl (default 120 s)."""
    storage = settings.data.get("storage") or {}
    url = storage.get("url")
    if not url:
        return None
    if ttl is None:
        ttl = float(storage.get("lease_ttl", 120))
    return Leases(url).hold(f"fetch:{account}", ttl).__enter__()
