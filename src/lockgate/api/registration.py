"""Registration: a model converted to ONNX, proven against its framework, described and
signed, then stored as a new immutable version.

Everything a version is made of is built first, outside any lock: the conversion, the parity
check, the environment, the reference profile and the recorded samples. The signed folder
names the version's number (its manifest, BOM and card), so it is sealed and signed while the
model's registration lock is held (see :meth:`MetadataStore.registering`): that lock fixes the
number for this registration alone, and only registrations of the same model wait for it.
One short transaction then stores the version at that number with its audit event and its
reference profile, all or nothing, after putting the version's blobs again under the write
lock (a touch, unless a ``gc`` removed one meanwhile); a retried transaction writes the same
prepared record again and never rebuilds or re-signs anything.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Unpack

from lockgate.api.home import Home
from lockgate.api.protocol import RegisterOptions
from lockgate.audit import AuditEvent, EventType, canonical_json, now
from lockgate.convert import Converted, converter_for
from lockgate.convert.frameworks import FrameworkPolicyError, check_framework
from lockgate.convert.source import with_source
from lockgate.environment import fingerprint
from lockgate.errors import ConversionError, InvalidInputError
from lockgate.gates.probe import sample_document
from lockgate.monitor import service as monitoring
from lockgate.monitor.profile import Profile
from lockgate.parity.check import assert_parity, check_parity
from lockgate.parity.expected import as_recorded, merge_reports, recorded_case
from lockgate.progress import NullProgress, Progress
from lockgate.runtime.onnxmeta import default_opset, signature_of
from lockgate.runtime.predictor import Predictor
from lockgate.seal import folder as sealing
from lockgate.store.artifacts import ArtifactStore, StoredEntry
from lockgate.store.metadata import Change
from lockgate.supplychain.lockfiles import parse_lock_hashes
from lockgate.types import Digest, ParityReport, Version, validate_name

__all__ = ["Registration"]

_MAX_ONNX_BYTES = 2**31 - 1
_HOLD_BYTES = 256 * 2**20
"""Models whose weights are larger are written to a file in pieces (never serialized whole in
memory, see :func:`lockgate.seal.folder.write_model`) and stored before their parity check;
ONNX Runtime's session reads the file and sealing reads the store, so the weights are held
once at a time. A failed check then leaves an unreferenced blob, which ``lockgate gc``
removes."""
_RECIPE_KEYS = {"entry", "args", "git_commit", "workdir", "root"}


@dataclass(frozen=True)
class _Inputs:
    """A registration's options, checked and normalised."""

    name: str
    description: str
    tags: dict[str, str]
    metrics: dict[str, float]
    seeds: dict[str, int]
    considerations: str
    datasets: list[dict[str, str]]
    lock_hashes: dict[str, list[str]] | None
    files: Mapping[str, bytes] = field(default_factory=dict)
    """Extra files of the folder from the options: the lock file and the recipe."""

    @classmethod
    def of(cls, name: str, options: RegisterOptions) -> _Inputs:
        seeds = {str(k): int(v) for k, v in (options.get("seeds") or {}).items()}
        seed = options.get("seed")
        if seed is not None:
            seeds.setdefault("seed", int(seed))
        files: dict[str, bytes] = {}
        lock_hashes = None
        lock_file = options.get("lock_file")
        if lock_file is not None:
            lock_path = Path(lock_file)
            lock_hashes = parse_lock_hashes(lock_path)
            lock_name = "pylock.toml" if lock_path.suffix == ".toml" else "requirements.txt"
            files[lock_name] = lock_path.read_bytes()
        recipe = options.get("recipe")
        if recipe is not None:
            files[sealing.RECIPE_FILE] = (canonical_json(_check_recipe(recipe)) + "\n").encode()
        return cls(
            name=name, description=options.get("description", ""),
            tags={str(k): str(v) for k, v in (options.get("tags") or {}).items()},
            metrics=_check_metrics(options.get("metrics") or {}), seeds=seeds,
            considerations=options.get("considerations", ""),
            datasets=[{str(k): str(x) for k, x in d.items()}
                      for d in options.get("datasets", ())],
            lock_hashes=lock_hashes, files=files)


