"""Artifacts in a dict, for fast tests. Reads verify digests like the real stores."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

from lockgate.errors import IntegrityError, NotFoundError
from lockgate.store.artifacts.interface import EntryKind, StoredEntry
from lockgate.types import Digest

__all__ = ["MemoryArtifactStore"]


class MemoryArtifactStore:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.written: dict[str, float] = {}
        self._lock = threading.Lock()

    def put(self, data: bytes) -> Digest:
        digest = Digest.of_bytes(data)
        with self._lock:
            if digest.hex not in self.blobs:
                self.blobs[digest.hex] = bytes(data)
            self.written[digest.hex] = time.time()  # stored again: as young as a new write
        return digest

    def get(self, digest: Digest) -> bytes:
        try:
            data = self.blobs[digest.hex]
        except KeyError:
            raise NotFoundError(f"artifact {digest} is not in the store") from None
        if hashlib.sha256(data).hexdigest() != digest.hex:
            raise IntegrityError(f"artifact {digest} is corrupt: its content changed")
        return data

    def exists(self, digest: Digest) -> bool:
        return digest.hex in self.blobs

    def entries(self) -> Iterator[StoredEntry]:
        with self._lock:
            found = [(h, len(b), self.written.get(h, 0.0)) for h, b in self.blobs.items()]
        for h, size, written in sorted(found):
            yield StoredEntry(EntryKind.BLOB, f"sha256/{h[:2]}/{h[2:]}", size, written,
                              Digest(f"sha256:{h}"))

    def remove(self, entry: StoredEntry) -> bool:
        if entry.digest is None:
            return False
        with self._lock:
            if self.written.get(entry.digest.hex, 0.0) != entry.modified:
                return False  # gone, or written again since it was listed
            self.written.pop(entry.digest.hex, None)
            return self.blobs.pop(entry.digest.hex, None) is not None
