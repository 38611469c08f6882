"""Does ONNX Runtime agree with the source framework? Reference vs ORT → :class:`ParityReport`.

Both run on the caller's sample plus ``n_random`` random inputs drawn from it: the batch size
cycles through 1, 2, 3, 5, 8 when dim 0 is symbolic; float features are normal with the sample's
per-feature mean and std, integers uniform within the sample's range, bools fair coins.

An element passes when ``|actual - expected| <= atol + rtol * |expected|`` (floats; NaN matches
NaN) or when it is equal (integers, bools, strings). Tolerances follow the ONNX output's dtype
unless a per-output tolerance is given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lockgate.convert.base import Converted
from lockgate.errors import Error, InvalidInputError, ParityError, ServeError
from lockgate.progress import NullProgress, Progress
from lockgate.runtime.predictor import Predictor
from lockgate.types import OutputParity, ParityReport, TensorSpec

__all__ = [
    "BATCH_SIZES",
    "assert_parity",
    "check_parity",
    "default_tolerance",
    "parity_if_reference",
    "random_inputs",
]

BATCH_SIZES = (1, 2, 3, 5, 8)
"""Batch sizes the random inputs cycle through when dim 0 is symbolic."""

_FLOAT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-6),
    "float16": (1e-2, 1e-2),
    "bfloat16": (1e-2, 1e-2),
}


def default_tolerance(dtype: str, *, atol: float = 1e-4, rtol: float = 1e-3) -> tuple[float, float]:
    """``(atol, rtol)`` for an output dtype: ``atol``/``rtol`` for float32, fixed tighter for
    float64 and looser for float16; ``(0, 0)`` (exact) for everything that is not a float."""
    if dtype == "float32":
        return atol, rtol
    if dtype in _FLOAT_TOLERANCES:
        return _FLOAT_TOLERANCES[dtype]
    return 0.0, 0.0


def check_parity(
    converted: Converted,
    predictor: Predictor,
    *,
    n_random: int = 8,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    seed: int = 0,
    tolerances: Mapping[str, tuple[float, float]] | None = None,
    progress: Progress = NullProgress(),  # noqa: B008 - stateless
) -> ParityReport:
    """Compare ``converted.reference`` with ``predictor`` on the sample plus ``n_random`` inputs.

    ``atol``/``rtol`` apply to float32 outputs; ``tolerances`` maps an output name to its own
    ``(atol, rtol)``. Needs a reference: a model that arrived as ONNX has none, see
    :func:`parity_if_reference`. Structural disagreements (output count, shapes) and a reference
    that fails raise :class:`ParityError`; the report itself says whether the values agree.
    """
    reference = converted.reference
    if reference is None:
        raise InvalidInputError(
            "this model has no source framework to compare against",
            hint="use parity_if_reference(), which returns None for models that arrived as ONNX",
        )
    names = predictor.output_names
    specs = {s.name: s for s in predictor.signature.outputs}
    tols = {
        n: (tolerances or {}).get(n) or default_tolerance(specs[n].dtype, atol=atol, rtol=rtol)
        for n in names
    }
    stats = {n: _Stats(n, *tols[n]) for n in names}
    batch_sizes: list[int] = []
    progress.start("parity", total=n_random + 1)
    try:
        for i, inputs in enumerate(_inputs(converted, predictor, n_random, seed)):
            batch_sizes.append(_batch_of(inputs, predictor.signature.inputs))
            try:
                actual = predictor.run(inputs)
            except ServeError as exc:
                op = re.search(r"while running (\w+) node", exc.message)
                raise ParityError(
                    (f"ONNX Runtime cannot run the {op.group(1)} op the converter emitted, on "
                     if op else "ONNX Runtime failed on ")
                    + f"{_which(i)} (batch {batch_sizes[-1]}): {exc.message}",
                    hint=(f"the {converted.converter.split()[0]} export of this model is not "
                          "runnable: change the model (another op) or the converter version"
                          if op else
                          "the exported graph may have fixed a shape the source model keeps "
                          "free"),
                ) from exc
            try:
                expected = list(reference(inputs))
            except Error:
                raise
            except Exception as exc:  # whatever the framework raises
                raise ParityError(
                    f"the source model failed on {_which(i)} (batch {batch_sizes[-1]}): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if len(expected) != len(names):
                raise ParityError(
                    f"the source model returned {len(expected)} outputs, the ONNX model "
                    f"returns {len(names)} ({names})"
                )
            for name, exp in zip(names, expected, strict=True):
                stats[name].add(np.asarray(exp), actual[name], _which(i))
            progress.advance("parity")
    finally:
        progress.finish("parity")
    return ParityReport(
        outputs=tuple(s.result() for s in stats.values()),
        batch_sizes=tuple(batch_sizes),
        seed=seed,
    )


def parity_if_reference(
    converted: Converted,
    predictor: Predictor,
    *,
    n_random: int = 8,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    seed: int = 0,
    tolerances: Mapping[str, tuple[float, float]] | None = None,
    progress: Progress = NullProgress(),  # noqa: B008 - stateless
) -> ParityReport | None:
    """:func:`check_parity` when there is a reference; otherwise None.

    Without a reference (the model arrived as ONNX) comparing ORT with itself proves nothing,
    so no report is made, but ORT still runs the sample and the random inputs: a model that
    cannot run at the varied batch sizes fails here.
    """
    if converted.reference is not None:
        return check_parity(
            converted,
            predictor,
            n_random=n_random,
            atol=atol,
            rtol=rtol,
            seed=seed,
            tolerances=tolerances,
            progress=progress,
        )
    progress.start("parity", total=n_random + 1)
    try:
        for inputs in _inputs(converted, predictor, n_random, seed):
            predictor.run(inputs)
            progress.advance("parity")
    finally:
        progress.finish("parity")
    return None


def assert_parity(report: ParityReport) -> None:
    """Raise :class:`ParityError` naming the first failing output and its worst element."""
    if not report.outputs:
        raise ParityError("the parity report compares no outputs", report=report)
    for out in report.outputs:
        if out.passed:
            continue
        raise ParityError(
            f"output {out.name!r}: {out.mismatches} of {out.elements} elements outside "
            f"tolerance (atol={out.atol:g}, rtol={out.rtol:g}); worst at index "
            f"{list(out.worst_index)}: expected {out.worst_expected!r}, got "
            f"{out.worst_actual!r} (max abs error {out.max_abs_error:.3g}, max rel error "
            f"{out.max_rel_error:.3g}, batch sizes {list(report.batch_sizes)})",
            report=report,
            hint="loosen the tolerance only if the difference is understood; otherwise the "
            "conversion changed the model",
        )


def random_inputs(
    sample: Mapping[str, np.ndarray],
    specs: Sequence[TensorSpec],
    batch: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """One random input shaped like ``sample``, with dim 0 set to ``batch`` where the
    signature's dim 0 is the batch dim (symbolic and shared with the first batched input)."""
    batch_dim = _batch_symbol(specs)
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        ref = np.asarray(sample[spec.name])
        shape = list(ref.shape)
        if batch_dim is not None and spec.shape and spec.shape[0] == batch_dim:
            shape[0] = batch
        out[spec.name] = _draw(ref, tuple(shape), rng)
    return out


