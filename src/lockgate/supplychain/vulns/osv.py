"""Offline OSV vulnerability data for PyPI, and matching installed distributions against it.

A snapshot is osv.dev's ``PyPI/all.zip`` (a zip of ``<ID>.json``) or a folder of OSV ``*.json``
files; :func:`load_snapshot` reads it without the network, keeps the PyPI records that are not
withdrawn and fingerprints it (sha256 and the newest ``modified``). :class:`VulnIndex` answers
"which records affect ``name==version``" with one dict look-up per package.

Matching follows the evaluation pseudocode of the OSV schema (``docs/schema.md``, "Evaluation"):
a version is affected when ``affected[].versions`` lists it, or when one ``ECOSYSTEM``/``SEMVER``
range, walked in sorted event order (``introduced``/``fixed``/``last_affected``) and bounded by its
``limit`` events, leaves it vulnerable. ``GIT`` ranges are ignored. Versions are PEP 440
(``packaging``; SEMVER events are read as PEP 440 too), names are PEP 503-normalised, and a local
label (``2.1.0+cu121``) is dropped before comparing: a local build has its release's flaws.

Fail closed wherever a silent "not affected" would be a guess:

- an installed version or a range event that is not PEP 440, on a record naming the package, is a
  finding with status ``unparseable`` (gate it as affected). ``versions`` lists are compared as
  strings as well, so an odd entry there flags nothing by itself;
- a range without an ``introduced`` event (invalid per the schema) starts at ``"0"``;
- a record nobody rated is ``UNKNOWN``, which :func:`severity_rank` ranks with ``CRITICAL``.

Severity level: ``database_specific.severity`` (GitHub's LOW/MODERATE/HIGH/CRITICAL) when present,
else the highest CVSS v3.x base score among ``severity`` entries on the CVSS qualitative scale
(0 NONE, 0.1-3.9 LOW, 4-6.9 MODERATE, 7-8.9 HIGH, 9-10 CRITICAL). CVSS v2 and v4 vectors are kept
but not scored: their level is ``UNKNOWN`` unless the database names one. Records that alias each
other (GHSA-x and PYSEC-y) become one finding per package: the most severe record with a known
level, carrying the others' ids as aliases.

Errors: :func:`parse_record` raises :class:`InvalidInputError`; :func:`load_snapshot` raises
:class:`NotFoundError` for a missing path and :class:`SupplyChainError` for an unreadable, unsafe
or malformed snapshot.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import math
import os
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, TypeAlias

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from lockgate.errors import InvalidInputError, NotFoundError, SupplyChainError

__all__ = [
    "Affected", "AffectedRange", "Event", "Finding", "FindingStatus", "OsvRecord", "Severity",
    "SeverityScore", "Snapshot", "VulnIndex", "cvss3_base_score", "load_snapshot",
    "parse_record", "parse_timestamp", "severity_rank",
]

ECOSYSTEM = "PyPI"
MAX_MEMBER_BYTES = 10 * 1024 * 1024
"""Largest single record file a snapshot may hold (real ones are a few kB)."""
MAX_TOTAL_BYTES = 2 * 1024 * 1024 * 1024
"""Largest total of record bytes a snapshot may hold (PyPI's all.zip unpacks to ~100 MB)."""
MAX_MEMBERS = 1_000_000

_EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")
_RANGE_TYPES = ("ECOSYSTEM", "GIT", "SEMVER")
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


class Severity(enum.StrEnum):
    """Qualitative severity. ``MEDIUM`` (CVSS's word) is read as ``MODERATE`` (GitHub's)."""

    NONE = "NONE"
    LOW = "LOW"
    MODERATE = "MODERATE"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"
    UNKNOWN = "UNKNOWN"


# UNKNOWN ranks with CRITICAL: what nobody rated is gated like the worst (fail closed).
_RANK = {Severity.NONE: 0, Severity.LOW: 1, Severity.MODERATE: 2, Severity.HIGH: 3,
         Severity.CRITICAL: 4, Severity.UNKNOWN: 4}


def _level_of(text: str) -> Severity | None:
    key = text.strip().upper()
    try:
        return Severity("MODERATE" if key == "MEDIUM" else key)
    except ValueError:
        return None


def severity_rank(level: str) -> int:
    """Order of a level for gating: NONE 0 < LOW 1 < MODERATE (= MEDIUM) 2 < HIGH 3 < CRITICAL 4.

    ``UNKNOWN`` ranks 4 with CRITICAL, so a record nobody rated fails a gate like the worst one.
    Case does not matter; any other name is an :class:`InvalidInputError`.
    """
    found = _level_of(level)
    if found is None:
        raise InvalidInputError(f"unknown severity level {level!r}",
                                hint="use NONE, LOW, MODERATE (or MEDIUM), HIGH or CRITICAL")
    return _RANK[found]


class FindingStatus(enum.StrEnum):
    AFFECTED = "affected"
    UNPARSEABLE = "unparseable"
    """A version could not be compared: gate it as affected."""


# -- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeverityScore:
    """One ``severity[]`` entry: ``type`` (CVSS_V3, CVSS_V4, ...) and its ``score`` vector."""

    type: str
    score: str


@dataclass(frozen=True)
class Event:
    """One range event: ``kind`` is introduced, fixed, last_affected or limit."""

    kind: str
    version: str


@dataclass(frozen=True)
class AffectedRange:
    type: str
    events: tuple[Event, ...]
    repo: str | None = None


@dataclass(frozen=True)
class Affected:
    """One ``affected[]`` entry. ``ecosystem``/``name`` are empty when it names no package."""

    ecosystem: str
    name: str
    ranges: tuple[AffectedRange, ...] = ()
    versions: tuple[str, ...] = ()
    severity: tuple[SeverityScore, ...] = ()

    @property
    def is_pypi(self) -> bool:
        return self.ecosystem.split(":", 1)[0] == ECOSYSTEM and bool(self.name)


@dataclass(frozen=True)
class OsvRecord:
    """A parsed OSV record. ``level``/``score`` are derived (see the module docstring); ``raw``
    is the JSON it came from, which is what a store keeps."""

    id: str
    modified: str
    aliases: tuple[str, ...]
    summary: str
    published: str | None
    withdrawn: str | None
    severity: tuple[SeverityScore, ...]
    level: Severity
    score: float | None
    affected: tuple[Affected, ...]
    database_severity: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def modified_at(self) -> datetime:
        return parse_timestamp(self.modified, where=f"OSV record {self.id}: modified")

    @property
    def packages(self) -> tuple[str, ...]:
        """PEP 503 names of the PyPI packages this record affects, sorted."""
        return tuple(sorted({canonicalize_name(a.name) for a in self.affected if a.is_pypi}))

    @property
    def is_pypi(self) -> bool:
        return any(a.is_pypi for a in self.affected)


def parse_record(data: Mapping[str, Any]) -> OsvRecord:
    """Check the OSV essentials of one record and parse it.

    Raises :class:`InvalidInputError` naming the record id and field: no ``id``/``modified``, a
    wrong JSON type, a timestamp that is not RFC 3339, a range of unknown type or without events,
    or an event that is not exactly one of introduced/fixed/last_affected/limit.
    """
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"OSV record: expected a JSON object, got {type(data).__name__}")
    rid = data.get("id")
    if not isinstance(rid, str) or not rid.strip():
        raise InvalidInputError("OSV record: 'id' is missing or not a non-empty string")
    f = _Fields(rid)
    modified = f.need(data, "modified")
    times = {k: f.text(data, k) for k in ("published", "withdrawn")}
    for key, value in (("modified", modified), *times.items()):
        if value:
            parse_timestamp(value, where=f"OSV record {rid}: {key}")
    summary = (f.text(data, "summary") or "").strip()
    details = (f.text(data, "details") or "").strip()
    if not summary and details:
        summary = details.splitlines()[0][:120]
    severity = _scores(f, data, "")
    db = f.get(data, "database_specific", Mapping) or {}
    db_severity = db.get("severity") if isinstance(db.get("severity"), str) else None
    affected = tuple(_affected(f, item, f"affected[{i}]")
                     for i, item in enumerate(f.get(data, "affected", list) or []))
    level, score = _rate(db_severity, severity or [s for a in affected for s in a.severity])
    return OsvRecord(
        id=rid, modified=modified, aliases=tuple(f.texts(data, "aliases")), summary=summary,
        published=times["published"], withdrawn=times["withdrawn"], severity=severity,
        level=level, score=score, affected=affected, database_severity=db_severity, raw=data,
    )


