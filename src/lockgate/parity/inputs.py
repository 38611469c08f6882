"""The random inputs parity runs, drawn inside each input's domain.

Each input is drawn like the sample's values for it, per feature (the elements at one position
after dim 0) where the drawn shape keeps the sample's feature shape, over all its elements where a
free dimension changed it:

- **categories** (``Converted.categories``, the values a fitted encoder knows): drawn among
  them, and only them (a value the model does not know may be refused);
- **strings**: drawn among the values seen in the sample and the strings of the pool (values
  from the reference data, say);
- **floats**: normal with the sample's mean and std (NaN ignored; a constant feature still
  varies), or drawn among the seen values where they are whole numbers that repeat, at most 20
  distinct or at most half the rows (codes stored as floats); NaN at the sample's rate where the
  sample has NaN, and at least once over all the random inputs;
- **integers**: uniform within the seen range (token ids stay valid; a constant input, such as an
  attention mask of ones, stays constant);
- **bools**: fair coins.

Free dimensions all vary: symbols on dim 0 (the batch) cycle through :data:`BATCH_SIZES`; every
other symbol cycles through lengths around the sample's ``n`` (``n // 2``, ``2n``, ``1``, ``n``),
the same length for every input that shares the symbol (or the sample's size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lockgate.types import TensorSpec

__all__ = ["BATCH_SIZES", "Draws", "parity_inputs", "random_inputs"]

BATCH_SIZES = (1, 2, 3, 5, 8)
"""Batch sizes the random inputs cycle through when dim 0 is symbolic."""

_MAX_LENGTH = 1024  # longer than the sample's, but not past this
_FEW = 20  # at most this many distinct whole numbers make a float feature discrete
_ROWS_SHOWN = 20


@dataclass(frozen=True)
class Draws:
    """The sample and the random inputs, and how they were drawn.

    ``varied[i]`` is True where a dimension other than the batch differs from the sample's: the
    source model may refuse such an input. ``dims`` gives each free dimension's size per input,
    ``how`` says in words how each input was drawn.
    """

    inputs: list[dict[str, np.ndarray]]
    varied: list[bool]
    dims: dict[str, tuple[int, ...]]
    how: dict[str, str]


def parity_inputs(
    sample: Mapping[str, np.ndarray],
    specs: Sequence[TensorSpec],
    n_random: int,
    seed: int,
    *,
    categories: Mapping[str, Sequence[object]] | None = None,
    pool: Mapping[str, np.ndarray] | None = None,
) -> Draws:
    """The sample plus ``n_random`` random inputs drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    domains = [_Domain.of(s.name, np.asarray(sample[s.name]), (categories or {}).get(s.name),
                          None if pool is None or s.name not in pool else np.asarray(pool[s.name]))
               for s in specs]
    symbols = _symbols(specs, sample)
    plans = [{sym: _size(sym, symbols, i) for sym in symbols} for i in range(n_random)]
    drawn = [{d.name: d.draw(_shape(spec, d.ref, plan), rng)
              for spec, d in zip(specs, domains, strict=True)} for plan in plans]
    for d in domains:
        d.ensure_nan([x[d.name] for x in drawn], rng)
    varied = [False] + [any(plan[s] != symbols[s].size for s in symbols if not symbols[s].batch)
                        for plan in plans]
    return Draws(
        inputs=[{s.name: np.asarray(sample[s.name]) for s in specs}, *drawn],
        varied=varied,
        dims=_dims_shown(symbols, plans),
        how={d.name: d.how for d in domains},
    )


def random_inputs(
    sample: Mapping[str, np.ndarray],
    specs: Sequence[TensorSpec],
    batch: int,
    rng: np.random.Generator,
    *,
    categories: Mapping[str, Sequence[object]] | None = None,
) -> dict[str, np.ndarray]:
    """One random input shaped like ``sample``, with every symbolic dim 0 set to ``batch``."""
    symbols = _symbols(specs, sample)
    plan = {s: batch if v.batch else v.size for s, v in symbols.items()}
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        d = _Domain.of(spec.name, np.asarray(sample[spec.name]),
                       (categories or {}).get(spec.name), None)
        out[spec.name] = d.draw(_shape(spec, d.ref, plan), rng)
    return out


# -- dimensions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Symbol:
    size: int  # in the sample
    batch: bool  # first seen on dim 0
    shown: str  # its name in the report


def _symbols(specs: Sequence[TensorSpec], sample: Mapping[str, np.ndarray]) -> dict[str, _Symbol]:
    found: dict[str, _Symbol] = {}
    for spec in specs:
        ref = np.asarray(sample[spec.name])
        if ref.ndim != len(spec.shape):
            continue
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str) and dim not in found:
                unnamed = dim == f"{spec.name}_d{axis}"
                shown = ("batch" if axis == 0 else f"{spec.name} dim {axis}") if unnamed else dim
                found[dim] = _Symbol(int(ref.shape[axis]), axis == 0, shown)
    return found


