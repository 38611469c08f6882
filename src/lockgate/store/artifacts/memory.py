"""Artifacts in a dict, for fast tests. Reads verify digests like the real stores."""

from __future__ import annotations

import hashlib
import threading

from lockgate.errors import IntegrityError, NotFoundError
from lockgate.types import Digest

__all__ = ["MemoryArtifactStore"]


class MemoryArtifactStore:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, data: bytes) -> Digest:
        digest = Digest.of_bytes(data)
        with self._lock:
            self.blobs.setdefault(digest.hex, bytes(data))
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