class _Fields:
    """Typed readers of one record's fields whose errors name the record and the field."""

    def __init__(self, rid: str) -> None:
        self.rid = rid

    def fail(self, where: str, message: str) -> InvalidInputError:
        return InvalidInputError(f"OSV record {self.rid}: {where}: {message}")

    def get(self, obj: Any, key: str, kind: type, where: str = "") -> Any:
        """``obj[key]`` if it is a ``kind``, None when absent."""
        name = f"{where}.{key}" if where else key
        if type(obj) is not dict and not isinstance(obj, Mapping):
            raise self.fail(where or name, f"expected an object, got {type(obj).__name__}")
        value = obj.get(key)
        if value is not None and type(value) is not kind and not isinstance(value, kind):
            raise self.fail(name, f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    def text(self, obj: Any, key: str, where: str = "") -> str | None:
        value: str | None = self.get(obj, key, str, where)
        return value

    def need(self, obj: Any, key: str, where: str = "") -> str:
        value = self.text(obj, key, where)
        if value is None:
            raise self.fail(f"{where}.{key}" if where else key, "is missing")
        return value

    def texts(self, obj: Any, key: str, where: str = "") -> list[str]:
        items: list[Any] = self.get(obj, key, list, where) or []
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise self.fail(f"{where}.{key}[{i}]" if where else f"{key}[{i}]", "not a string")
        return items


def _scores(f: _Fields, obj: Any, where: str) -> tuple[SeverityScore, ...]:
    items = f.get(obj, "severity", list, where) or []
    prefix = f"{where}.severity" if where else "severity"
    return tuple(SeverityScore(f.need(item, "type", f"{prefix}[{i}]"),
                               f.need(item, "score", f"{prefix}[{i}]"))
                 for i, item in enumerate(items))


def _affected(f: _Fields, item: Any, where: str) -> Affected:
    ecosystem = name = ""
    package = f.get(item, "package", Mapping, where)
    if package is not None:
        ecosystem = f.need(package, "ecosystem", f"{where}.package")
        name = f.need(package, "name", f"{where}.package")
    ranges = tuple(_range(f, r, f"{where}.ranges[{j}]")
                   for j, r in enumerate(f.get(item, "ranges", list, where) or []))
    return Affected(ecosystem, name, ranges, tuple(f.texts(item, "versions", where)),
                    _scores(f, item, where))


def _range(f: _Fields, item: Any, where: str) -> AffectedRange:
    kind = f.need(item, "type", where)
    if kind not in _RANGE_TYPES:
        raise f.fail(f"{where}.type", f"{kind!r} is not one of {list(_RANGE_TYPES)}")
    raw_events = f.get(item, "events", list, where)
    if not raw_events:
        raise f.fail(f"{where}.events", "a range needs at least one event")
    events = []
    for k, evt in enumerate(raw_events):
        here = f"{where}.events[{k}]"
        if not isinstance(evt, Mapping) or len(evt) != 1:
            raise f.fail(here, "an event is an object with exactly one key")
        ((key, value),) = evt.items()
        if key not in _EVENT_KINDS:
            raise f.fail(here, f"{key!r} is not one of {list(_EVENT_KINDS)}")
        if not isinstance(value, str) or not value.strip():
            raise f.fail(f"{here}.{key}", "expected a non-empty string")
        events.append(Event(key, value.strip()))
    return AffectedRange(kind, tuple(events), f.text(item, "repo", where))


def parse_timestamp(text: str, *, where: str = "timestamp") -> datetime:
    """An RFC 3339 timestamp as OSV writes it (``Z``, up to nanoseconds) as an aware datetime;
    :class:`InvalidInputError` naming ``where`` otherwise."""
    m = _RFC3339.match(text.strip())
    if m is None:
        raise InvalidInputError(f"{where}: {text!r} is not an RFC 3339 timestamp")
    day, clock, fraction, zone = m.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    fraction = f".{(fraction + '000000')[:6]}" if fraction else ""
    try:
        return datetime.fromisoformat(f"{day}T{clock}{fraction}{zone}")
    except ValueError as exc:
        raise InvalidInputError(f"{where}: {text!r}: {exc}") from exc


# -- severity ----------------------------------------------------------------------------------

_CVSS3_BASE: dict[str, dict[str, float]] = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "PR": {"N": 0.85, "L": 0.62, "H": 0.27},
    "UI": {"N": 0.85, "R": 0.62},
    "S": {"U": 0.0, "C": 1.0},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
    "I": {"H": 0.56, "L": 0.22, "N": 0.0},
    "A": {"H": 0.56, "L": 0.22, "N": 0.0},
}
_CVSS3_PR_CHANGED = {"N": 0.85, "L": 0.68, "H": 0.5}
_CVSS3_OTHER = frozenset(
    {"E", "RL", "RC", "CR", "IR", "AR", "MAV", "MAC", "MPR", "MUI", "MS", "MC", "MI", "MA"}
)


