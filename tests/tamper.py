"""Damaging stored state behind lockgate's back, as an attacker or a bad disk would."""

from __future__ import annotations

from lockgate.api.facade import Lockgate
from lockgate.store.artifacts import LocalArtifactStore
from lockgate.types import Digest


def flip_byte(lg: Lockgate, digest: Digest, at: int = -3) -> None:
    """Flip every bit of one byte of a blob in the local artifact store."""
    assert isinstance(lg.artifacts, LocalArtifactStore)
    path = lg.artifacts.path_for(digest)
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
