"""Content-addressed artifact stores."""

from lockgate.store.artifacts.interface import ArtifactStore, EntryKind, StoredEntry
from lockgate.store.artifacts.local import LocalArtifactStore
from lockgate.store.artifacts.memory import MemoryArtifactStore
from lockgate.store.artifacts.s3 import S3ArtifactStore

__all__ = [
    "ArtifactStore",
    "EntryKind",
    "LocalArtifactStore",
    "MemoryArtifactStore",
    "S3ArtifactStore",
    "StoredEntry",
]
