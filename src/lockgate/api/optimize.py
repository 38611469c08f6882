"""Optimized versions: a registered version's model quantized, converted to float16 or
optimized by ONNX Runtime, proven against its parent and stored as a new version of the same
model that names the parent.

The new version goes through registration's sealing and storing (signed folder, BOM, card,
content-addressed model, the environment it was made in). Its record says where it came from
in ``environment["lineage"]`` (signed with the manifest)::

    {"parent": "clf@3", "parent_digest": "sha256:...", "root": "clf@1",
     "transformation": {"kind": "dynamic-int8", "tool": "onnxruntime.quantization",
                        "tool_version": "1.32.0", "options": {...}},
     "tolerance": {"atol": 0.1, "rtol": 0.1}, "root_tolerance": {"atol": 0.1, "rtol": 0.1},
     "parent_metrics": {...},
     "measured": {"parent_latency_ms": ..., "child_latency_ms": ..., "speedup": ...,
                  "parent_bytes": ..., "child_bytes": ..., "size_ratio": ...}}

Its parity report compares the new model with the parent under ONNX Runtime (the parent's
recorded sample plus random inputs drawn from it), then with the outputs recorded when the
first version of the line (``root``) was registered, within the transformation's
``[optimize_tolerances]`` (against the root: those of every optimization since it, summed, so
an int8 version optimized again is not held to the second step's tolerance alone); either
failing refuses the version and nothing is stored.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from lockgate.api.home import Home
from lockgate.api.registration import Registration, _Built, _Inputs
from lockgate.audit import canonical_json, now
from lockgate.config.optimize import optimize_tolerance
from lockgate.convert.base import Converted
from lockgate.convert.optimize import choose, measure, transform
from lockgate.environment import fingerprint
from lockgate.errors import ConversionError, InvalidInputError, ParityError
from lockgate.gates.probe import sample_document, sample_feeds
from lockgate.monitor import service as monitoring
from lockgate.parity.check import assert_parity, check_parity
from lockgate.parity.expected import merge_reports, recorded_case
from lockgate.runtime.onnxmeta import default_opset, signature_of
from lockgate.runtime.predictor import Predictor
from lockgate.seal import folder as sealing
from lockgate.supplychain.lockfiles import parse_lock_hashes
from lockgate.types import ModelRef, ParityReport, Version

__all__ = ["Optimization", "lineage_of"]

_MAX_DEPTH = 100


def lineage_of(v: Version) -> Mapping[str, Any] | None:
    """The version's lineage record, None for a version that was registered, not optimized."""
    found = v.environment.get("lineage")
    return found if isinstance(found, Mapping) else None