def _roundup(value: float) -> float:
    """CVSS 3.1 Roundup: the smallest one-decimal number >= value, free of float noise."""
    whole = round(value * 100_000)
    if whole % 10_000 == 0:
        return whole / 100_000.0
    return (math.floor(whole / 10_000) + 1) / 10.0


def cvss3_base_score(vector: str) -> float:
    """Base score of a CVSS v3.0/v3.1 vector (``CVSS:3.1/AV:N/AC:L/...``), by the 3.1 formula.

    Temporal and environmental metrics are accepted and ignored. A malformed vector raises
    :class:`InvalidInputError`.
    """
    parts = vector.strip().split("/")
    if parts[0] not in ("CVSS:3.0", "CVSS:3.1"):
        raise InvalidInputError(f"not a CVSS v3 vector: {vector!r}")
    metrics: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.partition(":")
        if not sep or key in metrics:
            raise InvalidInputError(f"CVSS vector {vector!r}: bad or repeated metric {part!r}")
        if key in _CVSS3_BASE and value not in _CVSS3_BASE[key]:
            raise InvalidInputError(f"CVSS vector {vector!r}: {key} cannot be {value!r}")
        if key not in _CVSS3_BASE and key not in _CVSS3_OTHER:
            raise InvalidInputError(f"CVSS vector {vector!r}: unknown metric {key!r}")
        metrics[key] = value
    missing = [k for k in _CVSS3_BASE if k not in metrics]
    if missing:
        raise InvalidInputError(f"CVSS vector {vector!r}: missing base metrics {missing}")
    changed = metrics["S"] == "C"
    w = {k: table[metrics[k]] for k, table in _CVSS3_BASE.items()}
    pr = _CVSS3_PR_CHANGED[metrics["PR"]] if changed else w["PR"]
    iss = 1 - (1 - w["C"]) * (1 - w["I"]) * (1 - w["A"])
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if changed else 6.42 * iss
    exploitability = 8.22 * w["AV"] * w["AC"] * pr * w["UI"]
    if impact <= 0:
        return 0.0
    total = impact + exploitability
    return _roundup(min(1.08 * total if changed else total, 10.0))


