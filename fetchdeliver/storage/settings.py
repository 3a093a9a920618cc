"""[storage]: the one switch from Maildir/mbox + sqlite to PostgreSQL (docs/scaling.md).

    [storage]
    url = "postgresql://fetchdeliver@db.example.org/mail"   # absent: [delivery] maildir/mbox, as before
    user = "alice"                                           # the mail user for `deliver`/fetch (default:
                                                             # the login name); LMTP uses each recipient
    blobs = "s3://mail-bodies/prod"                          # optional: bodies in an S3-compatible store
    blob_min_size = 16384                                    # smaller bodies stay in PostgreSQL
    lease_ttl = 120                                          # a dead node's fetch lease expires after this

Importing this module registers the table with fetchdeliver.config.
"""

from __future__ import annotations

from fetchdeliver import config
from fetchdeliver.errors import ConfigError


def _url(v, where):
    v = config.check_nonempty_str(v, where)
    if not v.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"expected a PostgreSQL URL such as postgresql://USER@HOST/DB, got {v!r}")
    return v


STORAGE_KEYS = {
    "url": _url,
    "user": config.check_nonempty_str,
    "blobs": config.check_nonempty_str,
    "blob_min_size": config.check_int(lo=0),
    "lease_ttl": config.check_int(lo=2),      # seconds a node's fetch lease outlives the node (default 120)
    "queue_lease": config.check_int(lo=1),    # seconds a queued message's send lease outlives its node (3600)
}


def _check_storage(table: dict, file: str) -> None:
    if "blobs" in table and not table["blobs"].startswith("s3://"):
        raise ConfigError("expected s3://BUCKET/PREFIX", file=file, key="storage.blobs")
    if "blobs" in table and "url" not in table:
        raise ConfigError("blobs needs url (the bodies' index is in PostgreSQL)", file=file, key="storage.blobs")
    if "user" in table and "url" not in table:
        raise ConfigError("user needs url", file=file, key="storage.user")


config.register_table("storage", STORAGE_KEYS, rule=_check_storage)
