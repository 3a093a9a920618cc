"""`fetchdeliver store sweep`: delete the bodies in the S3 store that no message refers to any more.

An expunge deletes a body's `fd_blob` row in its transaction once no message refers to it, but not
the object in S3 (a transaction cannot take back a deletion in S3); an upload whose transaction then
failed leaves an object with no row at all. The sweep lists the objects under `[storage] blobs`
(only names that are a SHA-256 in hex: nothing else in the bucket is touched) and deletes those
that no `fd_blob` row names, in two guarded steps:

1. An object younger than the grace period (default an hour) is kept, whatever the database says:
   a delivery uploads its body before it commits the row.
2. The deletion itself runs under an exclusive PostgreSQL advisory lock that every upload holds
   (shared) from before its upload until its commit; the candidates are checked against `fd_blob`
   again under it. So no delivery is between upload and commit while the sweep deletes, and a body
   uploaded again after the listing (a new delivery of the same mail) is seen as referenced.

Deliveries wait for the lock only while one batch of at most 1000 objects is deleted.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

DEFAULT_GRACE = 3600


class SweepReport:
    __slots__ = ("listed", "referenced", "young", "deleted", "deleted_bytes")

    def __init__(self) -> None:
        self.listed = self.referenced = self.young = self.deleted = self.deleted_bytes = 0

    def __str__(self) -> str:
        return (f"{self.listed} bodies in the blob store: {self.referenced} in use, {self.young} younger "
                f"than the grace period (kept), {self.deleted} unreferenced deleted ({self.deleted_bytes} bytes)")


def _unreferenced(conn, blobs, keys: list[str]) -> set[str]:
    refs = {f"s3://{blobs.bucket}/{k}": k for k in keys}
    rows = conn.execute("SELECT s3 FROM fd_blob WHERE s3 = ANY(%s)", (list(refs),)).fetchall()
    used = {r[0] for r in rows}
    return {k for ref, k in refs.items() if ref not in used}


def sweep(dsn: str, blobs, *, grace: float = DEFAULT_GRACE, dry_run: bool = False,
          now: float | None = None) -> SweepReport:
    """Delete the objects of `blobs` (a BlobStore) that no fd_blob row of the database `dsn` names
    and that are older than `grace` seconds. With dry_run, count only."""
    import psycopg

    from fetchdeliver.storage.postgres import SWEEP_LOCK

    report = SweepReport()
    with psycopg.connect(dsn, autocommit=True, connect_timeout=15) as conn:
        for page in blobs.list_bodies():
            cutoff = (time.time() if now is None else now) - grace
            report.listed += len(page)
            old = {k: size for k, mtime, size in page if mtime < cutoff}
            report.young += len(page) - len(old)
            candidates = _unreferenced(conn, blobs, list(old))
            report.referenced += len(old) - len(candidates)
            if not candidates or dry_run:
                report.deleted += len(candidates) if dry_run else 0
                report.deleted_bytes += sum(old[k] for k in candidates) if dry_run else 0
                continue
            conn.execute("SELECT pg_advisory_lock(%s)", (SWEEP_LOCK,))
            try:
                gone = sorted(_unreferenced(conn, blobs, sorted(candidates)))   # again, under the lock
                report.referenced += len(candidates) - len(gone)
                blobs.delete(gone)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (SWEEP_LOCK,))
            report.deleted += len(gone)
            report.deleted_bytes += sum(old[k] for k in gone)
            log.info("deleted %d unreferenced bodies from %s", len(gone), blobs.url)
    return report