def _level_of_score(score: float) -> Severity:
    for floor, level in ((9.0, Severity.CRITICAL), (7.0, Severity.HIGH),
                         (4.0, Severity.MODERATE), (0.1, Severity.LOW)):
        if score >= floor:
            return level
    return Severity.NONE


def _rate(db_severity: str | None,
          scores: Sequence[SeverityScore]) -> tuple[Severity, float | None]:
    """Level and CVSS v3 score: the database's level when it names one, else the best v3 score."""
    best: float | None = None
    for s in scores:
        if s.type == "CVSS_V3" or s.score.startswith("CVSS:3."):
            try:
                value = cvss3_base_score(s.score)
            except InvalidInputError:
                continue
            best = value if best is None else max(best, value)
    named = _level_of(db_severity) if db_severity else None
    if named is not None:
        return named, best
    return (_level_of_score(best) if best is not None else Severity.UNKNOWN), best


# -- snapshots ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """The PyPI records of one snapshot.

    ``sha256`` (64 hex) is the zip file's digest, or for a folder the sha256 of the lines
    ``"<relative posix path>\\0<file sha256 hex>\\n"`` in sorted path order. ``date`` is the newest
    ``modified`` among the kept records. ``skipped`` counts records of other ecosystems,
    ``withdrawn`` records that were withdrawn.
    """

    records: tuple[OsvRecord, ...]
    sha256: str
    date: str
    source: str
    skipped: int = 0
    withdrawn: int = 0

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
    if path.is_dir():
        documents, digest = _folder_documents(path, budget)
    elif zipfile.is_zipfile(path):
        documents, digest = _zip_documents(path, budget), _file_sha256(path)
    else:
        raise SupplyChainError(f"{path} is neither a zip file nor a folder of OSV JSON files")
    latest: dict[str, OsvRecord] = {}
    for name, blob in documents:
        record = _read_document(path, name, blob)
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
    return Snapshot(records, digest, newest.modified, str(path), skipped, withdrawn)


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


def _zip_documents(path: Path, budget: _Budget) -> Iterator[tuple[str, bytes]]:
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


# -- matching ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One vulnerability affecting one installed distribution.

    ``fixed_versions`` are the ``fixed`` events above the installed version (all of them when it
    cannot be compared). ``reason`` is ``"range"``, ``"versions list"`` or
    ``"unparseable version: ..."``.
    """

    package: str
    version: str
    vuln_id: str
    aliases: tuple[str, ...]
    severity: Severity
    score: float | None
    fixed_versions: tuple[str, ...]
    summary: str
    reason: str
    status: FindingStatus = FindingStatus.AFFECTED

    def to_dict(self) -> dict[str, Any]:
        return {"package": self.package, "version": self.version, "id": self.vuln_id,
                "aliases": list(self.aliases), "severity": self.severity.value,
                "score": self.score, "fixed_versions": list(self.fixed_versions),
                "summary": self.summary, "reason": self.reason, "status": self.status.value}


