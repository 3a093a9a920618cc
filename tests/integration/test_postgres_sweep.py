"""`fetchdeliver store sweep` against PostgreSQL and moto's S3 server: unreferenced bodies are deleted,
referenced, young and foreign objects are kept, and a delivery between its upload and its commit
is never swept away."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install '.[postgres]')")
boto3 = pytest.importorskip("boto3", reason="boto3 is not installed (pip install '.[postgres]')")

from fetchdeliver.storage import pgschema  # noqa: E402
from fetchdeliver.storage.blobs import BlobStore  # noqa: E402
from fetchdeliver.storage.postgres import SWEEP_LOCK, PostgresStore, close_pools, insert_message  # noqa: E402
from postgres_support import pg_url, postgres_server  # noqa: E402,F401
from s3_support import s3_server  # noqa: E402,F401

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def setup(pg_url, s3_server, tmp_path):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pgschema.migrate(conn)
    boto3.client("s3").create_bucket(Bucket="mail-bodies")
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[delivery]\nstate_dir = "{tmp_path}/state"\n\n[storage]\nurl = "{pg_url}"\n'
                   'blobs = "s3://mail-bodies/prod"\nblob_min_size = 0\n')
    yield pg_url, str(cfg)
    close_pools()


def keys() -> set[str]:
    return {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="mail-bodies").get("Contents", [])}


def body(i: int) -> bytes:
    return f"Subject: sweep {i}\n\n".encode() + b"b" * 2000 + f" {i}\n".encode()


def sweep(cmd, cfg, *args):
    return subprocess.run(cmd + ["store", "sweep", "-c", cfg, *args], capture_output=True, text=True, timeout=120)


def test_sweep_deletes_only_unreferenced_old_bodies(setup, fetchdeliver_cmd):
    url, cfg = setup
    store = PostgresStore(url, user="alice", blobs=BlobStore("s3://mail-bodies/prod", min_size=0))
    for i in range(3):
        store.deliver(body(i))
    box = store.open("INBOX")
    msgs = box.sync()
    box.expunge(msgs[:2])                                    # two bodies nobody refers to any more
    s3 = boto3.client("s3")
    orphan = "prod/" + hashlib.sha256(b"failed upload").hexdigest()
    s3.put_object(Bucket="mail-bodies", Key=orphan, Body=b"failed upload")
    s3.put_object(Bucket="mail-bodies", Key="prod/README", Body=b"not a body")
    assert len(keys()) == 5

    r = sweep(fetchdeliver_cmd, cfg)                         # everything is younger than an hour
    assert r.returncode == 0, r.stderr
    assert "4 younger than the grace period (kept), 0 unreferenced deleted" in r.stdout, r.stdout
    assert len(keys()) == 5

    r = sweep(fetchdeliver_cmd, cfg, "--grace", "0", "--dry-run")
    assert r.returncode == 0 and "dry run:" in r.stdout and "3 unreferenced deleted" in r.stdout, r.stdout
    assert len(keys()) == 5

    r = sweep(fetchdeliver_cmd, cfg, "--grace", "0")
    assert r.returncode == 0, r.stderr
    assert "4 bodies in the blob store: 1 in use, 0 younger than the grace period (kept), 3 unreferenced " \
           "deleted" in r.stdout, r.stdout
    kept = keys()
    assert kept == {"prod/README", "prod/" + hashlib.sha256(body(2)).hexdigest()}
    assert [box.read(m) for m in box.sync()] == [body(2)]    # the message in use reads back byte-exact


def test_a_delivery_between_upload_and_commit_is_not_swept(setup, fetchdeliver_cmd):
    url, cfg = setup
    blobs = BlobStore("s3://mail-bodies/prod", min_size=0)
    store = PostgresStore(url, user="bob", blobs=blobs)
    inbox = store.open("INBOX")
    raw = body(7)
    key = "prod/" + hashlib.sha256(raw).hexdigest()
    with psycopg.connect(url) as conn:                       # a delivery on another node, mid-transaction
        insert_message(conn, inbox.id, raw, (), time.time(), blobs=blobs)
        assert key in keys()                                 # uploaded, row not committed yet
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("r", sweep(fetchdeliver_cmd, cfg, "--grace", "0")))
        t.start()
        deadline = time.monotonic() + 60
        with psycopg.connect(url, autocommit=True) as watch:
            while not watch.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                                    "AND objid = %s", (SWEEP_LOCK & 0xFFFFFFFF,)).fetchone():
                assert time.monotonic() < deadline, "the sweep never waited for the delivery"
                assert t.is_alive(), result
                time.sleep(0.05)
        conn.commit()                                        # the delivery commits; the sweep goes on
    t.join(120)
    assert result["r"].returncode == 0, result["r"].stderr
    assert "1 in use" in result["r"].stdout and "0 unreferenced deleted" in result["r"].stdout, result["r"].stdout
    assert key in keys()
    assert [inbox.read(m) for m in inbox.sync()] == [raw]
