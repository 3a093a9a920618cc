"""[storage]: the one switch from Maildir/mbox + sqlite to PostgreSQL (docs/scaling.md).

    [storage]
    url = "postgresql://fetchdeliver@db.example.org/mail"   # absent: [delivery] maildir/mbox, as before
    user = "alice"                                           # the mail user for `deliver`/fetch (default:
                                                             # the login name); LMTP uses each recipient
    blobs = "s3://mail-bodies/prod"                          # reserved: bodies in an S3 store (not yet)

Importing this module registers the table with fetchdeliver.config.
"""

from __future__ import annotations

from fetchdeliver import config
from fetchdeliver.errors import ConfigError


def _url(v, where):
    v = config._nonempty_str(v, where)
    if not v.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"expected a PostgreSQL URL such as postgresql://USER@HOST/DB, got {v!r}")
    return v


STORAGE_KEYS = {
    "url": _url,
    "user": config._nonempty_str,
    "blobs": config._nonempty_str,
}


def _check_storage(table: dict, file: str) -> None:
    if "blobs" in table:
        raise ConfigError("bodies in an S3 store are not implemented yet; remove blobs (bodies are kept "
                          "in PostgreSQL)", file=file, key="storage.blobs")
    if "user" in table and "url" not in table:
        raise ConfigError("user needs url", file=file, key="storage.user")


config.register_table("storage", STORAGE_KEYS, rule=_check_storage)