@dataclass(frozen=True)
class _Built:
    """What was made before the version is sealed: the draft (number 0) and its model."""

    draft: Version
    onnx_bytes: bytes | None
    """The model; None for one over ``_HOLD_BYTES``, which sealing reads from the store."""
    producer: str
    outline: bytes
    """The model less its weights (:func:`lockgate.seal.folder.outline`), for the card."""
    parity: ParityReport | None
    profile: Profile | None
    files: Mapping[str, bytes]
    """Every extra file of the folder: the options' and the recorded samples."""


class _Written:
    """The artifact store as sealing writes to it, keeping what was written: every blob is
    put again inside the version's transaction, under the write lock that ``lockgate gc``
    removes under. A gc that ran after the first write and before the commit may have
    removed a blob (the version did not reference it yet); written again there, it is
    restored, or its modification time is refreshed so that a gc listing it earlier keeps
    it, and after the commit the version references it (see :mod:`lockgate.seal.integrity`).
    Putting bytes already stored only touches them."""

    def __init__(self, artifacts: ArtifactStore) -> None:
        self._artifacts = artifacts
        self._blobs: dict[Digest, bytes] = {}

    def put(self, data: bytes) -> Digest:
        digest = self._artifacts.put(data)
        self._blobs[digest] = data
        return digest

    def put_again(self) -> None:
        for data in self._blobs.values():
            self._artifacts.put(data)

    def get(self, digest: Digest) -> bytes:
        return self._artifacts.get(digest)

    def exists(self, digest: Digest) -> bool:
        return self._artifacts.exists(digest)

    def entries(self) -> Iterator[StoredEntry]:
        return self._artifacts.entries()

    def remove(self, entry: StoredEntry) -> bool:
        return self._artifacts.remove(entry)


