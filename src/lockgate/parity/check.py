"""Does ONNX Runtime agree with the source framework? Reference vs ORT → :class:`ParityReport`.

Both run on the caller's sample plus ``n_random`` random inputs drawn inside each input's domain
(:mod:`lockgate.parity.inputs`: categories and strings among the known and seen values, floats
normal or among few seen whole numbers with NaN where the sample has NaN, integers within the seen
range, every free dimension varied). A random input of a length the source model refuses (a
position table too short, a kernel too wide) is skipped and named in the report.

Tolerance per output kind:

- **floats**: an element passes when ``|actual - expected| <= atol + rtol * |expected|`` (NaN
  matches NaN); ``atol``/``rtol`` follow the output's dtype unless a per-output tolerance is given;
- **labels**, **integers**, **bools**, **strings**: exact. A label may differ only on a near
  tie: where the source model's two top classes in a probabilities (or scores) output are closer
  than both that output's tolerance and twice the difference seen between the two runs on that
  row (an exact tie always counts), and that output passes, the float32 split thresholds of a
  tree or the order of a sum may flip the label. Such rows are counted as *borderline* and listed,
  not failed.

A mismatch lists its rows, numbered across the inputs (:meth:`ParityReport.where`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lockgate.convert.base import Converted, ReferenceRunner
from lockgate.errors import Error, InvalidInputError, ParityError, ServeError
from lockgate.parity.inputs import BATCH_SIZES, Draws, parity_inputs, random_inputs
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

_FLOAT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-6),
    "float16": (1e-2, 1e-2),
    "bfloat16": (1e-2, 1e-2),
}
_ROWS_KEPT = 20


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
    pool: Mapping[str, np.ndarray] | None = None,
) -> ParityReport:
    """Compare ``converted.reference`` with ``predictor`` on the sample plus ``n_random`` inputs.

    ``atol``/``rtol`` apply to float32 outputs; ``tolerances`` maps an output name to its own
    ``(atol, rtol)``. ``pool`` adds values per input (the reference data's, say) to the seen
    values strings are drawn among (an input with known categories keeps to them). Needs a
    reference: a model that arrived as ONNX has none, see :func:`parity_if_reference`.
    Structural disagreements (output count, shapes) and a reference that fails on the sample
    raise :class:`ParityError`; the report itself says whether the values agree.
    """
    reference = converted.reference
    if reference is None:
        raise InvalidInputError(
            "this model has no source framework to compare against",
            hint="use parity_if_reference(), which returns None for models that arrived as ONNX",
        )
    names = predictor.output_names
    specs = {s.name: s for s in predictor.signature.outputs}
    stats = {n: _stats_for(specs[n], tolerances or {}, atol, rtol) for n in names}
    draws = _inputs(converted, predictor, n_random, seed, pool)
    batch_sizes: list[int] = []
    skipped: list[str] = []
    progress.start("parity", total=n_random + 1)
    try:
        for i, inputs in enumerate(draws.inputs):
            batch_sizes.append(_batch_of(inputs, predictor.signature.inputs))
            ran = _run_both(converted, reference, predictor, inputs, i, draws, batch_sizes[-1])
            if isinstance(ran, str):
                skipped.append(ran)
            else:
                _compare(stats, names, *ran, where=_which(i), offset=sum(batch_sizes[:-1]))
            progress.advance("parity")
    finally:
        progress.finish("parity")
    passing = {n for n, s in stats.items() if not s.exact and s.mismatches == 0}
    return ParityReport(
        outputs=tuple(s.result(passing) for s in stats.values()),
        batch_sizes=tuple(batch_sizes),
        seed=seed,
        inputs=draws.how,
        dims=draws.dims,
        skipped=tuple(skipped),
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
    pool: Mapping[str, np.ndarray] | None = None,
) -> ParityReport | None:
    """:func:`check_parity` when there is a reference; otherwise None.

    Without a reference (the model arrived as ONNX) comparing ORT with itself proves nothing,
    so no report is made, but ORT still runs the sample and the random inputs: a model that
    cannot run at the varied batch sizes fails here (a varied length it refuses is let pass:
    nothing says the model takes it).
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
            pool=pool,
        )
    draws = _inputs(converted, predictor, n_random, seed, pool)
    progress.start("parity", total=n_random + 1)
    try:
        for inputs, varied in zip(draws.inputs, draws.varied, strict=True):
            try:
                predictor.run(inputs)
            except ServeError:
                if not varied:
                    raise
            progress.advance("parity")
    finally:
        progress.finish("parity")
    return None


