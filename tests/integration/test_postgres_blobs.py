"""Bodies in an S3-compatible store (moto server) beside PostgreSQL: stored once, before the commit,
read back byte-exact (also by a node configured without the blob store), and an S3 that is away
is a temporary failure with nothing stored."""

from __future__ import annotations

import os
import subprocess

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install '.[postgres]')")
boto3 = pytest.importorskip("boto3", reason="boto3 is not installed (pip install '.[postgres]')")

from fetchdeliver.errors import TemporaryDeliveryError  # noqa: E402
from fetchdeliver.storage import pgschema  # noqa: E402
from fetchdeliver.storage.blobs import BlobStore  # noqa: E402
from fetchdeliver.storage.postgres import PostgresStore  # noqa: E402
from postgres_support import pg_url, postgres_server  # noqa: E402,F401
from s3_support import s3_server  # noqa: E402,F401

CORPUS = os.path.join(os.path.dirname(__file__), "..", "corpus", "odd")


@pytest.fixture
def db(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pgschema.migrate(conn)
    return pg_url


@pytest.fixture
def bucket(s3_server):
    boto3.client("s3").create_bucket(Bucket="mail-bodies")
    return "s3://mail-bodies/prod"


def objects() -> dict[str, bytes]:
    s3 = boto3.client("s3")
    out = {}
    for o in s3.list_objects_v2(Bucket="mail-bodies").get("Contents", []):
        out[o["Key"]] = s3.get_object(Bucket="mail-bodies", Key=o["Key"])["Body"].read()
    return out


def test_bodies_go_to_s3_once_and_come_back_byte_exact(db, bucket):
    store = PostgresStore(db, user="alice", blobs=BlobStore(bucket, min_size=0))
    raws = []
    for name in sorted(os.listdir(CORPUS)):
        with open(os.path.join(CORPUS, name), "rb") as f:
            raws.append(f.read())
    for raw in raws:
        store.deliver(raw)
        store.for_user("bob").deliver(b"Delivered-To: bob\n" + raw)   # same body, own trace header
    objs = objects()
    assert len(objs) == len(set(raws))
    assert all(k.startswith("prod/") for k in objs)
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM fd_blob WHERE body IS NOT NULL").fetchone()[0] == 0
    box = store.open("INBOX")
    assert [box.read(m) for m in box.sync()] == raws
    # a node without [storage] blobs reads them through the reference in the row (endpoint from AWS_*)
    other = PostgresStore(db, user="bob")
    bbox = other.open("INBOX")
    assert [bbox.read(m) for m in bbox.sync()] == [b"Delivered-To: bob\n" + r for r in raws]


def test_small_bodies_stay_in_postgres(db, bucket):
    store = PostgresStore(db, user="alice", blobs=BlobStore(bucket, min_size=1000))
    store.deliver(b"Subject: small\n\nx\n")
    store.deliver(b"Subject: big\n\n" + b"y" * 5000)
    assert len(objects()) == 1


def test_s3_away_is_a_temporary_failure_and_nothing_is_stored(db, bucket, s3_server, tmp_path,
                                                              fetchdeliver_cmd):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[delivery]\nstate_dir = "{tmp_path}/state"\n\n[storage]\nurl = "{db}"\nuser = "alice"\n'
                   f'blobs = "{bucket}"\nblob_min_size = 0\n')
    r = subprocess.run(fetchdeliver_cmd + ["deliver", "-c", str(cfg)], input=b"Subject: one\n\nbody\n",
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    s3_server.stop()
    r = subprocess.run(fetchdeliver_cmd + ["deliver", "-c", str(cfg)], input=b"Subject: two\n\nbody\n",
                       capture_output=True, timeout=120)
    assert r.returncode == 75, r.stderr
    store = PostgresStore(db, user="alice", blobs=BlobStore(bucket, min_size=0))
    with pytest.raises(TemporaryDeliveryError):
        store.deliver(b"Subject: three\n\nbody\n")
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM fd_message").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM fd_blob").fetchone()[0] == 1
