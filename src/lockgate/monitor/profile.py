"""Reference profiles: a compact description of each feature of a model's reference data.

A profile holds, per feature (see :mod:`lockgate.monitor.features`): its kind, count, mean,
standard deviation, range, quantiles, a 20-bin histogram (numerical) or category frequencies
(categorical, top 50), and a bounded reservoir sample — the exact tests (K-S, Wasserstein, PSI,
Jensen-Shannon) compare live windows with that sample. The same summary of a live window
(:func:`summarise`) feeds the report's histograms.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lockgate.errors import InvalidInputError
from lockgate.monitor.features import Column, columns
from lockgate.types import TensorSpec

__all__ = ["DEFAULT_SAMPLE", "Profile", "as_inputs", "build_profile", "profile_for",
           "read_reference_data", "summarise"]

DEFAULT_SAMPLE = 5000
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_BINS = 20
_TOP = 50


def _finite(values: NDArray[Any]) -> NDArray[Any]:
    out: NDArray[Any] = values[np.isfinite(values)] if values.dtype.kind in "fc" else values
    return out


def summarise(kind: str, values: NDArray[Any], *, edges: NDArray[Any] | None = None
              ) -> dict[str, Any]:
    """Count, moments, quantiles and a histogram (on ``edges`` when given, so a live window
    is binned like its reference) or category frequencies."""
    clean = _finite(np.asarray(values))
    out: dict[str, Any] = {"kind": kind, "count": int(clean.size),
                           "missing": int(np.asarray(values).size - clean.size)}
    if kind == "numerical" and clean.size:
        f = clean.astype(np.float64)
        out.update(mean=float(f.mean()), std=float(f.std()), min=float(f.min()),
                   max=float(f.max()),
                   quantiles={str(q): float(v) for q, v in zip(
                       QUANTILES, np.quantile(f, QUANTILES), strict=True)})
        bins = edges if edges is not None else np.histogram_bin_edges(f, bins=_BINS)
        counts = np.histogram(np.clip(f, bins[0], bins[-1]), bins)[0]
        out["histogram"] = {"edges": [float(e) for e in bins], "counts": [int(c) for c in counts]}
    elif clean.size:
        keys = clean
        if clean.dtype.kind == "f" and np.all(clean == np.round(clean)):
            keys = clean.astype(np.int64)  # class ids captured as floats read as 3, not 3.0
        found, counts = np.unique(keys.astype(str), return_counts=True)
        order = np.argsort(-counts, kind="stable")[:_TOP]
        out["categories"] = {str(found[i]): int(counts[i]) for i in order}
    return out


@dataclass(frozen=True)
class Profile:
    """Per feature: the summary and the reservoir sample. ``rows`` is how many rows the
    reference data had."""

    rows: int
    features: Mapping[str, Mapping[str, Any]]
    samples: Mapping[str, NDArray[Any]]
    source: str = ""

    def kind(self, feature: str) -> str:
        return str(self.features[feature]["kind"])

    def edges(self, feature: str) -> NDArray[Any] | None:
        hist = self.features[feature].get("histogram")
        return np.asarray(hist["edges"]) if hist else None

    def to_json(self) -> bytes:
        doc = {"format": "lockgate.profile/1", "rows": self.rows, "source": self.source,
               "features": {name: {**dict(summary), "sample": _jsonable(self.samples[name])}
                            for name, summary in self.features.items()}}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Profile:
        try:
            doc = json.loads(data)
            features = {}
            samples = {}
            for name, f in doc["features"].items():
                sample = f.pop("sample")
                features[name] = f
                samples[name] = (np.asarray(sample, dtype=np.float64)
                                 if f["kind"] == "numerical" or _numeric(sample)
                                 else np.asarray(sample, dtype=object))
            return cls(int(doc["rows"]), features, samples, str(doc.get("source", "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"not a lockgate profile: {exc}") from None


def _numeric(sample: list[Any]) -> bool:
    return all(isinstance(x, (int, float)) for x in sample)


def _jsonable(values: NDArray[Any]) -> list[Any]:
    if values.dtype.kind in "fiub":
        return [float(x) for x in values]
    return [str(x) for x in values]


def build_profile(cols: Mapping[str, Column], *, sample: int = DEFAULT_SAMPLE, seed: int = 0,
                  source: str = "") -> Profile:
    """Summarise each column and keep up to ``sample`` of its rows (the same rows for every
    feature, chosen with a seeded generator: the profile of the same data is the same)."""
    if not cols:
        raise InvalidInputError("the reference data has no features")
    rows = min(len(v) for _, v in cols.values())
    if rows == 0:
        raise InvalidInputError("the reference data has no rows")
    keep = np.arange(rows)
    if rows > sample:
        keep = np.sort(np.random.default_rng(seed).choice(rows, size=sample, replace=False))
    features = {}
    samples = {}
    for name, (kind, values) in cols.items():
        features[name] = summarise(kind, values)
        samples[name] = _finite(np.asarray(values)[keep])
    return Profile(rows, features, samples, source)


def as_inputs(arrays: Mapping[str, NDArray[Any]], inputs: tuple[TensorSpec, ...]
               ) -> dict[str, NDArray[Any]]:
    out = {}
    for spec in inputs:
        if spec.name not in arrays:
            raise InvalidInputError(f"the reference data has no input {spec.name!r}",
                                    hint=f"found: {sorted(arrays)}")
        try:
            arr = np.asarray(arrays[spec.name]).astype(spec.dtype, copy=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"reference input {spec.name!r} is not {spec.dtype}: "
                                    f"{exc}") from None
        if arr.ndim != len(spec.shape):
            raise InvalidInputError(
                f"reference input {spec.name!r} has shape {list(arr.shape)}; the model "
                f"expects rank {len(spec.shape)} ({list(spec.shape)})")
        out[spec.name] = arr
    return out


def _table(header: list[str], rows: list[list[str]], where: str) -> NDArray[Any]:
    try:
        return np.asarray([[float(x) for x in r] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise InvalidInputError(f"{where}: every column must be numeric ({exc})") from None


def read_reference_data(path: Path, inputs: tuple[TensorSpec, ...]) -> dict[str, NDArray[Any]]:
    """Model inputs from a reference data file: ``.npy`` (the single input), ``.npz`` (one
    array per input name), ``.csv`` or ``.parquet`` (numeric columns, in order, form the single
    rank-2 input; or, when every input is one column ``[batch, 1]`` named in the header, as a
    model converted from a DataFrame has, each input is read from its column, in its dtype).
    InvalidInputError when the file does not fit the model's inputs."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InvalidInputError(f"no such reference data file: {path}")
    try:
        if suffix == ".npy":
            arrays = {inputs[0].name: np.load(path, allow_pickle=False)} if len(inputs) == 1 \
                else {}
            if not arrays:
                raise InvalidInputError("a .npy file holds one array; this model has several "
                                        "inputs: use .npz with one array per input name")
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        elif suffix in (".csv", ".parquet") and _by_column(path, inputs):
            arrays = _named_columns(path, inputs)
        elif suffix in (".csv", ".parquet"):
            if len(inputs) != 1:
                raise InvalidInputError(f"a {suffix} file feeds one rank-2 input; this model has "
                                        f"{len(inputs)}: use .npz")
            if suffix == ".csv":
                text = path.read_text(encoding="utf-8")
                reader = list(csv.reader(io.StringIO(text)))
                if len(reader) < 2:
                    raise InvalidInputError(f"{path}: expected a header and rows")
                table = _table(reader[0], reader[1:], str(path))
            else:
                table = _parquet(path)
            arrays = {inputs[0].name: table}
        else:
            raise InvalidInputError(f"unsupported reference data {path.name!r}",
                                    hint="use .npy, .npz, .csv or .parquet")
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    return as_inputs(arrays, inputs)