def assert_parity(report: ParityReport) -> None:
    """Raise :class:`ParityError` naming the first failing output, its worst element and the
    rows that disagree."""
    if not report.outputs:
        raise ParityError("the parity report compares no outputs", report=report)
    for out in report.outputs:
        if out.passed:
            continue
        rows = f"; rows {_rows_text(report, out.rows)}" if out.rows else ""
        border = (f" ({out.borderline} more on near ties, not counted)" if out.borderline
                  else "")
        if out.exact:
            raise ParityError(
                f"output {out.name!r}: {out.mismatches} of {out.elements} elements differ "
                f"(compared exactly){border}{rows}; first at index {list(out.worst_index)}: "
                f"expected {out.worst_expected!r}, got {out.worst_actual!r} (batch sizes "
                f"{list(report.batch_sizes)})",
                report=report,
                hint="the converted model decides differently on these rows: check that the "
                "inputs are in the model's domain (categories, ranges, missing values) or "
                "change the converter; a tolerance cannot help an exact output",
            )
        raise ParityError(
            f"output {out.name!r}: {out.mismatches} of {out.elements} elements outside "
            f"tolerance (atol={out.atol:g}, rtol={out.rtol:g}); worst at index "
            f"{list(out.worst_index)}: expected {out.worst_expected!r}, got "
            f"{out.worst_actual!r} (max abs error {out.max_abs_error:.3g}, max rel error "
            f"{out.max_rel_error:.3g}, batch sizes {list(report.batch_sizes)}){rows}",
            report=report,
            hint="loosen the tolerance only if the difference is understood; otherwise the "
            "conversion changed the model",
        )


def _stats_for(spec: TensorSpec, tolerances: Mapping[str, tuple[float, float]], atol: float,
               rtol: float) -> _Stats:
    tol = tolerances.get(spec.name) or default_tolerance(spec.dtype, atol=atol, rtol=rtol)
    return _Stats(spec.name, *tol, exact=not spec.dtype.startswith(("float", "bfloat", "complex")))


def _rows_text(report: ParityReport, rows: Sequence[int]) -> str:
    """``sample [0, 3], random input 2 [1]``: the rows grouped by input."""
    groups: dict[str, list[int]] = {}
    for row in rows:
        where, _, at = report.where(row).rpartition(" row ")
        groups.setdefault(where or "row", []).append(int(at))
    return ", ".join(f"{where} {at}" for where, at in groups.items())


def _inputs(
    converted: Converted, predictor: Predictor, n_random: int, seed: int,
    pool: Mapping[str, np.ndarray] | None,
) -> Draws:
    specs = predictor.signature.inputs
    missing = [s.name for s in specs if s.name not in converted.sample]
    if missing:
        raise InvalidInputError(
            f"the sample has no value for the model inputs {missing}",
            hint=f"key the sample by {[s.name for s in specs]}",
        )
    return parity_inputs(converted.sample, specs, n_random, seed,
                         categories=converted.categories, pool=pool)


def _run_both(
    converted: Converted, reference: ReferenceRunner, predictor: Predictor,
    inputs: Mapping[str, np.ndarray], i: int, draws: Draws, batch: int,
) -> tuple[list[np.ndarray], dict[str, np.ndarray]] | str:
    """The source model's and ORT's outputs on one input, or why the input was skipped (a
    varied length the source model refuses)."""
    dims = ", ".join(f"{d} {sizes[i]}" for d, sizes in draws.dims.items()) or f"batch {batch}"
    try:
        expected = list(reference(inputs))
    except Error:
        raise
    except Exception as exc:  # whatever the framework raises
        if draws.varied[i]:
            return (f"{_which(i)} ({dims}): the source model refused it: "
                    f"{type(exc).__name__}: {str(exc)[:160]}")
        raise ParityError(
            f"the source model failed on {_which(i)} ({dims}): {type(exc).__name__}: {exc}"
        ) from exc
    try:
        actual = predictor.run(inputs)
    except ServeError as exc:
        # an op that ran on the sample is runnable: a later input failing it met a fixed shape
        op = re.search(r"while running (\w+) node", exc.message) if i == 0 else None
        raise ParityError(
            (f"ONNX Runtime cannot run the {op.group(1)} op the converter emitted, on "
             if op else "ONNX Runtime failed on ")
            + f"{_which(i)} ({dims}): {exc.message}",
            hint=(f"the {converted.converter.split()[0]} export of this model is not "
                  "runnable: change the model (another op) or the converter version"
                  if op else
                  "the exported graph may have fixed a shape the source model keeps free"),
        ) from exc
    if len(expected) != len(predictor.output_names):
        raise ParityError(
            f"the source model returned {len(expected)} outputs, the ONNX model "
            f"returns {len(predictor.output_names)} ({predictor.output_names})"
        )
    return expected, actual


def _compare(stats: Mapping[str, _Stats], names: Sequence[str], expected: list[np.ndarray],
             actual: Mapping[str, np.ndarray], *, where: str, offset: int) -> None:
    """Add one input's outputs to ``stats``; labels learn which rows are near ties."""
    arrays = [np.asarray(e) for e in expected]
    ties = {name: _near_ties(exp, actual[name], stats[name])
            for name, exp in zip(names, arrays, strict=True)
            if not stats[name].exact and exp.ndim == 2 and exp.shape[1] >= 2
            and actual[name].size == exp.size}
    for name, exp in zip(names, arrays, strict=True):
        stats[name].add(exp, actual[name], where, offset, ties)


