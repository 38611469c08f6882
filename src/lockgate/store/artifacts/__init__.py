"""Content-addressed artifact stores."""

from lockgate.store.artifacts.interface import ArtifactStore
from lockgate.store.artifacts.local import LocalArtifactStore
from lockgate.store.artifacts.memory import MemoryArtifactStore

__all__ = ["ArtifactStore", "LocalArtifactStore", "MemoryArtifactStore"]
