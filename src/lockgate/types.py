"""Frozen values passed between lockgate's parts.

Everything here is immutable and round-trips through plain JSON (``to_dict``/``from_dict``), which
is how the metadata store keeps it.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from lockgate.errors import InvalidInputError

__all__ = [
    "Decision",
    "Delivery",
    "DeploymentRow",
    "Digest",
    "Dim",
    "EntryKind",
    "GateResult",
    "GateRun",
    "GateStatus",
    "ModelRef",
    "Observation",
    "OutputParity",
    "ParityReport",
    "Signature",
    "StoredEntry",
    "TensorSpec",
    "TokenRow",
    "UserRow",
    "Version",
    "VersionRow",
    "VulnSnapshot",
    "whole_number",
]

_CHUNK = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_MAX_DIGITS = 18  # fits a signed 64-bit integer column


def whole_number(text: str) -> int | None:
    """``text`` as a whole number when it is 1 to 18 ASCII digits, else None.

    ``str.isdigit`` also accepts ``"²"`` (which ``int`` refuses) and ``"٣"`` (which ``int``
    reads as 3), and ``int`` accepts ``" 3"``, ``"+3"`` and ``"3_0"``: numbers from paths,
    queries, headers and references go through here instead.
    """
    if 0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None


Dim = int | str
"""One dimension of a tensor shape: a fixed size, or a symbolic name such as ``"batch"``."""


@dataclass(frozen=True, order=True)
class Digest:
    """A content digest, written ``sha256:<64 hex>``."""

    value: str

    def __post_init__(self) -> None:
        algo, _, hexpart = self.value.partition(":")
        if algo != "sha256" or not _HEX64.match(hexpart):
            raise InvalidInputError(f"not a sha256 digest: {self.value!r}")

    @property
    def hex(self) -> str:
        return self.value.split(":", 1)[1]

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, text: str) -> Digest:
        return cls(text if text.startswith("sha256:") else f"sha256:{text}")

    @classmethod
    def of_bytes(cls, data: bytes) -> Digest:
        return cls("sha256:" + hashlib.sha256(data).hexdigest())

    @classmethod
    def of_stream(cls, stream: BinaryIO) -> Digest:
        h = hashlib.sha256()
        while chunk := stream.read(_CHUNK):
            h.update(chunk)
        return cls("sha256:" + h.hexdigest())

    @classmethod
    def of_file(cls, path: Path) -> Digest:
        with path.open("rb") as f:
            return cls.of_stream(f)


def validate_name(name: str) -> str:
    """Model and alias names: letters, digits, ``.``, ``_``, ``-``; 1 to 128 characters."""
    if not _NAME.match(name):
        raise InvalidInputError(
            f"invalid name {name!r}",
            hint="use letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


@dataclass(frozen=True)
class ModelRef:
    """``name``, ``name@3``, ``name@production`` (a stage) or ``name@champion`` (an alias).

    ``selector`` is None (latest version), an ``int`` version, or a stage/alias name.
    """

    name: str
    selector: int | str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, sep, sel = text.partition("@")
        validate_name(name)
        if not sep:
            return cls(name)
        number = whole_number(sel)
        if number is not None:
            return cls(name, number)
        if not sel:
            raise InvalidInputError(f"empty selector in model reference {text!r}")
        return cls(name, validate_name(sel))

    def __str__(self) -> str:
        return self.name if self.selector is None else f"{self.name}@{self.selector}"


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: numpy dtype name (``float32``, ``int64``, …) and shape with symbolic dims."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(str(d["name"]), str(d["dtype"]), tuple(d["shape"]))


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Signature:
        return cls(
            tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
        )


@dataclass(frozen=True)
class OutputParity:
    """Agreement of one output between the source framework and ONNX Runtime.

    ``exact``: compared for equality (labels, integers, strings), no tolerance can help it.
    ``rows``: the first 20 rows that disagree, numbered across the inputs (see
    :meth:`ParityReport.where`). ``borderline``: labels that differ where the source model's two
    top classes nearly tie (a probabilities output that passes says so), not mismatches.
    """

    name: str
    max_abs_error: float
    max_rel_error: float
    atol: float
    rtol: float
    mismatches: int
    elements: int
    worst_index: tuple[int, ...] = ()
    worst_expected: float = 0.0
    worst_actual: float = 0.0
    exact: bool = False
    rows: tuple[int, ...] = ()
    borderline: int = 0
    borderline_rows: tuple[int, ...] = ()

    @property
    def passed(self) -> bool:
        return self.mismatches == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "atol": self.atol,
            "rtol": self.rtol,
            "mismatches": self.mismatches,
            "elements": self.elements,
            "worst_index": list(self.worst_index),
            "worst_expected": self.worst_expected,
            "worst_actual": self.worst_actual,
            "exact": self.exact, "rows": list(self.rows), "borderline": self.borderline,
            "borderline_rows": list(self.borderline_rows),
            "passed": self.passed,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OutputParity:
        return cls(
            name=str(d["name"]),
            max_abs_error=float(d["max_abs_error"]),
            max_rel_error=float(d["max_rel_error"]),
            atol=float(d["atol"]),
            rtol=float(d["rtol"]),
            mismatches=int(d["mismatches"]),
            elements=int(d["elements"]),
            worst_index=tuple(int(i) for i in d.get("worst_index", ())),
            worst_expected=float(d.get("worst_expected", 0.0)),
            worst_actual=float(d.get("worst_actual", 0.0)),
            exact=bool(d.get("exact", False)), rows=tuple(int(r) for r in d.get("rows", ())),
            borderline=int(d.get("borderline", 0)),
            borderline_rows=tuple(int(r) for r in d.get("borderline_rows", ())),
        )


@dataclass(frozen=True)
class ParityReport:
    """Parity over the sample input plus ``len(batch_sizes) - 1`` random inputs.

    ``inputs``: how each input was drawn, in words (``"strings from 12 seen values"``); ``dims``:
    each free dimension's size on every input (the sample first); ``skipped``: random inputs the
    source model refused (a length it does not take), not compared.
    """

    outputs: tuple[OutputParity, ...]
    batch_sizes: tuple[int, ...]
    seed: int
    inputs: Mapping[str, str] = field(default_factory=dict)
    dims: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    def where(self, row: int) -> str:
        """Names the input and its row for a row numbered across the inputs (sample first)."""
        start = 0
        for i, size in enumerate(self.batch_sizes):
            if row < start + size:
                return f"{'sample' if i == 0 else f'random input {i}'} row {row - start}"
            start += size
        return f"row {row}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "batch_sizes": list(self.batch_sizes),
            "seed": self.seed,
            "outputs": [o.to_dict() for o in self.outputs],
            "inputs": dict(self.inputs), "dims": {k: list(v) for k, v in self.dims.items()},
            "skipped": list(self.skipped),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ParityReport:
        return cls(
            outputs=tuple(OutputParity.from_dict(o) for o in d["outputs"]),
            batch_sizes=tuple(int(b) for b in d["batch_sizes"]),
            seed=int(d["seed"]),
            inputs={str(k): str(v) for k, v in d.get("inputs", {}).items()},
            dims={str(k): tuple(int(x) for x in v) for k, v in d.get("dims", {}).items()},
            skipped=tuple(str(s) for s in d.get("skipped", ())),
        )


class GateStatus(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    WAIVED = "waived"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class GateResult:
    gate: str
    status: GateStatus
    message: str
    measured: Mapping[str, Any] = field(default_factory=dict)
    thresholds: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in (GateStatus.PASS, GateStatus.WAIVED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "status": self.status.value,
            "message": self.message,
            "measured": dict(self.measured),
            "thresholds": dict(self.thresholds),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateResult:
        return cls(
            gate=str(d["gate"]),
            status=GateStatus(d["status"]),
            message=str(d["message"]),
            measured=dict(d.get("measured", {})),
            thresholds=dict(d.get("thresholds", {})),
        )


@dataclass(frozen=True)
class Version:
    """One immutable model version. ``stage`` is the only part that changes after registration,
    and it changes only through promotion."""

    name: str
    number: int
    digest: Digest
    framework: str
    framework_version: str
    opset: int
    ir_version: int
    signature: Signature
    parity: ParityReport | None
    environment: Mapping[str, Any]
    creator: str
    created_at: str
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    seeds: Mapping[str, int] = field(default_factory=dict)
    files: Mapping[str, Digest] = field(default_factory=dict)
    signature_bundle: Digest | None = None
    signed_by: str = ""
    stage: str = "prototype"

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.name, self.number)

    def record(self) -> dict[str, Any]:
        """The immutable part, as stored (everything but ``name``, ``number`` and ``stage``)."""
        return {
            "digest": str(self.digest),
            "framework": self.framework,
            "framework_version": self.framework_version,
            "opset": self.opset,
            "ir_version": self.ir_version,
            "signature": self.signature.to_dict(),
            "parity": self.parity.to_dict() if self.parity else None,
            "environment": dict(self.environment),
            "creator": self.creator,
            "created_at": self.created_at,
            "description": self.description,
            "tags": dict(self.tags),
            "metrics": dict(self.metrics),
            "seeds": dict(self.seeds),
            "files": {k: str(v) for k, v in self.files.items()},
            "signature_bundle": str(self.signature_bundle) if self.signature_bundle else None,
            "signed_by": self.signed_by,
        }

    def manifest(self) -> dict[str, Any]:
        """What the signed ``manifest.json`` holds: the record less the file list and the
        signature itself, plus the name and number."""
        rec = self.record()
        for key in ("files", "signature_bundle", "signed_by"):
            rec.pop(key)
        return {"name": self.name, "version": self.number, **rec}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.number, "stage": self.stage, **self.record()}

    @classmethod
    def from_record(
        cls, name: str, number: int, stage: str, rec: Mapping[str, Any]
    ) -> Version:
        parity = rec.get("parity")
        return cls(
            name=name,
            number=number,
            stage=stage,
            digest=Digest(rec["digest"]),
            framework=str(rec["framework"]),
            framework_version=str(rec["framework_version"]),
            opset=int(rec["opset"]),
            ir_version=int(rec["ir_version"]),
            signature=Signature.from_dict(rec["signature"]),
            parity=ParityReport.from_dict(parity) if parity else None,
            environment=dict(rec.get("environment", {})),
            creator=str(rec["creator"]),
            created_at=str(rec["created_at"]),
            description=str(rec.get("description", "")),
            tags={str(k): str(v) for k, v in rec.get("tags", {}).items()},
            metrics={str(k): float(v) for k, v in rec.get("metrics", {}).items()},
            seeds={str(k): int(v) for k, v in rec.get("seeds", {}).items()},
            files={str(k): Digest(v) for k, v in rec.get("files", {}).items()},
            signature_bundle=(
                Digest(rec["signature_bundle"]) if rec.get("signature_bundle") else None
            ),
            signed_by=str(rec.get("signed_by", "")),
        )


def shape_of(dims: Iterable[Dim]) -> tuple[Dim, ...]:
    return tuple(dims)


# Records the stores keep, read by every layer.

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


@dataclass(frozen=True)
class VersionRow:
    name: str
    number: int
    stage: str
    record: Mapping[str, Any]


@dataclass(frozen=True)
class GateRun:
    name: str
    number: int
    from_stage: str
    to_stage: str
    passed: bool
    results: Sequence[Mapping[str, Any]]
    actor: str
    created_at: str


@dataclass(frozen=True)
class Decision:
    """Something recorded about a version for a target stage: ``approval`` and ``rejection``
    (by a person, with a comment), ``waiver`` (of ``gate``, with a reason in ``comment`` and an
    ``expires`` date), ``reproduction`` (``detail`` holds the result)."""

    kind: str
    name: str
    number: int
    stage: str
    actor: str
    created_at: str
    comment: str = ""
    gate: str = ""
    expires: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.name, "version": self.number,
                "stage": self.stage, "actor": self.actor, "at": self.created_at,
                "comment": self.comment, "gate": self.gate, "expires": self.expires,
                "detail": dict(self.detail)}


@dataclass(frozen=True)
class DeploymentRow:
    """A model's deployment record and its generation (bumped by every change)."""

    name: str
    generation: int
    record: Mapping[str, Any]
    updated_at: str