class Registration:
    """Registers models as new versions of the home."""

    def __init__(self, home: Home) -> None:
        self._home = home

    def register(self, model: object, sample_input: object = None, *, name: str,
                 **options: Unpack[RegisterOptions]) -> Version:
        """Convert ``model`` to ONNX, prove parity with its framework on ``sample_input`` plus
        random inputs, capture the environment, write the ML-BOM, model card and manifest, sign
        them and store a new immutable version.

        ``considerations`` (free text, one limitation per paragraph) and ``datasets`` (mappings
        with ``name`` and optionally ``fingerprint``, ``url``, ``description``) go into the
        model card; ``lock_file`` (``pylock.toml`` or a ``requirements.txt`` with ``--hash``)
        puts its hashes on the BOM's library components and is kept, signed, with the version
        (the ``pinned_dependencies`` gate reads it); ``recipe`` (``entry``: ``module:function``,
        ``args``) says how ``lockgate reproduce`` rebuilds the model. ``reference`` (a data
        file or arrays by input name) becomes the version's reference profile for drift
        monitors. See :class:`~lockgate.api.protocol.RegisterOptions` for every option.

        Nothing is stored unless every step succeeds. Raises ParityError when ONNX Runtime
        disagrees with the source framework and SupplyChainError when the BOM does not validate.
        """
        validate_name(name)
        inputs = _Inputs.of(name, options)
        built = self._build(model, sample_input, inputs, options)
        return self._store(built, inputs)

    def _build(self, model: object, sample_input: object, inputs: _Inputs,
               options: RegisterOptions) -> _Built:
        """Convert, check parity, capture the environment, profile the reference data and
        record the samples: everything but the number-bearing, signed files."""
        progress: Progress = options.get("progress") or NullProgress()
        converter = converter_for(model)
        _check_proof(converter.framework, options)
        converted = converter.convert(model, sample_input, opset=options.get("opset"),
                                      progress=progress, dynamic=options.get("dynamic"))
        self._check_framework(inputs.name, converted.framework, converted.framework_version)
        signature, proto = signature_of(converted.model), converted.model
        converted = replace(converted, model=sealing.outline(proto))  # the weights: in proto
        held: bytes | Digest  # the serialized model, or its digest once stored
        if sealing.weights_bytes(proto) <= _HOLD_BYTES:
            data = proto.SerializeToString()
            _check_size(len(data))
            del proto
            held, predictor = data, Predictor(data, signature=signature, spin=False)
        else:
            with tempfile.TemporaryDirectory(prefix="lockgate-register-") as tmp:
                path = Path(tmp) / sealing.MODEL_FILE
                sealing.write_model(proto, path)
                del proto
                _check_size(path.stat().st_size)
                held = self._home.artifacts.put(path.read_bytes())
                predictor = Predictor(path, signature=signature, spin=False)
        converted, report = self._parity(converted, predictor, sample_input is None, options,
                                         inputs.seeds.get("seed", 0), progress)
        environment = fingerprint.capture_environment(
            seeds=inputs.seeds, providers=predictor.providers, cwd=Path.cwd())
        environment["converter"] = converted.converter
        profile = _profile(predictor, options.get("reference"))
        samples = (canonical_json(sample_document(
            converted.sample, predictor(converted.sample))) + "\n").encode()
        digest = held if isinstance(held, Digest) else self._home.artifacts.put(held)
        draft = self._draft(inputs, digest, converted, predictor, report, environment,
                            options.get("creator"))
        outline = converted.model
        producer = f"{outline.producer_name} {outline.producer_version}".strip() or "unknown"
        return _Built(draft, None if isinstance(held, Digest) else held, producer,
                      outline.SerializeToString(), report, profile,
                      {**inputs.files, sealing.SAMPLES_FILE: samples})

    def _parity(self, converted: Converted, predictor: Predictor, no_sample: bool,
                options: RegisterOptions, seed: int, progress: Progress
                ) -> tuple[Converted, ParityReport | None]:
        """The parity report, checked: against the source framework, the ``source`` callable
        and the ``expect`` recording (each checked, then merged into one report when both are
        given). The recorded inputs become the sample when none was given."""
        settings = self._home.settings
        atol, rtol = options.get("atol"), options.get("rtol")
        atol = settings.parity_atol if atol is None else atol
        rtol = settings.parity_rtol if rtol is None else rtol
        source, expect = options.get("source"), options.get("expect")
        case = (recorded_case(converted, predictor.signature, *expect)
                if expect is not None else None)
        if case is not None and no_sample:
            converted = replace(converted, sample=case.sample)
        if source is not None:
            converted = with_source(converted, source, predictor.output_names)
        report = None
        if converted.reference is not None:
            data = options.get("reference")  # arrays by input name add to the seen strings
            report = check_parity(converted, predictor, n_random=settings.parity_samples,
                                  atol=atol, rtol=rtol, seed=seed, progress=progress,
                                  pool=data if isinstance(data, Mapping) else None)
            assert_parity(report)
        if case is not None:  # checked on its own: a failure names the recorded rows
            recorded = as_recorded(check_parity(case, predictor, n_random=0, atol=atol,
                                                rtol=rtol, seed=seed, progress=progress))
            assert_parity(recorded)
            report = recorded if report is None else merge_reports(report, recorded)
        return converted, report

    def _draft(self, inputs: _Inputs, digest: Digest, converted: Converted,
               predictor: Predictor, report: ParityReport | None,
               environment: Mapping[str, Any], creator: str | None) -> Version:
        return Version(
            name=inputs.name, number=0, digest=digest,
            framework=converted.framework, framework_version=converted.framework_version,
            opset=default_opset(converted.model), ir_version=int(converted.model.ir_version),
            signature=predictor.signature, parity=report, environment=environment,
            creator=self._home.actor(creator), created_at=now(),
            description=inputs.description, tags=inputs.tags, metrics=inputs.metrics,
            seeds=inputs.seeds, stage=self._home.settings.stages[0],
        )

    def _store(self, built: _Built, inputs: _Inputs) -> Version:
        """Seal and sign under the model's registration lock, then store in one transaction
        the version, its audit event and its reference profile."""
        home, draft = self._home, built.draft
        written = _Written(home.artifacts)
        blob = built.profile.to_json() if built.profile is not None else None
        profile_digest = written.put(blob) if blob is not None else None
        with home.meta.registering(draft.name) as number:
            sealed = sealing.seal(
                replace(draft, number=number),
                built.onnx_bytes or home.artifacts.get(draft.digest), written, home.settings,
                model_outline=built.outline, producer=built.producer,
                lock_hashes=inputs.lock_hashes, considerations=inputs.considerations,
                datasets=inputs.datasets, extra_files=built.files)
            record = sealed.record()
            extra: Change | None = None
            if built.profile is not None and profile_digest is not None:
                _, extra = monitoring.reference_change(sealed, built.profile, profile_digest,
                                                       actor=sealed.creator)

            def under_the_write_lock(_number: int) -> Mapping[str, Any]:
                written.put_again()
                return record

            home.meta.create_version(draft.name, under_the_write_lock, draft.stage,
                                     self._event(sealed, built.parity), number=number,
                                     extra=extra)
        return sealed

    @staticmethod
    def _event(v: Version, report: ParityReport | None) -> AuditEvent:
        record = v.record()
        return AuditEvent(EventType.MODEL_REGISTERED, v.creator, v.name, None, {
            "digest": str(v.digest), "framework": v.framework,
            "parity_passed": report.passed if report else None,
            "files": record.get("files", {}), "signed_by": record.get("signed_by", ""),
            "signature_bundle": record.get("signature_bundle"),
        })

    def _check_framework(self, name: str, framework: str, version: str) -> None:
        try:
            check_framework(self._home.settings.frameworks, framework, version)
        except FrameworkPolicyError as exc:
            self._home.meta.append_event(AuditEvent(
                EventType.REGISTRATION_REFUSED, self._home.settings.user, name, None,
                {"framework": framework, "framework_version": version, "reason": exc.message}))
            raise


