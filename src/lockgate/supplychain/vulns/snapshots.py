"""Offline OSV snapshots for PyPI: osv.dev's ``PyPI/all.zip`` (a zip of ``<ID>.json``) or a folder
of OSV ``*.json`` files, read without the network.

:func:`load_snapshot` keeps the PyPI records that are not withdrawn (the latest ``modified`` of
each id), fingerprints the snapshot (sha256 and the newest ``modified``) and guards against
unsafe member names, links out of the folder and zip bombs. It also says whether the snapshot
is shaped as an ecosystem export (``Snapshot.export``): a zip whose members are all top-level
``<id>.json`` files, each holding the record of that id, and (but for at most 1 %, odd records
osv.dev may carry) every record of the PyPI ecosystem. A folder, a zip with sub-folders or
other files, or one of mixed ecosystems is not one.

Errors: :class:`NotFoundError` for a missing path and :class:`SupplyChainError` for an
unreadable, unsafe or malformed snapshot.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lockgate.errors import InvalidInputError, NotFoundError, SupplyChainError
from lockgate.supplychain.vulns.matching import VulnIndex
from lockgate.supplychain.vulns.records import OsvRecord, parse_record
from lockgate.types import VulnSnapshot

__all__ = ["MAX_MEMBERS", "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES", "MIN_EXPORT_RECORDS", "Snapshot",
           "load_snapshot", "partial_reason"]

MAX_MEMBER_BYTES = 10 * 1024 * 1024
"""Largest single record file a snapshot may hold (real ones are a few kB)."""
MAX_TOTAL_BYTES = 2 * 1024 * 1024 * 1024
"""Largest total of record bytes a snapshot may hold (PyPI's all.zip unpacks to ~100 MB)."""
MAX_MEMBERS = 1_000_000


@dataclass(frozen=True)
class Snapshot:
    """The PyPI records of one snapshot.

    ``sha256`` (64 hex) is the zip file's digest, or for a folder the sha256 of the lines
    ``"<relative posix path>\\0<file sha256 hex>\\n"`` in sorted path order. ``date`` is the newest
    ``modified`` among the kept records. ``skipped`` counts records of other ecosystems,
    ``withdrawn`` records that were withdrawn. ``export`` is true when the snapshot is shaped as
    osv.dev's ``PyPI/all.zip`` (see the module docstring); ``ecosystem`` is always ``PyPI``.
    """

    records: tuple[OsvRecord, ...]
    sha256: str
    date: str
    source: str
    skipped: int = 0
    withdrawn: int = 0
    export: bool = False
    ecosystem: str = "PyPI"

    def index(self) -> VulnIndex:
        return VulnIndex(self.records)


def load_snapshot(path: Path, *, max_member_bytes: int = MAX_MEMBER_BYTES,
                  max_total_bytes: int = MAX_TOTAL_BYTES) -> Snapshot:
    """Read a PyPI ``all.zip`` or a folder of OSV ``*.json`` files (recursively), offline.

    Only ``*.json`` members are read, each at most ``max_member_bytes`` and all together at most
    ``max_total_bytes``; a member name that is absolute or climbs out with ``..`` refuses the whole
    zip. When two files carry the same id, the later ``modified`` wins.
    """
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"no vulnerability snapshot at {path}",
                            hint="download osv.dev's PyPI all.zip and pass its path")
    budget = _Budget(path, max_member_bytes, max_total_bytes)
    documents: Iterable[tuple[str, bytes]]
    shape = _Shape(is_zip=False)
    if path.is_dir():
        documents, digest = _folder_documents(path, budget)
    elif zipfile.is_zipfile(path):
        shape = _Shape(is_zip=True)
        documents, digest = _zip_documents(path, budget, shape), _file_sha256(path)
    else:
        raise SupplyChainError(f"{path} is neither a zip file nor a folder of OSV JSON files")
    latest: dict[str, OsvRecord] = {}
    for name, blob in documents:
        record = _read_document(path, name, blob)
        shape.see(name, record)
        held = latest.get(record.id)
        if held is None or record.modified_at > held.modified_at:
            latest[record.id] = record
    kept = [r for r in latest.values() if r.withdrawn is None and r.is_pypi]
    withdrawn = sum(1 for r in latest.values() if r.withdrawn is not None)
    skipped = len(latest) - len(kept) - withdrawn
    if not kept:
        raise SupplyChainError(
            f"{path} holds no current PyPI records ({skipped} of other ecosystems, "
            f"{withdrawn} withdrawn)",
            hint="use the PyPI snapshot (osv.dev's PyPI/all.zip)",
        )
    records = tuple(sorted(kept, key=lambda r: r.id))
    newest = max(records, key=lambda r: r.modified_at)
    return Snapshot(records, digest, newest.modified, str(path), skipped, withdrawn,
                    export=shape.is_export(skipped, len(latest)))