def _header(path: Path) -> list[str]:
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            return next(csv.reader(f), [])
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return []
    return [str(n) for n in pq.read_schema(path).names]


def _by_column(path: Path, inputs: tuple[TensorSpec, ...]) -> bool:
    """Every input is a ``[batch, 1]`` column the file names."""
    one_column = all(len(s.shape) == 2 and s.shape[1] == 1 for s in inputs)
    return bool(inputs) and one_column and {s.name for s in inputs} <= set(_header(path))


def _named_columns(path: Path, inputs: tuple[TensorSpec, ...]) -> dict[str, NDArray[Any]]:
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        cells = {s.name: [r[s.name] for r in rows] for s in inputs}
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=[s.name for s in inputs])
        cells = {s.name: table.column(s.name).to_pylist() for s in inputs}
    out = {}
    for spec in inputs:
        try:
            values = [_cell(v, spec.dtype) for v in cells[spec.name]]
        except ValueError as exc:
            raise InvalidInputError(f"{path}: column {spec.name!r} is not {spec.dtype} "
                                    f"({exc})") from None
        out[spec.name] = np.asarray(values, dtype=spec.dtype).reshape(-1, 1)
    return out


def _cell(value: Any, dtype: str) -> Any:
    """One CSV or parquet cell as a value of ``dtype``; empty and NA cells are NaN floats."""
    if dtype == "object":
        return "" if value is None else str(value)
    text = str(value).strip() if value is not None else ""
    if dtype.startswith("float"):
        return float("nan") if text in ("", "NA", "NaN", "nan", "None") else float(text)
    if dtype == "bool":
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{text!r} is not a bool")
        return text.lower() in ("true", "1")
    return int(float(text)) if text else int(text)


def _parquet(path: Path) -> NDArray[Any]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidInputError("reading .parquet needs pyarrow",
                                hint="pip install 'lockgate[parquet]'") from None
    table = pq.read_table(path)
    try:
        return np.column_stack([table.column(i).to_numpy().astype(np.float64)
                                for i in range(table.num_columns)])
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{path}: every column must be numeric ({exc})") from None


def profile_for(run: Any, arrays: Mapping[str, NDArray[Any]], *, sample: int = DEFAULT_SAMPLE,
                chunk: int = 1024, source: str = "") -> Profile:
    """Run the model (``run(feeds) -> outputs``) over the reference inputs in chunks and
    profile inputs and outputs together."""
    n = min(int(a.shape[0]) for a in arrays.values() if a.ndim) if arrays else 0
    if n == 0:
        raise InvalidInputError("the reference data has no rows")
    outs: dict[str, list[NDArray[Any]]] = {}
    for start in range(0, n, chunk):
        part = {k: v[start:start + chunk] for k, v in arrays.items()}
        for k, v in run(part).items():
            outs.setdefault(k, []).append(np.asarray(v))
    outputs = {k: np.concatenate(v) for k, v in outs.items()}
    return build_profile(columns(arrays, outputs), sample=sample, source=source)
