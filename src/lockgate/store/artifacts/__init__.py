"""Content-addressed artifact stores."""

from lockgate.store.artifacts.interface import ArtifactStore
from lockgate.store.artifacts.local import LocalArtifactStore
from lockgate.store.artifacts.memory import MemoryArtifactStore
from lockgate.store.artifacts.s3 import S3ArtifactStore

__all__ = ["ArtifactStore", "LocalArtifactStore", "MemoryArtifactStore", "S3ArtifactStore"]