def _profile(predictor: Predictor,
             reference: Path | str | Mapping[str, Any] | None) -> Profile | None:
    if reference is None:
        return None
    data = Path(reference) if isinstance(reference, (str, Path)) else reference
    return monitoring.build_reference(predictor, data)


def _check_proof(framework: str, options: RegisterOptions) -> None:
    """``source`` and ``expect`` prove an ONNX file; a converted model has its framework."""
    given = [k for k in ("source", "expect") if options.get(k) is not None]
    if given and framework != "onnx":
        raise InvalidInputError(
            f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to ONNX files; "
            f"a {framework} model is checked against {framework} itself",
            hint=f"leave out {' and '.join(given)} (--reference MODULE:FUNCTION, --expect): "
                 "parity runs the model's own framework")
    expect = options.get("expect")
    if expect is not None and (not isinstance(expect, tuple | list) or len(expect) != 2):
        raise InvalidInputError("expect must be (inputs, outputs): two .npz files or mappings")


def _check_size(size: int) -> None:
    if size > _MAX_ONNX_BYTES:
        raise ConversionError("the ONNX model is over 2 GB; lockgate stores one-file models")


def _check_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    entry = recipe.get("entry")
    if not isinstance(entry, str) or ":" not in entry:
        raise InvalidInputError("recipe: entry must be 'module:function'")
    args = recipe.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise InvalidInputError("recipe: args must be a list of strings")
    unknown = sorted(set(recipe) - _RECIPE_KEYS)
    if unknown:
        raise InvalidInputError(f"recipe: unknown keys {unknown}")
    return {str(k): v for k, v in recipe.items()}


def _check_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise InvalidInputError(f"metric {k!r} is not a number: {v!r}") from None
        if not math.isfinite(f):
            raise InvalidInputError(f"metric {k!r} is not finite: {v!r}")
        out[str(k)] = f
    return out
