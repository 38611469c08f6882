from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from lockgate.errors import IntegrityError, NotFoundError
from lockgate.store.artifacts import ArtifactStore, LocalArtifactStore, MemoryArtifactStore
from lockgate.types import Digest


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    return MemoryArtifactStore()


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