def _inputs(
    converted: Converted, predictor: Predictor, n_random: int, seed: int
) -> list[dict[str, np.ndarray]]:
    specs = predictor.signature.inputs
    missing = [s.name for s in specs if s.name not in converted.sample]
    if missing:
        raise InvalidInputError(
            f"the sample has no value for the model inputs {missing}",
            hint=f"key the sample by {[s.name for s in specs]}",
        )
    sample = {s.name: np.asarray(converted.sample[s.name]) for s in specs}
    rng = np.random.default_rng(seed)
    batches = [BATCH_SIZES[i % len(BATCH_SIZES)] for i in range(n_random)]
    return [sample, *(random_inputs(sample, specs, b, rng) for b in batches)]


def _batch_symbol(specs: Sequence[TensorSpec]) -> str | None:
    for spec in specs:
        if spec.shape:
            first = spec.shape[0]
            return first if isinstance(first, str) else None
    return None


def _batch_of(inputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> int:
    for spec in specs:
        arr = inputs[spec.name]
        if arr.ndim:
            return int(arr.shape[0])
    return 1


def _draw(ref: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random values like ``ref``'s: floats per feature (axis 0) normal, ints uniform in range."""
    dtype = ref.dtype
    if ref.size == 0:
        return np.zeros(shape, dtype=dtype)
    if dtype.kind == "f":
        data = ref.astype(np.float64)
        feature_shape = shape[1:] if ref.ndim else ()
        if ref.ndim and ref.shape[1:] == feature_shape:
            mean, std = data.mean(axis=0), data.std(axis=0)
        else:
            mean, std = np.full(feature_shape, data.mean()), np.zeros(feature_shape)
        spread = float(data.std()) or 1.0
        std = np.where(std > 0, std, spread)  # constant features still vary
        drawn: np.ndarray = mean + std * rng.standard_normal(shape)
        return drawn.astype(dtype)
    if dtype.kind in "iu":
        low, high = int(ref.min()), int(ref.max())
        return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    if dtype.kind == "b":
        return np.asarray(rng.random(shape) < 0.5, dtype=bool)
    if ref.ndim == 0:
        return ref.copy()
    rows = rng.integers(0, ref.shape[0], size=shape[0])  # strings and others: resample rows
    return ref[rows].reshape(shape)


def _which(i: int) -> str:
    return "the sample" if i == 0 else f"random input {i}"


@dataclass
class _Stats:
    """Running comparison of one output across all inputs."""

    name: str
    atol: float
    rtol: float
    max_abs: float = 0.0
    max_rel: float = 0.0
    mismatches: int = 0
    elements: int = 0
    worst_score: float = -1.0
    worst_index: tuple[int, ...] = ()
    worst_expected: float = 0.0
    worst_actual: float = 0.0

    def add(self, expected: np.ndarray, actual: np.ndarray, where: str) -> None:
        if expected.shape != actual.shape:
            if expected.size != actual.size or np.squeeze(expected).shape != np.squeeze(
                actual
            ).shape:
                raise ParityError(
                    f"output {self.name!r} on {where}: the source model gives shape "
                    f"{list(expected.shape)}, ONNX Runtime {list(actual.shape)}"
                )
            expected = expected.reshape(actual.shape)
        self.elements += int(actual.size)
        if actual.size == 0:
            return
        if actual.dtype.kind in "fc" or expected.dtype.kind in "fc":
            self._add_float(expected, actual)
        else:
            self._add_exact(expected, actual)

    def _add_float(self, expected: np.ndarray, actual: np.ndarray) -> None:
        e = expected.astype(np.float64)
        a = actual.astype(np.float64)
        same = (e == a) | (np.isnan(e) & np.isnan(a))
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            diff = np.where(same, 0.0, np.abs(a - e))
            diff = np.where(np.isnan(diff), np.inf, diff)  # NaN against a number
            mag = np.where(np.isfinite(e), np.abs(e), 0.0)
            # relative error where the expected value is non-zero; at zero, atol decides
            rel = np.where(mag > 0, diff / np.where(mag > 0, mag, 1.0), 0.0)
            allowed = self.atol + self.rtol * mag
            score = np.where(allowed > 0, diff / np.where(allowed > 0, allowed, 1.0), diff)
        self.max_abs = max(self.max_abs, float(diff.max()))
        self.max_rel = max(self.max_rel, float(rel.max()))
        self.mismatches += int((diff > allowed).sum())
        self._track_worst(score, e, a)

    def _add_exact(self, expected: np.ndarray, actual: np.ndarray) -> None:
        bad = np.asarray(expected != actual, dtype=bool).reshape(actual.shape)
        numeric = actual.dtype.kind in "iub" and expected.dtype.kind in "iub"
        if numeric:
            e = expected.astype(np.float64)
            a = actual.astype(np.float64)
            diff = np.abs(a - e)
            self.max_abs = max(self.max_abs, float(diff.max()))
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(bad, diff / np.maximum(np.abs(e), 1.0), 0.0)
            self.max_rel = max(self.max_rel, float(rel.max()))
        else:
            e = a = np.zeros(actual.shape)
        self.mismatches += int(bad.sum())
        self._track_worst(np.where(bad, 1.0 + (np.abs(a - e) if numeric else 0.0), 0.0), e, a)

    def _track_worst(self, score: np.ndarray, e: np.ndarray, a: np.ndarray) -> None:
        flat = int(np.argmax(score))
        value = float(score.reshape(-1)[flat])
        if value > self.worst_score:
            index = np.unravel_index(flat, score.shape)
            self.worst_score = value
            self.worst_index = tuple(int(i) for i in index)
            self.worst_expected = float(e[index])
            self.worst_actual = float(a[index])

    def result(self) -> OutputParity:
        return OutputParity(
            name=self.name,
            max_abs_error=self.max_abs,
            max_rel_error=self.max_rel,
            atol=self.atol,
            rtol=self.rtol,
            mismatches=self.mismatches,
            elements=self.elements,
            worst_index=self.worst_index,
            worst_expected=self.worst_expected,
            worst_actual=self.worst_actual,
        )
