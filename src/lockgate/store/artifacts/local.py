"""Artifacts in a local folder: ``<root>/sha256/<2 hex>/<62 hex>``, written atomically."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from lockgate.errors import IntegrityError, NotFoundError, StorageError
from lockgate.types import Digest

__all__ = ["LocalArtifactStore"]


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, digest: Digest) -> Path:
        return self.root / "sha256" / digest.hex[:2] / digest.hex[2:]

    def put(self, data: bytes) -> Digest:
        digest = Digest.of_bytes(data)
        final = self.path_for(digest)
        if final.exists():
            return digest
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o444)
                # link() fails if the name exists, so a finished blob is never overwritten.
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, final)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            _fsync_dir(final.parent)
        except OSError as exc:
            raise StorageError(f"cannot write artifact {digest} under {self.root}: {exc}") from exc
        return digest

    def get(self, digest: Digest) -> bytes:
        path = self.path_for(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"artifact {digest} is not in the store at {self.root}") from None
        except OSError as exc:
            raise StorageError(f"cannot read artifact {digest}: {exc}") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest.hex:
            raise IntegrityError(
                f"artifact {digest} is corrupt: its content hashes to sha256:{actual}",
                hint=f"the file {path} was changed after it was stored; restore it from a "
                "backup or register the model again",
            )
        return data

    def exists(self, digest: Digest) -> bool:
        return self.path_for(digest).is_file()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
