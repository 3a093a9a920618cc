"""The PostgreSQL schema of the `postgres` store, as numbered steps, and `migrate()`.

Each step runs in its own transaction and records its number in `fd_schema`; the
whole migration holds a session advisory lock, so `fetchdeliver db migrate` may run
on every node at once: the first applies the steps, the others wait and find nothing
left to do. A store refuses a database whose schema is older than it needs
(SchemaError says to run `fetchdeliver db migrate`), and one that is newer (an older
fetchdeliver on a newer schema).
"""

from __future__ import annotations

import logging

from fetchdeliver.errors import ConfigError

log = logging.getLogger(__name__)

ADVISORY_LOCK = 0x66645F6D6967   # "fd_mig": the key every node's migrate takes

STEPS: list[tuple[str, str]] = [
    ("mail: users, mailboxes, content-addressed bodies, messages, header fields, expunge history, "
     "subscriptions", """
CREATE SEQUENCE fd_uidvalidity START WITH 1 MINVALUE 1;
SELECT setval('fd_uidvalidity', extract(epoch FROM now())::bigint);
CREATE TABLE fd_user (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE
);
CREATE TABLE fd_mailbox (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES fd_user ON DELETE CASCADE,
    name text NOT NULL,
    uidvalidity bigint NOT NULL,
    uidnext bigint NOT NULL DEFAULT 1,       -- the row lock on this row serialises UID allocation
    highestmodseq bigint NOT NULL DEFAULT 1,
    special_use text[] NOT NULL DEFAULT '{}',
    UNIQUE (user_id, name)
);
CREATE TABLE fd_blob (                        -- message bodies, byte-exact, once per SHA-256
    sha256 bytea PRIMARY KEY,
    size bigint NOT NULL,
    body bytea                                -- NULL when the body lives in the blob store
);
ALTER TABLE fd_blob ALTER COLUMN body SET STORAGE EXTERNAL;   -- no pointless compression attempts
CREATE TABLE fd_message (
    mailbox_id bigint NOT NULL REFERENCES fd_mailbox ON DELETE CASCADE,
    uid bigint NOT NULL,
    prefix bytea NOT NULL DEFAULT '',         -- this delivery's own trace headers, before the shared body
    sha256 bytea NOT NULL REFERENCES fd_blob,
    flags text[] NOT NULL DEFAULT '{}',
    internaldate double precision NOT NULL,
    size bigint NOT NULL,                     -- RFC822.SIZE (line ends counted as CRLF)
    modseq bigint NOT NULL,
    envelope bytea,                           -- the IMAP answers as sent, cached
    bodystructure bytea,
    body bytea,
    hdr boolean NOT NULL DEFAULT false,       -- header fields are in fd_field
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX fd_message_sha256 ON fd_message (sha256);
CREATE TABLE fd_field (
    mailbox_id bigint NOT NULL,
    uid bigint NOT NULL,
    pos int NOT NULL,
    name text NOT NULL,                       -- lower case
    value bytea NOT NULL,                     -- unfolded, undecoded
    FOREIGN KEY (mailbox_id, uid) REFERENCES fd_message ON DELETE CASCADE
);
CREATE INDEX fd_field_name ON fd_field (mailbox_id, name, uid);
CREATE INDEX fd_field_uid ON fd_field (mailbox_id, uid);
CREATE TABLE fd_expunged (
    mailbox_id bigint NOT NULL REFERENCES fd_mailbox ON DELETE CASCADE,
    uid bigint NOT NULL,
    modseq bigint NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX fd_expunged_modseq ON fd_expunged (mailbox_id, modseq);
CREATE TABLE fd_subscription (
    user_id bigint NOT NULL REFERENCES fd_user ON DELETE CASCADE,
    name text NOT NULL,
    PRIMARY KEY (user_id, name)
);
"""),
    ("CONDSTORE: messages by MODSEQ (FETCH CHANGEDSINCE, SEARCH MODSEQ)", """
CREATE INDEX fd_message_modseq ON fd_message (mailbox_id, modseq);
"""),
    ("blobs: a body may live in an S3-compatible store (fd_blob.body NULL, fd_blob.s3 its reference)", """
ALTER TABLE fd_blob ADD COLUMN s3 text;
ALTER TABLE fd_blob ADD CONSTRAINT fd_blob_somewhere CHECK (body IS NOT NULL OR s3 IS NOT NULL);
"""),
    ("leases: work (an account to fetch, a queue run) held by one node at a time", """
CREATE TABLE fd_lease (
    name text PRIMARY KEY,                    -- e.g. 'fetch:alice@imap.example.org'
    holder text NOT NULL,                     -- the node: host:pid:random
    expires timestamptz NOT NULL,
    taken timestamptz NOT NULL DEFAULT now()
);
"""),
    ("state: fetch state per account and folder, the duplicate memory, pending deliveries, Sieve memories", """
CREATE TABLE fd_fetch_pop3 (                  -- POP3 UIDLs already fetched
    account text NOT NULL,
    uidl text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, uidl)
);
CREATE TABLE fd_fetch_folder (                -- the UIDVALIDITY an IMAP folder is tracked under
    account text NOT NULL,
    folder text NOT NULL,
    uidvalidity bigint NOT NULL,
    PRIMARY KEY (account, folder)
);
CREATE TABLE fd_fetch_imap (                  -- IMAP UIDs already fetched (under fd_fetch_folder's UIDVALIDITY)
    account text NOT NULL,
    folder text NOT NULL,
    uid bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, folder, uid)
);
CREATE TABLE fd_fetch_delivered (             -- the duplicate memory: Message-ID + size + SHA-256
    account text NOT NULL,
    message_id text NOT NULL,
    size bigint NOT NULL,
    digest text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, message_id, size, digest)
);
CREATE TABLE fd_fetch_pending (               -- deliveries about to happen (crash recovery, any node)
    token text PRIMARY KEY,
    account text NOT NULL,
    folder text NOT NULL,
    uidvalidity bigint,
    uid text NOT NULL,
    message_id text NOT NULL,
    size bigint NOT NULL,
    digest text NOT NULL,
    at double precision NOT NULL,
    node text NOT NULL DEFAULT ''
);
CREATE INDEX fd_fetch_pending_account ON fd_fetch_pending (account);
CREATE TABLE fd_memory (                      -- Sieve duplicate/vacation memories and the like
    kind text NOT NULL,
    key text NOT NULL,
    expires double precision NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE fd_watch_event (                 -- [[watch]] notifications, for rate limits across nodes
    rule text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX fd_watch_event_rule ON fd_watch_event (rule, at);
"""),
    ("outbound queue: rows and bodies, each row sent by one node at a time (lease_until, holder)", """
CREATE TABLE fd_queue (
    id text PRIMARY KEY,
    kind text NOT NULL,
    sender text NOT NULL,
    recipient text NOT NULL,
    created double precision NOT NULL,
    next_attempt double precision NOT NULL,
    attempts int NOT NULL DEFAULT 0,
    last_error text NOT NULL DEFAULT '',
    delay_notified int NOT NULL DEFAULT 0,
    lease_until double precision NOT NULL DEFAULT 0,
    size bigint NOT NULL,
    origin text NOT NULL DEFAULT '',
    holder text NOT NULL DEFAULT ''           -- the node sending it (while lease_until is ahead)
);
CREATE INDEX fd_queue_due ON fd_queue (next_attempt);
CREATE TABLE fd_queue_body (
    id text PRIMARY KEY,
    body bytea NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE fd_queue_body ALTER COLUMN body SET STORAGE EXTERNAL;
"""),
    ("fetch state: the CONDSTORE point of each fully fetched IMAP folder", """
CREATE TABLE fd_fetch_imap_sync (
    account text NOT NULL,
    folder text NOT NULL,
    uidvalidity bigint NOT NULL,
    highestmodseq bigint NOT NULL,
    uidnext bigint NOT NULL,
    at double precision NOT NULL,
    PRIMARY KEY (account, folder)
);
"""),
    ("fetch state: the JMAP Email state of each account's last complete pass", """
CREATE TABLE fd_fetch_jmap_sync (
    account text PRIMARY KEY,
    jmap_account text NOT NULL,
    scope text NOT NULL,
    state text NOT NULL,
    at double precision NOT NULL
);
"""),
    ("quotas: each user's usage (bytes, messages), kept by triggers on every insert and delete, and "
     "limits set by an administrator (IMAP SETQUOTA)", """
CREATE TABLE fd_quota (
    user_id bigint PRIMARY KEY,               -- fd_user.id
    bytes bigint NOT NULL DEFAULT 0,          -- the sum of fd_message.size over the user's mailboxes
    messages bigint NOT NULL DEFAULT 0,
    bytes_limit bigint,                       -- NULL: no limit of the user's own ([quota] applies)
    messages_limit bigint
);
INSERT INTO fd_quota (user_id, bytes, messages)
    SELECT u.id, coalesce(sum(m.size), 0), count(m.uid)
    FROM fd_user u LEFT JOIN fd_mailbox b ON b.user_id = u.id LEFT JOIN fd_message m ON m.mailbox_id = b.id
    GROUP BY u.id;
CREATE FUNCTION fd_quota_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO fd_quota AS q (user_id, bytes, messages)
            SELECT b.user_id, NEW.size, 1 FROM fd_mailbox b WHERE b.id = NEW.mailbox_id
            ON CONFLICT (user_id) DO UPDATE SET bytes = q.bytes + excluded.bytes, messages = q.messages + 1;
        RETURN NEW;
    END IF;
    -- a message removed with its mailbox: fd_quota_mailbox counted it already (the mailbox row is gone)
    UPDATE fd_quota SET bytes = bytes - OLD.size, messages = messages - 1
        WHERE user_id = (SELECT b.user_id FROM fd_mailbox b WHERE b.id = OLD.mailbox_id);
    RETURN OLD;
END $$;
CREATE TRIGGER fd_message_quota AFTER INSERT OR DELETE ON fd_message
    FOR EACH ROW EXECUTE FUNCTION fd_quota_message();
CREATE FUNCTION fd_quota_mailbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE fd_quota q SET bytes = q.bytes - s.bytes, messages = q.messages - s.n
        FROM (SELECT coalesce(sum(size), 0) AS bytes, count(*) AS n FROM fd_message
              WHERE mailbox_id = OLD.id) s
        WHERE q.user_id = OLD.user_id;
    RETURN OLD;
END $$;
CREATE TRIGGER fd_mailbox_quota BEFORE DELETE ON fd_mailbox
    FOR EACH ROW EXECUTE FUNCTION fd_quota_mailbox();
"""),
    ("Sieve scripts for ManageSieve: each user's scripts, at most one of them active", """
CREATE TABLE fd_sieve_script (
    user_id bigint NOT NULL REFERENCES fd_user ON DELETE CASCADE,
    name text NOT NULL,
    script bytea NOT NULL,
    sha256 bytea GENERATED ALWAYS AS (sha256(script)) STORED,   -- what deliveries compare
    active boolean NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, name)
);
CREATE UNIQUE INDEX fd_sieve_script_active ON fd_sieve_script (user_id) WHERE active;
"""),
    ("IMAP METADATA (RFC 5464): each user's server ('') and mailbox entries", """
CREATE TABLE fd_metadata (
    user_id bigint NOT NULL REFERENCES fd_user ON DELETE CASCADE,
    mailbox text NOT NULL,            -- the mailbox name ('INBOX' upper case), '' for the server
    entry text NOT NULL,              -- lower case: /private/... or /shared/...
    value bytea NOT NULL,
    PRIMARY KEY (user_id, mailbox, entry)
);
"""),
]