class _Shape:
    """What the members of a snapshot say about it being an ecosystem export."""

    def __init__(self, *, is_zip: bool) -> None:
        self.is_zip, self.names_match, self.others = is_zip, True, False

    def see(self, name: str, record: OsvRecord) -> None:
        if name != f"{record.id}.json":  # also refuses sub-folders: ids hold no "/"
            self.names_match = False

    def is_export(self, skipped: int, total: int) -> bool:
        return (self.is_zip and self.names_match and not self.others
                and skipped * 100 <= total)


def _read_document(source: Path, name: str, blob: bytes) -> OsvRecord:
    try:
        data = json.loads(blob)
    except (ValueError, RecursionError) as exc:
        raise SupplyChainError(f"{source}: {name} is not valid JSON: {exc}") from exc
    try:
        return parse_record(data)
    except InvalidInputError as exc:
        raise SupplyChainError(f"{source}: {name}: {exc.message}") from exc


def _file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _unsafe_member(name: str) -> bool:
    """Absolute, drive-letter, backslash or ``..`` names: never in a real snapshot."""
    return (not name or any(c in name for c in "\\\x00") or name.startswith("/")
            or re.match(r"^[A-Za-z]:", name) is not None or ".." in PurePosixPath(name).parts)


class _Budget:
    """Caps on one record's size and on all records' total: the zip-bomb guard."""

    def __init__(self, source: Path, per_member: int, total: int) -> None:
        self.source, self.per_member, self.total, self.used = source, per_member, total, 0

    def take(self, name: str, size: int, *, declared: bool = False) -> None:
        """Refuse ``size`` over a cap; a ``declared`` (zip header) size is checked, not counted."""
        if size > self.per_member:
            raise SupplyChainError(f"{self.source}: {name} is larger than {self.per_member} "
                                   "bytes", hint="an OSV record is a few kB; is this a zip bomb?")
        if self.used + size > self.total:
            raise SupplyChainError(f"{self.source} holds more than {self.total} bytes of records")
        self.used += 0 if declared else size


def _zip_documents(path: Path, budget: _Budget,
                   shape: _Shape) -> Iterator[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SupplyChainError(f"cannot open {path} as a zip file: {exc}") from exc
    with archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        bad = [n for n in names if _unsafe_member(n)]
        if bad or len(set(names)) != len(names) or len(names) > MAX_MEMBERS:
            raise SupplyChainError(f"{path} has unsafe member names, duplicates or more than "
                                   f"{MAX_MEMBERS} members: {bad[:3]!r}",
                                   hint="the snapshot is corrupt or tampered with")
        for info in infos:
            if info.is_dir() or not info.filename.lower().endswith(".json"):
                shape.others = True
                continue
            budget.take(info.filename, info.file_size, declared=True)  # refuse early
            try:
                with archive.open(info) as member:
                    blob = member.read(budget.per_member + 1)  # actual size: never trust
            except (zipfile.BadZipFile, zlib.error, OSError, NotImplementedError,
                    RuntimeError) as exc:
                raise SupplyChainError(f"{path}: cannot read {info.filename}: {exc}") from exc
            budget.take(info.filename, len(blob))
            yield info.filename, blob


def _folder_documents(root: Path, budget: _Budget) -> tuple[list[tuple[str, bytes]], str]:
    real_root = root.resolve()
    files = sorted(  # os.walk does not follow symlinked folders
        ((Path(folder) / n).relative_to(root).as_posix(), Path(folder) / n)
        for folder, _, names in os.walk(root) for n in names if n.lower().endswith(".json"))
    blobs: list[tuple[str, bytes]] = []
    lines = hashlib.sha256()
    for rel, full in files:
        if full.is_symlink() and not full.resolve().is_relative_to(real_root):
            raise SupplyChainError(f"{root}: {rel} links outside the snapshot folder")
        try:
            with full.open("rb") as f:
                blob = f.read(budget.per_member + 1)
        except OSError as exc:
            raise SupplyChainError(f"{root}: cannot read {rel}: {exc}") from exc
        budget.take(rel, len(blob))
        lines.update(f"{rel}\0{hashlib.sha256(blob).hexdigest()}\n".encode())
        blobs.append((rel, blob))
    return blobs, lines.hexdigest()


MIN_EXPORT_RECORDS = 1000
"""Fewest current records a whole PyPI export holds by default (osv.dev's has well over 10,000);
the vulnerabilities gate's ``min_records`` overrides it."""


def partial_reason(snapshot: VulnSnapshot | None, min_records: int) -> str | None:
    """Why an imported ``snapshot`` is not a whole ecosystem export, or None when it is one
    (or when there is none: missing data is reported on its own)."""
    if snapshot is None:
        return None
    if not snapshot.export:
        return (f"the vulnerability data ({snapshot.source}, {snapshot.records} records) is "
                f"not a whole {snapshot.ecosystem} export: it is not shaped as osv.dev's "
                "all.zip (top-level <id>.json records of one ecosystem)")
    if snapshot.records < min_records:
        return (f"the vulnerability data ({snapshot.source}) holds {snapshot.records} current "
                f"records, fewer than the {min_records} of a whole {snapshot.ecosystem} export")
    return None
