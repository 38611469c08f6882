"""Checking and collecting a home's stored state: ``lockgate fsck`` and ``lockgate gc``.

    report = fsck(meta, artifacts, settings)   # every version, the audit chain, the store
    removed = collect(meta, artifacts, grace_s=3600, actor="ops")

:func:`fsck` reads every blob a version references (its files, its signature bundle, its
reference profiles) and checks its digest, verifies each version's signature and signed
manifest against its record as loading does (:func:`lockgate.seal.folder.verify`), recomputes the
audit chain, and lists what no version references: orphan blobs and unfinished writes (what an
interrupted registration leaves). Damage makes :attr:`FsckReport.damaged` true; orphans are
warnings.

:func:`collect` removes orphan blobs and unfinished writes older than a grace period. It
deletes while holding the metadata store's write lock (SQLite's ``BEGIN IMMEDIATE``, the
PostgreSQL advisory lock every writer takes) and reads the references again under it. A
registration writes its blobs and commits its version inside that same lock, so a blob is
either referenced by a committed version when gc looks, or written again by the registration
after gc is done: a referenced blob is never removed, whatever the grace. A local temporary
file that a live writer holds (``flock``) is never removed.

A reference profile is the one blob written outside that lock: the metadata store runs caller
code inside a transaction only when it creates a version, and a writer that held
``exclusive()`` while it committed would wait on its own lock. Three rules keep its reference
whole instead:

- Storing bytes that are already there refreshes the blob's modification time (``os.utime``;
  on S3 a server-side copy onto itself), so a profile whose bytes match an old orphan (a
  retried ``lockgate reference set``) is as young as a new write, and the grace keeps it.
- gc removes an entry only as it listed it: a blob written again since (a newer modification
  time, read again under the lock) is kept.
- The profile's blob is written again after its reference commits. A gc that read the
  references before the commit finds the audit tail changed under the lock and reads them
  again; one that took the lock first was done before the commit, and the second write
  restores what it removed. So with any grace, ``0`` included, a reference never ends up
  pointing at a missing blob; with ``--grace 0`` the blob may be missing for the moment
  between the commit and the second write.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lockgate.audit import AuditEvent, EventType, verify_chain
from lockgate.config.settings import Settings
from lockgate.errors import IntegrityError, NotFoundError, SignatureError, StorageError
from lockgate.progress import NullProgress, Progress
from lockgate.seal import folder as sealing
from lockgate.store.artifacts import ArtifactStore, EntryKind, StoredEntry
from lockgate.store.metadata import MetadataStore
from lockgate.types import Digest, Version

__all__ = ["CollectReport", "FsckReport", "Problem", "ProblemKind", "collect", "fsck",
           "references"]

_ALL = 1 << 30  # "every observation" for the store's newest-first listing


class ProblemKind(enum.StrEnum):
    MISSING_BLOB = "missing_blob"
    CORRUPT_BLOB = "corrupt_blob"
    SIGNATURE = "signature"
    MANIFEST = "manifest"
    BAD_RECORD = "bad_record"
    AUDIT_CHAIN = "audit_chain"
    ORPHAN_BLOB = "orphan_blob"
    TEMP_FILE = "temp_file"

    @property
    def is_damage(self) -> bool:
        return self not in (ProblemKind.ORPHAN_BLOB, ProblemKind.TEMP_FILE)


@dataclass(frozen=True)
class Problem:
    """One finding: ``subject`` names what is affected (``m@3 model.onnx``, ``audit row 17``,
    ``sha256/ab/…``), ``message`` says what is wrong."""

    kind: ProblemKind
    subject: str
    message: str
    size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "damage": self.kind.is_damage, "subject": self.subject,
                "message": self.message, "size": self.size}


@dataclass(frozen=True)
class FsckReport:
    versions: int
    blobs: int
    audit_events: int
    problems: tuple[Problem, ...] = ()

    @property
    def damage(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.kind.is_damage)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if not p.kind.is_damage)

    @property
    def damaged(self) -> bool:
        return bool(self.damage)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": not self.damaged, "versions": self.versions, "blobs": self.blobs,
                "audit_events": self.audit_events, "damage": len(self.damage),
                "warnings": len(self.warnings),
                "problems": [p.to_dict() for p in self.problems]}


@dataclass(frozen=True)
class CollectReport:
    """What :func:`collect` removed (or, with ``dry_run``, would remove)."""

    removed: tuple[StoredEntry, ...]
    grace_s: float
    dry_run: bool
    kept: int = 0
    """Candidates left in place: referenced again under the lock, gone, or still written."""
    event_seq: int | None = field(default=None)

    @property
    def bytes_freed(self) -> int:
        return sum(e.size for e in self.removed)

    def count(self, kind: EntryKind) -> int:
        return sum(1 for e in self.removed if e.kind is kind)

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "grace_s": self.grace_s,
                "blobs": self.count(EntryKind.BLOB), "temp_files": self.count(EntryKind.TEMP),
                "bytes": self.bytes_freed, "kept": self.kept, "audit_seq": self.event_seq,
                "removed": [e.to_dict() for e in self.removed]}


def _versions(meta: MetadataStore) -> Iterator[tuple[str, int, Version | Exception]]:
    for name in meta.list_models():
        for row in meta.list_versions(name):
            try:
                yield name, row.number, Version.from_record(name, row.number, row.stage,
                                                            row.record)
            except Exception as exc:  # a record edited into something that does not parse
                yield name, row.number, exc


def _blobs_of(v: Version) -> dict[str, Digest]:
    """The version's blobs by what they are to it: its files and its signature bundle."""
    blobs = dict(v.files or {sealing.MODEL_FILE: v.digest})
    if blobs.get(sealing.MODEL_FILE) != v.digest:
        blobs["model digest"] = v.digest
    if v.signature_bundle is not None:
        blobs["signature bundle"] = v.signature_bundle
    return blobs