# A bound of None is "0" for introduced (before every version) or "*" for limit (after every one).
_Bound: TypeAlias = Version | None


@dataclass(frozen=True)
class _Range:
    events: tuple[tuple[str, _Bound], ...]  # introduced/fixed/last_affected, sorted
    limits: tuple[_Bound, ...]
    fixed: tuple[tuple[str, Version | None], ...]  # None: not PEP 440, shown all the same
    problem: str | None  # the first event that is not PEP 440

    def contains(self, v: Version) -> bool:
        if self.limits and not any(lim is None or v < lim for lim in self.limits):
            return False
        vulnerable = False
        for kind, bound in self.events:
            if kind == "introduced":
                if bound is None or v >= bound:
                    vulnerable = True
            elif kind == "fixed":
                if bound is not None and v >= bound:
                    vulnerable = False
            elif bound is not None and v > bound:  # last_affected
                vulnerable = False
        return vulnerable


@dataclass(frozen=True)
class _Candidate:
    """Everything one record says about one package, compiled for matching."""

    record: OsvRecord
    versions_raw: frozenset[str]
    versions: frozenset[Version]
    ranges: tuple[_Range, ...]
    level: Severity
    score: float | None


@functools.lru_cache(maxsize=1 << 16)
def _parse_version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _compile_range(rng: AffectedRange, rid: str) -> _Range:
    events: list[tuple[int, Version, int, str, _Bound]] = []
    limits: list[_Bound] = []
    fixed: list[tuple[str, Version | None]] = []
    problem: str | None = None
    for position, evt in enumerate(rng.events):
        if evt.kind == "introduced" and evt.version == "0":
            events.append((0, Version("0"), position, evt.kind, None))
            continue
        if evt.kind == "limit" and "*" in evt.version:
            limits.append(None)
            continue
        parsed = _parse_version(evt.version)
        if evt.kind == "fixed":
            fixed.append((evt.version, parsed))
        if parsed is None:
            problem = problem or f"{evt.kind} {evt.version!r} of {rid} is not a PEP 440 version"
            continue
        if evt.kind == "limit":
            limits.append(parsed)
            continue
        events.append((1, parsed, position, evt.kind, parsed))
    if not any(e[3] == "introduced" for e in events):
        events.append((0, Version("0"), -1, "introduced", None))  # fail closed: from the start
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    return _Range(tuple((kind, bound) for *_, kind, bound in events), tuple(limits),
                  tuple(fixed), problem)


def _compile(record: OsvRecord, entries: Sequence[Affected]) -> _Candidate:
    raw = frozenset(v for a in entries for v in a.versions)
    parsed = frozenset(p for v in raw if (p := _parse_version(v)) is not None)
    ranges = tuple(_compile_range(r, record.id)
                   for a in entries for r in a.ranges if r.type in ("ECOSYSTEM", "SEMVER"))
    own = tuple(s for a in entries for s in a.severity)
    level, score = (_rate(record.database_severity, own) if own and not record.severity
                    else (record.level, record.score))
    return _Candidate(record, raw, parsed, ranges, level, score)


