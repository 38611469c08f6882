"""The artifact store: immutable blobs keyed by their sha256 digest."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from lockgate.types import Digest

__all__ = ["ArtifactStore", "EntryKind", "StoredEntry"]


class EntryKind(enum.StrEnum):
    BLOB = "blob"
    """A finished blob, stored under its digest."""
    TEMP = "temp"
    """A write that has not finished: a temporary file or key, or an S3 multipart upload."""


@dataclass(frozen=True)
class StoredEntry:
    """One thing in an artifact store, as :meth:`ArtifactStore.entries` lists it.

    ``name`` is its path or key relative to the store; ``modified`` the POSIX time of its last
    write; ``digest`` is set for blobs; ``handle`` is what the store needs besides the name to
    remove it (an S3 multipart upload's id)."""

    kind: EntryKind
    name: str
    size: int
    modified: float
    digest: Digest | None = None
    handle: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "name": self.name, "size": self.size,
                "modified": self.modified,
                "digest": str(self.digest) if self.digest else None}


class ArtifactStore(Protocol):
    """Content-addressed blobs. ``put`` never overwrites; ``get`` verifies the digest."""

    def put(self, data: bytes) -> Digest:
        """Store ``data`` and return its digest. Storing bytes that are already there writes
        nothing but refreshes the blob's modification time, so a blob a writer is about to
        reference is never older than gc's grace period (see :mod:`lockgate.integrity`)."""
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