def _profiles(meta: MetadataStore, name: str) -> Iterator[tuple[int, Digest]]:
    for obs in meta.observations(name, "reference", limit=_ALL):
        try:
            yield obs.number, Digest.parse(str(obs.record.get("profile", "")))
        except Exception:
            continue


def references(meta: MetadataStore) -> dict[Digest, list[str]]:
    """Every blob the metadata store references, with who references it (``m@3 model.onnx``)."""
    refs: dict[Digest, list[str]] = {}
    for name, number, v in _versions(meta):
        if isinstance(v, Version):
            for what, digest in _blobs_of(v).items():
                refs.setdefault(digest, []).append(f"{name}@{number} {what}")
    for name in meta.list_models():
        for number, digest in _profiles(meta, name):
            refs.setdefault(digest, []).append(f"{name}@{number} reference profile")
    return refs


def fsck(meta: MetadataStore, artifacts: ArtifactStore, settings: Settings, *,
         progress: Progress | None = None, now: float | None = None) -> FsckReport:
    """Check every version, the audit chain and the artifact store; move nothing, write
    nothing. StorageError when a store cannot be read at all."""
    progress = progress or NullProgress()
    problems: list[Problem] = []
    checked: dict[Digest, Problem | None] = {}
    versions = list(_versions(meta))
    profiles = {name: list(_profiles(meta, name)) for name in meta.list_models()}
    progress.start("fsck", total=len(versions))
    for name, number, v in versions:
        ref = f"{name}@{number}"
        if not isinstance(v, Version):
            problems.append(Problem(ProblemKind.BAD_RECORD, ref,
                                    f"the version record does not parse: {v}"))
            continue
        found = [_check_blob(artifacts, checked, f"{ref} {what}", d)
                 for what, d in _blobs_of(v).items()]
        for number_, digest in profiles.get(name, []):
            if number_ == number:
                found.append(_check_blob(artifacts, checked, f"{ref} reference profile",
                                         digest))
        own = [p for p in found if p is not None]
        problems += own
        if not own:
            problems += _check_seal(v, artifacts, settings)
        progress.advance("fsck")
    progress.finish("fsck")
    records = meta.audit_records()
    chain = verify_chain(records)
    if not chain.ok:
        problems.append(Problem(ProblemKind.AUDIT_CHAIN, f"audit row {chain.first_broken}",
                                chain.reason))
    refs = references(meta)
    clock = time.time() if now is None else now
    entries = list(artifacts.entries())
    for e in entries:
        age = _age(clock - e.modified)
        if e.kind is EntryKind.TEMP:
            problems.append(Problem(ProblemKind.TEMP_FILE, e.name,
                                    f"an unfinished write ({_size(e.size)}, {age} old)",
                                    e.size))
        elif e.digest is not None and e.digest not in refs:
            problems.append(Problem(ProblemKind.ORPHAN_BLOB, e.name,
                                    f"no version references it ({_size(e.size)}, {age} old)",
                                    e.size))
    return FsckReport(len(versions), sum(1 for e in entries if e.kind is EntryKind.BLOB),
                      len(records), tuple(problems))


