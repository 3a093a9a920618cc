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


# [quota] (storage/quota.py): limits per user, enforced at every delivery and IMAP APPEND/COPY.
def _size(v, where):
    from fetchdeliver.storage.quota import parse_size

    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError(f"expected a size such as 1073741824 or \"1G\", got {v!r}")
    parse_size(v)
    return v


def _grace(v, where):
    if isinstance(v, str) and v.strip().endswith("%"):
        pct = v.strip()[:-1]
        if not pct.isdigit() or int(pct) > 1000:
            raise ValueError(f"expected a percentage such as \"10%\", got {v!r}")
        return f"{int(pct)}%"
    return _size(v, where)


QUOTA_KEYS = {
    "storage": _size,                    # bytes, or "100M" / "2G" (b k M G T, 1024-based); 0: no limit
    "messages": config.check_int(lo=0),  # messages in all the user's mailboxes; 0: no limit
    "tempfail": config.check_bool,       # over quota: 452 4.2.2 / exit 75 (default: 552 5.2.2 / exit 77)
    "passwd_file": config.check_path,    # per-user quota_rule fields (default: [imap] passwd_file)
    "admins": config.check_str_list,     # logins allowed IMAP SETQUOTA (on their session's quota root)
    "grace": _grace,                     # "10%" or a size: the last message may pass the storage limit
                                         # by this when the user was under it (Dovecot's quota_grace)
}

config.register_table("quota", QUOTA_KEYS)