@dataclass(frozen=True)
class Observation:
    """Something observed about a served version: ``reference`` (its reference profile: the
    ``record`` names the profile blob) or ``monitor`` (one monitor run's drift and SLO
    results). ``id`` is assigned by the store."""

    kind: str
    name: str
    number: int
    created_at: str
    record: Mapping[str, Any]
    id: int = 0


@dataclass(frozen=True)
class Delivery:
    """An event waiting for (or past) delivery to a webhook or command: at-least-once, the
    ``id`` stays the same across retries."""

    id: str
    name: str
    target: str
    event: Mapping[str, Any]
    created_at: str
    attempts: int = 0
    delivered_at: str | None = None
    last_error: str = ""


@dataclass(frozen=True)
class VulnSnapshot:
    """An imported OSV snapshot: its digest, its date (newest record), when it came in, and
    whether it is shaped as an ecosystem export (:mod:`lockgate.supplychain.vulns.snapshots`)."""

    id: int
    sha256: str
    snapshot_date: str
    imported_at: str
    source: str
    records: int
    ecosystem: str = "PyPI"
    export: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "snapshot_date": self.snapshot_date,
                "imported_at": self.imported_at, "source": self.source, "records": self.records,
                "ecosystem": self.ecosystem, "export": self.export}


@dataclass(frozen=True)
class UserRow:
    """A user of a shared registry: global ``roles`` and per-model ``grants`` as
    ``(model pattern, role)`` pairs (fnmatch patterns: ``fraud-*``)."""

    name: str
    roles: tuple[str, ...]
    grants: tuple[tuple[str, str], ...] = ()
    disabled: bool = False
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "roles": list(self.roles),
                "grants": [{"model": m, "role": r} for m, r in self.grants],
                "disabled": self.disabled, "created_at": self.created_at}


@dataclass(frozen=True)
class TokenRow:
    """An API token: ``hash`` is the SHA-256 of its secret; the secret itself is never
    stored."""

    id: str
    user: str
    hash: str
    created_at: str
    description: str = ""
    expires_at: str | None = None
    revoked_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Everything but the hash."""
        return {"id": self.id, "user": self.user, "description": self.description,
                "created_at": self.created_at, "expires_at": self.expires_at,
                "revoked_at": self.revoked_at}