def _lengths(n: int) -> tuple[int, ...]:
    """Lengths a non-batch dimension of sample size ``n`` cycles through."""
    if n <= 0:
        return (n,)
    longer = min(2 * n, max(n, _MAX_LENGTH))
    return tuple(dict.fromkeys((max(1, n // 2), longer, 1, n)))


def _size(symbol: str, symbols: Mapping[str, _Symbol], i: int) -> int:
    s = symbols[symbol]
    if s.batch:
        return BATCH_SIZES[i % len(BATCH_SIZES)]
    lengths = _lengths(s.size)
    return lengths[i % len(lengths)]


def _shape(spec: TensorSpec, ref: np.ndarray, plan: Mapping[str, int]) -> tuple[int, ...]:
    if ref.ndim != len(spec.shape):
        return tuple(ref.shape)
    return tuple(plan.get(d, n) if isinstance(d, str) else n
                 for d, n in zip(spec.shape, ref.shape, strict=True))


def _dims_shown(symbols: Mapping[str, _Symbol],
                plans: Sequence[Mapping[str, int]]) -> dict[str, tuple[int, ...]]:
    shown: dict[str, tuple[int, ...]] = {}
    for name, s in symbols.items():
        sizes = (s.size, *(p[name] for p in plans))
        if s.shown not in shown:
            shown[s.shown] = sizes
    return shown


# -- values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Domain:
    """How one input's values are drawn: per feature (``columns``) or over all its elements."""

    name: str
    ref: np.ndarray
    kind: str  # "categories", "strings", "floats", "ints", "bools", "rows", "empty"
    columns: _Values
    pooled: _Values
    how: str

    @classmethod
    def of(cls, name: str, ref: np.ndarray, categories: Sequence[object] | None,
           pool: np.ndarray | None) -> _Domain:
        if ref.size == 0:
            return cls(name, ref, "empty", _Values(), _Values(), "empty in the sample")
        rows = ref.reshape(ref.shape[0], -1) if ref.ndim else ref.reshape(1, 1)
        flat = ref.reshape(-1, 1)
        known = _as_values(categories, ref.dtype) if categories else None
        if known is not None:
            cols = _Values(choices=[known] * rows.shape[1])
            return cls(name, ref, "categories", cols, _Values(choices=[known]),
                       f"categories ({len(known)} values)")
        kind = {"f": "floats", "i": "ints", "u": "ints", "b": "bools", "O": "strings",
                "U": "strings", "S": "strings"}.get(ref.dtype.kind, "rows")
        if kind == "floats":
            cols, pooled = _Values.floats(rows), _Values.floats(flat)
            return cls(name, ref, kind, cols, pooled, _float_how(cols))
        if kind == "ints":
            low, high = int(ref.min()), int(ref.max())
            how = f"constant {low}" if low == high else f"ints in [{low}, {high}]"
            return cls(name, ref, kind, _Values.ints(rows), _Values.ints(flat), how)
        if kind == "strings":
            kind_of = bytes if ref.dtype.kind == "S" else str
            extra = None if pool is None else np.asarray(
                [v for v in pool.reshape(-1).tolist() if isinstance(v, kind_of)], dtype=object)
            cols = _Values.strings(rows, extra)
            pooled = _Values.strings(flat, extra)
            seen = len(_distinct(ref.reshape(-1)))
            n = len(pooled.choices[0]) if pooled.choices else 0
            how = (f"strings from {seen} seen values" if n == seen else
                   f"strings from {n} values ({seen} seen, {n - seen} more from the pool)")
            return cls(name, ref, kind, cols, pooled, how)
        how = "bools (fair coin)" if kind == "bools" else "rows of the sample"
        return cls(name, ref, kind, _Values(), _Values(), how)

    def draw(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        if self.kind == "empty":
            return np.zeros(shape, dtype=self.ref.dtype)
        if self.kind == "bools":
            return np.asarray(rng.random(shape) < 0.5, dtype=bool)
        if self.kind == "rows":
            if self.ref.ndim == 0:
                return self.ref.copy()
            return self.ref[rng.integers(0, self.ref.shape[0], size=shape[0])].reshape(shape)
        per_feature = self.ref.ndim > 0 and len(shape) > 0 and shape[1:] == self.ref.shape[1:]
        if per_feature:
            n = shape[0]
            values = self.columns.draw(self.kind, n, rng)
        else:
            values = self.pooled.draw(self.kind, int(np.prod(shape)), rng)
        return _typed(values, self.ref.dtype).reshape(shape)

    def ensure_nan(self, drawn: Sequence[np.ndarray], rng: np.random.Generator) -> None:
        """At least one NaN over ``drawn`` in each feature where the sample has NaN."""
        if self.kind != "floats" or not drawn or not self.pooled.nan_rate.any():
            return
        largest = max(drawn, key=lambda a: a.size)
        if largest.size == 0:
            return
        if largest.ndim and largest.shape[1:] == self.ref.shape[1:]:
            flat = largest.reshape(largest.shape[0], -1)
            for col in np.flatnonzero(self.columns.nan_rate > 0):
                if not any(np.isnan(a.reshape(a.shape[0], -1)[:, col]).any()
                           for a in drawn if a.size):
                    flat[int(rng.integers(0, flat.shape[0])), col] = np.nan
        elif not any(np.isnan(a).any() for a in drawn):
            largest.reshape(-1)[int(rng.integers(0, largest.size))] = np.nan


@dataclass(frozen=True)
class _Values:
    """Per-feature parameters (one entry per column of a ``(rows, features)`` matrix)."""

    choices: list[np.ndarray] | None = None  # categories and strings: drawn among these
    sorted: np.ndarray | None = None  # floats: the seen values per column, NaN last
    finite: np.ndarray | None = None  # floats: how many seen values per column are not NaN
    discrete: np.ndarray | None = None  # floats: drawn among the seen values
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    nan_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    @classmethod
    def floats(cls, rows: np.ndarray) -> _Values:
        data = rows.astype(np.float64)
        ok = np.isfinite(data)
        count = ok.sum(axis=0)
        safe = np.where(ok, data, 0.0)
        mean = safe.sum(axis=0) / np.maximum(count, 1)
        std = np.sqrt((np.where(ok, data - mean, 0.0) ** 2).sum(axis=0) / np.maximum(count, 1))
        spread = float(np.sqrt((np.where(ok, data - safe.sum() / max(int(count.sum()), 1),
                                         0.0) ** 2).sum() / max(int(count.sum()), 1))) or 1.0
        ordered = np.sort(np.where(ok, data, np.nan), axis=0)
        steps = (ordered[1:] != ordered[:-1]) & np.isfinite(ordered[1:])
        distinct = (count > 0).astype(np.int64) + steps.sum(axis=0)
        whole = np.all(~ok | (data == np.round(data)), axis=0)
        discrete = whole & (distinct < count) & ((distinct <= _FEW) | (2 * distinct <= count))
        return cls(sorted=ordered, finite=count, discrete=discrete, mean=mean,
                   std=np.where(std > 0, std, spread), nan_rate=np.isnan(data).mean(axis=0))

    @classmethod
    def ints(cls, rows: np.ndarray) -> _Values:
        return cls(low=rows.min(axis=0), high=rows.max(axis=0))

    @classmethod
    def strings(cls, rows: np.ndarray, extra: np.ndarray | None) -> _Values:
        more = [] if extra is None else list(extra)
        return cls(choices=[_object_array(_distinct(np.asarray([*rows[:, c], *more],
                                                               dtype=object)))
                            for c in range(rows.shape[1])])

    def draw(self, kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.choices is not None:
            return np.stack([c[rng.integers(0, len(c), size=n)] for c in self.choices], axis=1)
        if kind == "ints":
            assert self.low is not None
            assert self.high is not None
            return rng.integers(self.low, self.high, size=(n, self.low.size), endpoint=True)
        assert self.sorted is not None
        assert self.finite is not None
        assert self.mean is not None
        assert self.std is not None
        assert self.discrete is not None
        width = self.mean.size
        normal = self.mean + self.std * rng.standard_normal((n, width))
        index = np.minimum((rng.random((n, width)) * self.finite).astype(np.int64),
                           np.maximum(self.finite - 1, 0))
        seen = np.take_along_axis(self.sorted, index, axis=0) if len(self.sorted) else normal
        out = np.where(self.discrete, seen, normal)
        return np.where(rng.random((n, width)) < self.nan_rate, np.nan, out)


def _distinct(values: np.ndarray) -> list[Any]:
    return list(dict.fromkeys(v.item() if isinstance(v, np.generic) else v for v in values))


def _object_array(values: Sequence[object]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _as_values(categories: Sequence[object], dtype: np.dtype[Any]) -> np.ndarray | None:
    """The categories as elements of ``dtype``; None when they are not."""
    values = _distinct(np.asarray(list(categories), dtype=object))
    if not values:
        return None
    try:
        return _object_array(values) if dtype.kind in "OUS" else np.asarray(values, dtype=dtype)
    except (TypeError, ValueError):
        return None


def _typed(values: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    if dtype.kind == "U":
        return np.asarray(values.astype(str))
    if dtype.kind == "S":
        return np.asarray(values.astype(bytes))
    return values.astype(dtype)


def _float_how(cols: _Values) -> str:
    assert cols.discrete is not None
    n_discrete, n = int(cols.discrete.sum()), cols.discrete.size
    per = "" if n == 1 else " per feature"
    if n_discrete == 0:
        how = f"normal{per}"
    elif n_discrete == n:
        how = f"seen values{per} (few whole numbers)"
    else:
        how = f"normal per feature ({n - n_discrete}), seen values ({n_discrete})"
    missing = cols.nan_rate > 0
    if missing.any():
        rate = float(cols.nan_rate[missing].mean())
        how += f", NaN {rate:.0%}" if rate >= 0.01 else ", NaN <1%"
        if n > 1:
            how += f" in {int(missing.sum())} of {n} features"
    return how
