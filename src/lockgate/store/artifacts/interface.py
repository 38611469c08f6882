"""The artifact store: immutable blobs keyed by their sha256 digest."""

from __future__ import annotations

from typing import Protocol

from lockgate.types import Digest

__all__ = ["ArtifactStore"]


class ArtifactStore(Protocol):
    """Content-addressed blobs. ``put`` never overwrites; ``get`` verifies the digest."""

    def put(self, data: bytes) -> Digest:
        """Store ``data`` and return its digest; storing the same bytes twice is a no-op."""
        ...

    def get(self, digest: Digest) -> bytes:
        """The bytes for ``digest``; raises NotFoundError, or IntegrityError if they changed."""
        ...

    def exists(self, digest: Digest) -> bool: ...