def _near_ties(expected: np.ndarray, actual: np.ndarray, stats: _Stats) -> np.ndarray:
    """Rows where the source model's two top scores are so close that the difference seen
    between the two runs on that row (and the output's tolerance) can swap them."""
    e = expected.astype(np.float64)
    s = np.sort(e, axis=1)
    top, second = s[:, -1], s[:, -2]
    with np.errstate(invalid="ignore"):
        seen = np.abs(actual.astype(np.float64).reshape(e.shape) - e).max(axis=1)
        reach = np.minimum(stats.atol + stats.rtol * np.abs(top), 2 * seen)
        return np.asarray((top - second) <= reach, dtype=bool)


def _batch_of(inputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> int:
    for spec in specs:
        arr = inputs[spec.name]
        if arr.ndim:
            return int(arr.shape[0])
    return 1


def _which(i: int) -> str:
    return "the sample" if i == 0 else f"random input {i}"


@dataclass
class _Stats:
    """Running comparison of one output across all inputs."""

    name: str
    atol: float
    rtol: float
    exact: bool = False
    max_abs: float = 0.0
    max_rel: float = 0.0
    mismatches: int = 0
    elements: int = 0
    worst_score: float = -1.0
    worst_index: tuple[int, ...] = ()
    worst_expected: float = 0.0
    worst_actual: float = 0.0
    bad_rows: dict[int, int] = field(default_factory=dict)
    """Row (across inputs) → mismatching elements in it."""
    ties: dict[int, set[str]] = field(default_factory=dict)
    """Row → the score outputs on which the source model's top two classes nearly tie."""

    def add(self, expected: np.ndarray, actual: np.ndarray, where: str, offset: int = 0,
            ties: Mapping[str, np.ndarray] | None = None) -> None:
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
            bad = self._add_float(expected, actual)
        else:
            near = self._label_ties(actual, ties or {})
            bad = self._add_exact(expected, actual, near)
            for output, mask in near.items():
                for row in np.flatnonzero(mask & bad.reshape(-1)):
                    self.ties.setdefault(offset + int(row), set()).add(output)
        per_row = bad.reshape(bad.shape[0], -1).sum(axis=1) if bad.ndim else bad.reshape(1)
        for row in np.flatnonzero(per_row):
            self.bad_rows[offset + int(row)] = int(per_row[row])

    @staticmethod
    def _label_ties(actual: np.ndarray, ties: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The near-tie rows of each score output that a label output (one element per row)
        can flip on."""
        rows = actual.shape[0] if actual.ndim else 0
        if not actual.ndim or actual.size != rows:
            return {}
        return {output: mask for output, mask in ties.items() if mask.shape == (rows,)}

    def _add_float(self, expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
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
        bad = np.asarray(diff > allowed)
        self.mismatches += int(bad.sum())
        self._track_worst(score, e, a)
        return bad

    def _add_exact(self, expected: np.ndarray, actual: np.ndarray,
                   ties: Mapping[str, np.ndarray]) -> np.ndarray:
        bad = np.asarray(expected != actual, dtype=bool).reshape(actual.shape)
        flat = np.zeros(actual.size, dtype=bool)
        for mask in ties.values():
            flat |= mask
        near = flat.reshape(actual.shape)
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
        # a mismatch on a near tie is the worst only when no other is left
        score = np.where(bad, np.where(near, 0.5, 1.0 + (np.abs(a - e) if numeric else 0.0)), 0.0)
        self._track_worst(score, e, a)
        return bad

    def _track_worst(self, score: np.ndarray, e: np.ndarray, a: np.ndarray) -> None:
        flat = int(np.argmax(score))
        value = float(score.reshape(-1)[flat])
        if value > self.worst_score:
            index = np.unravel_index(flat, score.shape)
            self.worst_score = value
            self.worst_index = tuple(int(i) for i in index)
            self.worst_expected = float(e[index])
            self.worst_actual = float(a[index])

    def result(self, passing: frozenset[str] | set[str] = frozenset()) -> OutputParity:
        """The output's parity; label rows on a near tie of a ``passing`` output are
        borderline, not mismatches."""
        border = [r for r in self.bad_rows if self.ties.get(r, set()) & passing]
        borderline = sum(self.bad_rows[r] for r in border)
        rows = [r for r in self.bad_rows if r not in set(border)]
        return OutputParity(
            name=self.name,
            max_abs_error=self.max_abs,
            max_rel_error=self.max_rel,
            atol=self.atol,
            rtol=self.rtol,
            mismatches=self.mismatches - borderline,
            elements=self.elements,
            worst_index=self.worst_index,
            worst_expected=self.worst_expected,
            worst_actual=self.worst_actual,
            exact=self.exact,
            rows=tuple(rows[:_ROWS_KEPT]),
            borderline=borderline,
            borderline_rows=tuple(border[:_ROWS_KEPT]),
        )
