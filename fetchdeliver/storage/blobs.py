"""Message bodies in an S3-compatible object store, for the `postgres` store (boto3).

    [storage]
    blobs = "s3://mail-bodies/prod"                 # bucket and key prefix
    blob_min_size = 16384                           # smaller bodies stay in PostgreSQL (default)

The endpoint and credentials come from boto3's usual places (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws), or `?endpoint=http://HOST:PORT` in the URL.
An object's key is the prefix and the body's SHA-256 in hex: a body is uploaded once, before
the database row that refers to it is committed, so a committed message always has its body;
an upload whose transaction then failed leaves an object nobody refers to (harmless: the same
body delivered again finds it under the same key).
"""

from __future__ import annotations

import hashlib
import threading
from urllib.parse import parse_qsl, urlsplit

from fetchdeliver.errors import ConfigError, TemporaryDeliveryError

DEFAULT_MIN_SIZE = 16384


class BlobStore:
    def __init__(self, url: str, min_size: int = DEFAULT_MIN_SIZE) -> None:
        p = urlsplit(url)
        if p.scheme != "s3" or not p.netloc:
            raise ConfigError(f"not an S3 URL: {url!r} (expected s3://BUCKET/PREFIX)", key="storage.blobs")
        self.url = url
        self.bucket = p.netloc
        self.prefix = p.path.strip("/")
        self.endpoint = dict(parse_qsl(p.query)).get("endpoint")
        self.min_size = min_size
        self._local = threading.local()

    def _client(self):
        c = getattr(self._local, "client", None)
        if c is None:
            import boto3
            from botocore.config import Config

            c = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint,
                config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}))
            self._local.client = c
        return c

    def key(self, digest: bytes) -> str:
        return f"{self.prefix}/{digest.hex()}" if self.prefix else digest.hex()

    def ref(self, digest: bytes) -> str:
        return f"s3://{self.bucket}/{self.key(digest)}"

    def put(self, digest: bytes, body: bytes) -> str:
        """Upload (durable when S3 answered); the reference kept in the database."""
        try:
            self._client().put_object(Bucket=self.bucket, Key=self.key(digest), Body=body,
                                      ChecksumAlgorithm="SHA256")
        except Exception as e:
            raise TemporaryDeliveryError(f"the blob store {self.url} did not take the body: {e}") from e
        return self.ref(digest)

    def get(self, ref: str, digest: bytes) -> bytes:
        p = urlsplit(ref)
        try:
            body = self._client().get_object(Bucket=p.netloc, Key=p.path.lstrip("/"))["Body"].read()
        except Exception as e:
            raise TemporaryDeliveryError(f"the blob store has no readable {ref}: {e}") from e
        if hashlib.sha256(body).digest() != digest:
            raise TemporaryDeliveryError(f"{ref} does not have the SHA-256 it is stored under")
        return body

    # -- for `fetchdeliver store sweep` (storage/sweep.py) -----------------------------------------

    def list_bodies(self):
        """Yield pages of [(key, last modified as epoch seconds, size)] of the objects under the
        prefix whose names are bodies' (64 hex digits); other objects are never listed."""
        prefix = f"{self.prefix}/" if self.prefix else ""
        pages = self._client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            out = []
            for o in page.get("Contents", []):
                name = o["Key"][len(prefix):]
                if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
                    out.append((o["Key"], o["LastModified"].timestamp(), int(o.get("Size", 0))))
            if out:
                yield out

    def delete(self, keys: list[str]) -> None:
        """Delete objects (at most 1000 keys, S3's batch limit)."""
        if keys:
            r = self._client().delete_objects(Bucket=self.bucket,
                                              Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
            errors = r.get("Errors") or []
            if errors:
                raise TemporaryDeliveryError(f"the blob store did not delete {len(errors)} object(s): "
                                             f"{errors[0].get('Key')}: {errors[0].get('Message')}")