class Optimization:
    """Makes optimized versions of registered ones."""

    def __init__(self, home: Home, get: Callable[[str | ModelRef], Version],
                 model_bytes: Callable[[Version], bytes],
                 file_bytes: Callable[[Version, str], bytes],
                 registration: Registration) -> None:
        self._home = home
        self._get = get
        self._model_bytes = model_bytes
        self._file_bytes = file_bytes
        self._registration = registration

    def optimize(self, ref: str | ModelRef, *, quantize: str | None = None, fp16: bool = False,
                 ort_level: str | None = None, runs: int = 300, description: str | None = None,
                 metrics: Mapping[str, float] | None = None,
                 creator: str | None = None) -> Version:
        """A new version of ``ref``'s model made by exactly one of ``quantize``
        (``"dynamic-int8"``), ``fp16`` or ``ort_level`` (``"basic"``, ``"extended"``; ``"all"``
        is refused). ``runs`` batch-1 runs of parent and child, alternating, measure the
        speed-up. ``metrics`` are the new version's own (measured on it; none are copied from
        the parent). Raises ParityError, naming the worst error, when the new model is out of
        tolerance of its parent or of the recorded samples; nothing is stored then."""
        kind = choose(quantize, fp16, ort_level)
        if runs < 1:
            raise InvalidInputError(f"runs must be at least 1, got {runs}")
        parent = self._get(ref)
        parent_bytes = self._model_bytes(parent)  # signature and digest verified
        samples = self._samples(parent)
        root, *allowed = self._root(parent)
        root_samples = samples if root.number == parent.number else self._samples(root)
        data, made = transform(parent_bytes, kind)
        proto = onnx.load_model_from_string(data)
        if signature_of(proto) != parent.signature:
            raise ConversionError(f"{kind} changed the signature of {parent.ref}",
                                  hint="the parent stays as it is; try another optimization")
        child = Predictor(data, signature=parent.signature, spin=False)
        atol, rtol = optimize_tolerance(kind, self._home.settings.optimize_tolerances)
        from_root = (atol + allowed[0], rtol + allowed[1])
        report = self._parity(parent, Predictor(parent_bytes, signature=parent.signature,
                                                spin=False),
                              child, samples, root, root_samples, (atol, rtol), from_root, kind)
        feeds = sample_feeds(samples)
        lineage = {
            "parent": f"{parent.name}@{parent.number}", "parent_digest": str(parent.digest),
            "root": f"{root.name}@{root.number}", "transformation": made.to_dict(),
            "tolerance": {"atol": atol, "rtol": rtol},
            "root_tolerance": {"atol": from_root[0], "rtol": from_root[1]},
            "parent_metrics": dict(parent.metrics),
            "measured": measure(parent_bytes, data, _one_row(parent, feeds), runs=runs),
        }
        environment = fingerprint.capture_environment(
            seeds=parent.seeds, providers=child.providers, cwd=Path.cwd())
        environment["converter"] = f"{made.tool}=={made.tool_version} ({kind})"
        environment["lineage"] = lineage
        return self._store(parent, data, proto, child, report, environment, feeds,
                           description if description is not None
                           else f"{kind} of {parent.name}@{parent.number}",
                           metrics or {}, creator)

    def _samples(self, v: Version) -> dict[str, Any]:
        if sealing.SAMPLES_FILE not in v.files:
            raise InvalidInputError(
                f"{v.ref} has no recorded samples to prove an optimized model against",
                hint="register the model again: registration records its samples")
        found: dict[str, Any] = json.loads(self._file_bytes(v, sealing.SAMPLES_FILE))
        return found

    def _root(self, v: Version) -> tuple[Version, float, float]:
        """The first version of ``v``'s line (the one its parents were optimized from), and
        the tolerances its optimizations were allowed on the way, summed."""
        atol = rtol = 0.0
        for _ in range(_MAX_DEPTH):
            lineage = lineage_of(v)
            if lineage is None:
                return v, atol, rtol
            tol = lineage.get("tolerance") or {}
            atol, rtol = atol + float(tol.get("atol", 0)), rtol + float(tol.get("rtol", 0))
            v = self._get(str(lineage["parent"]))
        raise InvalidInputError(f"{v.ref}: lineage deeper than {_MAX_DEPTH} versions")

    def _parity(self, parent: Version, parent_run: Predictor, child: Predictor,
                samples: Mapping[str, Any], root: Version, root_samples: Mapping[str, Any],
                tolerance: tuple[float, float], from_root: tuple[float, float], kind: str
                ) -> ParityReport:
        """Child against parent (ONNX Runtime both; the sample plus random inputs) within
        ``tolerance``, then against the root's recorded outputs within ``from_root`` (the
        tolerances of every optimization since the root, summed); each checked, then merged
        into one report."""
        settings = self._home.settings
        names = child.output_names
        floats = [s.name for s in parent.signature.outputs
                  if s.dtype.startswith(("float", "bfloat"))]
        atol, rtol = tolerance

        def parent_outputs(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            got = parent_run(feeds)
            return [got[n] for n in names]

        case = Converted(model=onnx.ModelProto(), framework="onnx", framework_version="",
                         converter=kind, sample=sample_feeds(samples), reference=parent_outputs)
        seed = int(parent.seeds.get("seed", 0))
        against = f"{parent.name}@{parent.number}"
        try:
            first = check_parity(case, child, n_random=settings.parity_samples, atol=atol,
                                 rtol=rtol, seed=seed,
                                 tolerances=dict.fromkeys(floats, tolerance))
            first = _described(first, f"against parent {against} (ONNX Runtime)")
            assert_parity(first)
            recorded = recorded_case(case, parent.signature, sample_feeds(root_samples),
                                     _recorded_outputs(root_samples))
            second = check_parity(recorded, child, n_random=0, atol=atol, rtol=rtol,
                                  seed=seed, tolerances=dict.fromkeys(floats, from_root))
            rows = second.batch_sizes[0] if second.batch_sizes else 0
            second = replace(second, inputs=dict.fromkeys(
                second.inputs or ("*",), f"against the {rows} row(s) recorded with "
                f"{root.name}@{root.number} at registration, no random inputs"))
            assert_parity(second)
        except ParityError as exc:
            raise ParityError(
                f"{kind} of {against} refused: {exc.message}", report=exc.report,
                hint=f"nothing was stored; [optimize_tolerances.{kind}] sets the tolerance "
                     f"(now atol={atol:g}, rtol={rtol:g}; from {root.name}@{root.number}: "
                     f"atol={from_root[0]:g}, rtol={from_root[1]:g}): loosen it only if the "
                     "difference "
                     "is acceptable for the model's use") from None
        return merge_reports(first, second)

    def _store(self, parent: Version, data: bytes, proto: onnx.ModelProto, child: Predictor,
               report: ParityReport, environment: Mapping[str, Any],
               feeds: Mapping[str, np.ndarray], description: str,
               metrics: Mapping[str, float], creator: str | None) -> Version:
        home = self._home
        lock_files, lock_hashes = self._lock_files(parent)
        files = {**lock_files, sealing.SAMPLES_FILE: (canonical_json(sample_document(
            feeds, child(feeds))) + "\n").encode()}
        draft = Version(
            name=parent.name, number=0, digest=home.artifacts.put(data),
            framework=parent.framework, framework_version=parent.framework_version,
            opset=default_opset(proto), ir_version=int(proto.ir_version),
            signature=parent.signature, parity=report, environment=environment,
            creator=home.actor(creator), created_at=now(), description=description,
            tags=dict(parent.tags), metrics=dict(metrics), seeds=dict(parent.seeds),
            stage=home.settings.stages[0])
        outline = sealing.outline(proto)
        producer = f"{outline.producer_name} {outline.producer_version}".strip() or "unknown"
        built = _Built(draft, data, producer, outline.SerializeToString(), report,
                       monitoring.reference_profile(home, parent), files)
        inputs = _Inputs(name=parent.name, description=description, tags=dict(parent.tags),
                         metrics=dict(metrics), seeds=dict(parent.seeds), considerations="",
                         datasets=[], lock_hashes=lock_hashes, files=lock_files)
        return self._registration._store(built, inputs)

    def _lock_files(self, parent: Version
                    ) -> tuple[dict[str, bytes], dict[str, list[str]] | None]:
        """The parent's lock file, kept with the new version (the same dependencies made it)."""
        name = next((n for n in sealing.LOCK_FILES if n in parent.files), None)
        if name is None:
            return {}, None
        data = self._file_bytes(parent, name)
        with tempfile.TemporaryDirectory(prefix="lockgate-lock-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            return {name: data}, parse_lock_hashes(path)


def _described(report: ParityReport, what: str) -> ParityReport:
    return replace(report, inputs={k: f"{what}: {how}" for k, how in report.inputs.items()}
                   or {"*": what})


def _recorded_outputs(samples: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The outputs recorded with the sample, as arrays."""
    from lockgate.serve.oip import numpy_dtype

    return {t["name"]: np.asarray(t["data"], dtype=numpy_dtype(t["datatype"])).reshape(
        t["shape"]) for t in samples["outputs"]}


def _one_row(v: Version, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The sample's first row where an input's first dimension is free; as it is otherwise."""
    out = {}
    for spec in v.signature.inputs:
        arr = feeds[spec.name]
        free = bool(spec.shape) and not isinstance(spec.shape[0], int)
        out[spec.name] = np.ascontiguousarray(arr[:1]) if free and arr.ndim else arr
    return out