def _check_blob(artifacts: ArtifactStore, checked: dict[Digest, Problem | None], subject: str,
                digest: Digest) -> Problem | None:
    if digest not in checked:
        try:
            artifacts.get(digest)
            checked[digest] = None
        except NotFoundError:
            checked[digest] = Problem(ProblemKind.MISSING_BLOB, subject,
                                      f"blob {digest} is not in the artifact store")
        except IntegrityError as exc:
            checked[digest] = Problem(ProblemKind.CORRUPT_BLOB, subject, exc.message)
    found = checked[digest]
    return None if found is None else Problem(found.kind, subject, found.message)


def _check_seal(v: Version, artifacts: ArtifactStore, settings: Settings) -> list[Problem]:
    ref = f"{v.name}@{v.number}"
    manifest = v.files.get(sealing.MANIFEST_FILE)
    if manifest is not None and artifacts.get(manifest) != sealing.manifest_bytes(v):
        return [Problem(ProblemKind.MANIFEST, f"{ref} {sealing.MANIFEST_FILE}",
                        "the stored manifest does not match the version record (the record "
                        "was edited after registration)")]
    try:
        sealing.verify(v, artifacts, settings)
    except SignatureError as exc:
        return [Problem(ProblemKind.SIGNATURE, f"{ref} signature", exc.message)]
    except (IntegrityError, NotFoundError) as exc:  # a blob changed between the two reads
        return [Problem(ProblemKind.CORRUPT_BLOB, ref, exc.message)]
    return []


def collect(meta: MetadataStore, artifacts: ArtifactStore, *, grace_s: float, actor: str,
            dry_run: bool = False, now: float | None = None) -> CollectReport:
    """Remove orphan blobs and unfinished writes last written more than ``grace_s`` seconds
    ago; never a blob a version references. One ``artifacts.collected`` audit event records
    what was removed (none when nothing was, or with ``dry_run``). StorageError when the
    registry kept changing under it."""
    clock = time.time() if now is None else now
    entries = list(artifacts.entries())
    for _ in range(_ATTEMPTS):
        # Every write that adds a reference (a registration, a reference profile) appends an
        # audit event in its transaction: if the log's tail is the same under the write lock
        # as before the references were read, they are still exactly the references.
        seen = meta.audit_tail()
        refs = references(meta)
        candidates = [e for e in entries if clock - e.modified >= grace_s
                      and (e.kind is EntryKind.TEMP or e.digest not in refs)]
        if dry_run:
            return CollectReport(tuple(candidates), grace_s, True)
        removed: list[StoredEntry] = []
        with meta.exclusive() as tail:
            if tail != seen:
                continue
            removed = [e for e in candidates if artifacts.remove(e)]
        report = CollectReport(tuple(removed), grace_s, False, len(candidates) - len(removed))
        if not removed:
            return report
        rec = meta.append_event(AuditEvent(EventType.ARTIFACTS_COLLECTED, actor, None, None, {
            "blobs": report.count(EntryKind.BLOB), "temp_files": report.count(EntryKind.TEMP),
            "bytes": report.bytes_freed, "grace_s": grace_s}))
        return CollectReport(report.removed, grace_s, False, report.kept, rec.seq)
    raise StorageError(f"the registry changed {_ATTEMPTS} times while gc read it; nothing "
                       "was removed", hint="run `lockgate gc` again when fewer writes land")


_ATTEMPTS = 20




def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _age(seconds: float) -> str:
    s = max(0.0, seconds)
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= scale:
            return f"{s / scale:.0f} {unit}"
    return f"{s:.0f} s"
