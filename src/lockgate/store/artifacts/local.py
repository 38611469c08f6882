"""Artifacts in a local folder: ``<root>/sha256/<2 hex>/<62 hex>``, written atomically.

A write goes to ``.tmp-*`` next to its final name, locked (``flock``) for as long as it is
being written, then is hard-linked into place; writing a blob that is already there refreshes
its modification time instead. A temporary file nobody holds is what a killed
writer left; :meth:`LocalArtifactStore.remove` deletes one only after taking its lock, so a
write in progress is never removed, whatever its age.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lockgate.errors import IntegrityError, NotFoundError, StorageError
from lockgate.store.artifacts.interface import EntryKind, StoredEntry
from lockgate.types import Digest

__all__ = ["TEMP_PREFIX", "LocalArtifactStore"]

TEMP_PREFIX = ".tmp-"
_HEX2 = re.compile(r"[0-9a-f]{2}")
_HEX62 = re.compile(r"[0-9a-f]{62}")


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, digest: Digest) -> Path:
        return self.root / "sha256" / digest.hex[:2] / digest.hex[2:]

    def put(self, data: bytes) -> Digest:
        digest = Digest.of_bytes(data)
        final = self.path_for(digest)
        if _touch(final):
            return digest
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with _claimed_temp(final.parent) as (f, tmp):
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                os.chmod(tmp, 0o444)
                # link() fails if the name exists, so a finished blob is never overwritten.
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, final)
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

    def entries(self) -> Iterator[StoredEntry]:
        base = self.root / "sha256"
        try:
            shards = sorted(d.name for d in os.scandir(base) if d.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot list the artifact store at {self.root}: {exc}") from exc
        for shard in shards:
            try:
                found = sorted(os.scandir(base / shard), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StorageError(f"cannot list {base / shard}: {exc}") from exc
            for item in found:
                try:
                    st = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                name = f"sha256/{shard}/{item.name}"
                if item.name.startswith(TEMP_PREFIX):
                    yield StoredEntry(EntryKind.TEMP, name, st.st_size, st.st_mtime)
                elif _HEX2.fullmatch(shard) and _HEX62.fullmatch(item.name):
                    yield StoredEntry(EntryKind.BLOB, name, st.st_size, st.st_mtime,
                                      Digest(f"sha256:{shard}{item.name}"))

    def remove(self, entry: StoredEntry) -> bool:
        path = self._path_of(entry)
        try:
            if entry.kind is EntryKind.BLOB:
                if os.stat(path).st_mtime != entry.modified:
                    return False  # written again since it was listed: a writer wants it
                path.unlink()
                return True
            fd = os.open(path, os.O_RDONLY)
            try:
                if not _try_lock(fd):
                    return False  # a live writer holds it
                path.unlink()
                return True
            finally:
                os.close(fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot remove {path}: {exc}") from exc

    def _path_of(self, entry: StoredEntry) -> Path:
        parts = entry.name.split("/")
        if (len(parts) != 3 or parts[0] != "sha256" or not _HEX2.fullmatch(parts[1])
                or parts[2] in ("", ".", "..")):
            raise StorageError(f"{entry.name!r} is not an entry of the store at {self.root}")
        return self.root.joinpath(*parts)


def _touch(path: Path) -> bool:
    """Refresh the modification time of a stored blob; False when there is none."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    except PermissionError:
        # A blob another user stored in a shared folder: it is there, but its time stays.
        return path.is_file()
    except OSError as exc:
        raise StorageError(f"cannot refresh {path}: {exc}") from exc
    return True


@contextlib.contextmanager
def _claimed_temp(folder: Path) -> Iterator[tuple[BinaryIO, str]]:
    """A new ``.tmp-*`` file in ``folder``, locked until the block ends, then removed."""
    while True:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX)
        _lock(fd)
        if os.fstat(fd).st_nlink > 0:
            break
        os.close(fd)  # removed between creation and locking: take another name
    with os.fdopen(fd, "wb") as f:
        try:
            yield f, tmp
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # while still locked, so no one else removes it


if sys.platform != "win32":
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
else:  # no flock: a temporary file is protected by gc's grace period alone

    def _lock(fd: int) -> None:
        return None

    def _try_lock(fd: int) -> bool:
        return True


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