LATEST = len(STEPS)


class SchemaError(ConfigError):
    pass


def current_version(conn) -> int:
    """The schema version of the database (0: none yet)."""
    row = conn.execute("SELECT to_regclass('fd_schema')").fetchone()
    if row[0] is None:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM fd_schema").fetchone()
    return int(row[0])


def check(conn) -> None:
    v = current_version(conn)
    if v < LATEST:
        raise SchemaError(f"the database's fetchdeliver schema is at version {v}, this fetchdeliver needs "
                          f"{LATEST}: run `fetchdeliver db migrate`", key="storage.url")
    if v > LATEST:
        raise SchemaError(f"the database's fetchdeliver schema is at version {v}, newer than this "
                          f"fetchdeliver knows ({LATEST}): upgrade fetchdeliver on this node",
                          key="storage.url")


def migrate(conn, *, target: int = LATEST) -> list[int]:
    """Apply the missing steps up to `target`, each in its own transaction; the steps applied.

    `conn` must be in autocommit mode (the advisory lock is held by the session across steps)."""
    applied: list[int] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK,))
    try:
        with conn.transaction():
            conn.execute("CREATE TABLE IF NOT EXISTS fd_schema (version int PRIMARY KEY, "
                         "description text NOT NULL, applied timestamptz NOT NULL DEFAULT now())")
        for number, (description, sql) in enumerate(STEPS[:target], start=1):
            with conn.transaction():
                done = conn.execute("SELECT 1 FROM fd_schema WHERE version = %s", (number,)).fetchone()
                if done:
                    continue
                conn.execute(sql)
                conn.execute("INSERT INTO fd_schema (version, description) VALUES (%s, %s)",
                             (number, description))
            log.info("schema step %d applied: %s", number, description)
            applied.append(number)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK,))
    return applied