class VulnIndex:
    """Records by PEP 503 package name; withdrawn records and other ecosystems are left out.

    Building is a dict of lists; a package's records are compiled (versions parsed, events
    sorted) the first time it is matched, so a 20k-record snapshot indexes in milliseconds.
    """

    def __init__(self, records: Iterable[OsvRecord]) -> None:
        self._pending: dict[str, list[tuple[OsvRecord, list[Affected]]]] = {}
        self._compiled: dict[str, list[_Candidate]] = {}
        self._count = 0
        for record in records:
            if record.withdrawn is not None:
                continue
            by_name: dict[str, list[Affected]] = {}
            for aff in record.affected:
                if aff.is_pypi:
                    by_name.setdefault(canonicalize_name(aff.name), []).append(aff)
            self._count += bool(by_name)
            for name, entries in by_name.items():
                self._pending.setdefault(name, []).append((record, entries))

    def _candidates(self, key: str) -> list[_Candidate]:
        found = self._compiled.get(key)
        if found is None:
            found = [_compile(rec, entries) for rec, entries in self._pending.get(key, ())]
            self._compiled[key] = found
        return found

    def __len__(self) -> int:
        return self._count

    @property
    def packages(self) -> frozenset[str]:
        return frozenset(self._pending)

    def match(self, name: str, version: str) -> list[Finding]:
        """Findings for one installed distribution, alias duplicates merged, sorted by id."""
        installed = _parse_version(version.strip())
        public = Version(installed.public) if installed is not None else None
        found = [f for c in self._candidates(canonicalize_name(name))
                 if (f := _evaluate(c, name, version, public)) is not None]
        return sorted(_merge_aliases(found), key=lambda f: f.vuln_id)

    def scan(self, distributions: Mapping[str, str]) -> list[Finding]:
        """Findings for every ``name -> version`` (e.g. ``installed_distributions()``)."""
        out: list[Finding] = []
        for name, version in sorted(distributions.items(),
                                    key=lambda kv: (canonicalize_name(kv[0]), kv[1])):
            out.extend(self.match(name, version))
        return out


def _fixed_above(ranges: Iterable[_Range], v: Version | None) -> tuple[str, ...]:
    found = {raw for rng in ranges for raw, parsed in rng.fixed
             if v is None or parsed is None or parsed > v}
    return tuple(sorted(found, key=_version_key))


def _evaluate(c: _Candidate, name: str, version: str, v: Version | None) -> Finding | None:
    def finding(reason: str, ranges: Iterable[_Range],
                status: FindingStatus = FindingStatus.AFFECTED) -> Finding:
        return Finding(
            package=name, version=version, vuln_id=c.record.id, aliases=c.record.aliases,
            severity=c.level, score=c.score, fixed_versions=_fixed_above(ranges, v),
            summary=c.record.summary, reason=reason, status=status,
        )

    if version.strip() in c.versions_raw or (v is not None and v in c.versions):
        return finding("versions list", c.ranges)
    if v is None:
        if not c.ranges:
            return None  # only a versions list, and the string is not in it
        return finding(f"unparseable version: installed {version!r} is not a PEP 440 version",
                       c.ranges, FindingStatus.UNPARSEABLE)
    matched = [r for r in c.ranges if r.problem is None and r.contains(v)]
    if matched:
        return finding("range", matched)
    problem = next((r.problem for r in c.ranges if r.problem is not None), None)
    if problem is not None:
        return finding(f"unparseable version: {problem}", c.ranges, FindingStatus.UNPARSEABLE)
    return None


def _merge_aliases(findings: list[Finding]) -> list[Finding]:
    """Merge findings whose ids or aliases overlap into the most telling one of each group."""
    groups: list[tuple[set[str], list[Finding]]] = []
    for f in findings:
        keys = {f.vuln_id, *f.aliases}
        merged_keys, merged = set(keys), [f]
        for g_keys, g_members in groups:
            if g_keys & keys:
                merged_keys |= g_keys
                merged.extend(g_members)
        groups = [g for g in groups if not g[0] & keys]
        groups.append((merged_keys, merged))
    out = []
    for keys, members in groups:
        best = min(members, key=lambda f: (f.status is not FindingStatus.AFFECTED,
                                           f.severity is Severity.UNKNOWN,
                                           -_RANK[f.severity], f.vuln_id))
        if len(members) == 1:
            out.append(best)
            continue
        fixed = {x for f in members for x in f.fixed_versions}
        scores = [f.score for f in members if f.score is not None]
        out.append(replace(
            best, aliases=tuple(sorted(keys - {best.vuln_id})),
            score=best.score if best.score is not None else max(scores, default=None),
            fixed_versions=tuple(sorted(fixed, key=_version_key)),
        ))
    return out


def _version_key(text: str) -> tuple[int, Version, str]:
    parsed = _parse_version(text)
    return (0, parsed, text) if parsed is not None else (1, Version("0"), text)
