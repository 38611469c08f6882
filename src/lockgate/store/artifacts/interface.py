"""The artifact store: immutable blobs keyed by their sha256 digest."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from lockgate.types import Digest, EntryKind, StoredEntry

__all__ = ["ArtifactStore", "EntryKind", "StoredEntry"]


class ArtifactStore(Protocol):
    """Content-addressed blobs. ``put`` never overwrites; ``get`` verifies the digest."""

    def put(self, data: bytes) -> Digest:
        """Store ``data`` and return its digest. Storing bytes that are already there writes
        nothing but refreshes the blob's modification time, so a blob a writer is about to
        reference is never older than gc's grace period (see :mod:`lockgate.seal.integrity`)."""
        ...

    def get(self, digest: Digest) -> bytes:
        """The bytes for ``digest``; raises NotFoundError, or IntegrityError if they changed."""
        ...

    def exists(self, digest: Digest) -> bool: ...

    def entries(self) -> Iterator[StoredEntry]:
        """Every blob and every unfinished write in the store, with its size and age."""
        ...

    def remove(self, entry: StoredEntry) -> bool:
        """Delete one entry that :meth:`entries` listed. False when it is gone already, is a
        temporary file that a live writer still holds, or is a blob written again since it was
        listed (its modification time is newer than ``entry.modified``)."""
        ...
