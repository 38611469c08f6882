from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from lockgate.errors import IntegrityError, NotFoundError, StorageError
from lockgate.store.artifacts import (
    ArtifactStore,
    LocalArtifactStore,
    MemoryArtifactStore,
    S3ArtifactStore,
    StoredEntry,
)
from lockgate.types import Digest


def _s3(endpoint: str, **kw: int) -> S3ArtifactStore:
    import uuid

    import boto3

    bucket = "b-" + uuid.uuid4().hex[:12]
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    client.create_bucket(Bucket=bucket)
    return S3ArtifactStore(f"s3://{bucket}/team-a", client=client, **kw)


@pytest.fixture(params=["local", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    if request.param == "s3":
        return _s3(request.getfixturevalue("s3_server"))
    return MemoryArtifactStore()


def test_s3_publishes_under_the_digest_verifies_reads_and_never_overwrites(
        s3_server: str) -> None:
    store = _s3(s3_server, multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    big = os.urandom(11 << 20)  # three parts: multipart upload
    d = store.put(big)
    s3 = store._s3
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=store.bucket).get("Contents", [])]
    assert keys == [f"team-a/sha256/{d.hex[:2]}/{d.hex[2:]}"]  # no temporary object left
    assert store.get(d) == big
    assert store.put(big) == d  # copied onto itself, never uploaded again
    again = [o["Key"] for o in s3.list_objects_v2(Bucket=store.bucket).get("Contents", [])]
    assert again == keys
    assert s3.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []
    assert store.get(d) == big
    s3.put_object(Bucket=store.bucket, Key=store.key_for(d), Body=b"tampered")
    with pytest.raises(IntegrityError, match="corrupt"):
        store.get(d)


def test_s3_errors_name_the_store_not_the_credentials(s3_server: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                          aws_access_key_id="AKIASECRETKEYID", aws_secret_access_key="hunter2")
    store = S3ArtifactStore("s3://no-such-bucket/x", client=client)
    with pytest.raises(StorageError) as exc:
        store.put(b"data")
    text = exc.value.diagnostics()
    assert "s3://no-such-bucket/x" in text
    assert "hunter2" not in text
    assert "AKIASECRETKEYID" not in text


def test_put_get_round_trip(store: ArtifactStore) -> None:
    d = store.put(b"model bytes")
    assert d == Digest.of_bytes(b"model bytes")
    assert store.exists(d)
    assert store.get(d) == b"model bytes"
    assert store.put(b"model bytes") == d


def test_missing_digest_is_not_found(store: ArtifactStore) -> None:
    with pytest.raises(NotFoundError):
        store.get(Digest.of_bytes(b"never stored"))


def test_local_flipped_byte_is_refused(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    d = store.put(b"0123456789")
    path = store.path_for(d)
    os.chmod(path, 0o644)
    path.write_bytes(b"0123456788")
    with pytest.raises(IntegrityError, match="corrupt") as info:
        store.get(d)
    assert str(path) in info.value.diagnostics()


def test_memory_changed_blob_is_refused() -> None:
    store = MemoryArtifactStore()
    d = store.put(b"abc")
    store.blobs[d.hex] = b"abd"
    with pytest.raises(IntegrityError):
        store.get(d)


def test_local_never_overwrites_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    payload = os.urandom(1 << 16)
    threads = [threading.Thread(target=store.put, args=(payload,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    d = Digest.of_bytes(payload)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [store.path_for(d)]
    assert not os.access(files[0], os.W_OK) or os.geteuid() == 0
    assert oct(files[0].stat().st_mode & 0o777) == oct(0o444)


def _listed(store: ArtifactStore, digest: Digest) -> StoredEntry:
    return next(e for e in store.entries() if e.digest == digest)


def test_storing_present_bytes_refreshes_the_blob_and_gc_keeps_what_was_written_again(
        store: ArtifactStore) -> None:
    d = store.put(b"an orphan from a failed attempt")
    if isinstance(store, LocalArtifactStore):
        os.utime(store.path_for(d), (time.time() - 7200,) * 2)
    elif isinstance(store, MemoryArtifactStore):
        store.written[d.hex] -= 7200
    else:
        time.sleep(1.1)  # S3 keeps LastModified in whole seconds
    stale = _listed(store, d)
    assert store.put(b"an orphan from a failed attempt") == d
    fresh = _listed(store, d)
    assert fresh.modified > stale.modified
    if not isinstance(store, S3ArtifactStore):
        assert fresh.modified > time.time() - 60
    assert store.remove(stale) is False  # written again since it was listed: kept
    assert store.get(d) == b"an orphan from a failed attempt"
    assert store.remove(fresh) is True
    assert not store.exists(d)
    assert store.remove(fresh) is False
    assert store.put(b"an orphan from a failed attempt") == d  # gone: written anew
    assert store.get(d) == b"an orphan from a failed attempt"
