"""Drift statistics: pure functions over a reference sample and a current sample.

The methods, their thresholds, their binning and the default choice between them follow
Evidently's data-drift defaults, so the numbers agree with Evidently's on the same data:

=============  =======================  ==========  ==================================
method         score                    threshold   drifted when
=============  =======================  ==========  ==================================
ks             two-sided K-S p-value     0.05       p <= threshold
chisquare      chi-square p-value        0.05       p < threshold
z              two-proportion z p-value  0.05       p < threshold
wasserstein    W1 / max(std(ref), 1e-3)  0.1        score >= threshold
psi            population stability      0.1        score >= threshold
jensenshannon  J-S distance              0.1        score >= threshold
=============  =======================  ==========  ==================================

Binning for ``psi`` and ``jensenshannon``: numerical features with more than 20 distinct
reference values use Sturges' edges over reference and current together; otherwise one bin per
distinct value. PSI replaces empty bins with a small share (Evidently's ``feel_zeroes``); logs are
natural. Default choice (:func:`default_method`): with at most 1000 reference values, ``ks`` for
numerical features with more than 5 distinct values, ``chisquare`` (more than 2) or ``z``
otherwise; with more, ``wasserstein`` for numerical features with more than 5 distinct values
and ``jensenshannon`` otherwise. NaN and infinite values are dropped first. A dataset drifts when
the share of drifted features reaches ``drift_share`` (0.5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats
from scipy.spatial import distance

from lockgate.errors import InvalidInputError

__all__ = ["DEFAULT_THRESHOLDS", "METHODS", "DatasetDrift", "FeatureDrift", "binned",
           "dataset_drift", "default_method", "feature_drift"]

Kind = Literal["numerical", "categorical"]

DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "ks": 0.05, "chisquare": 0.05, "z": 0.05, "wasserstein": 0.1, "psi": 0.1,
    "jensenshannon": 0.1,
}
METHODS = tuple(DEFAULT_THRESHOLDS)
_P_VALUES = frozenset({"ks", "chisquare", "z"})
_NUMERICAL_ONLY = frozenset({"ks", "wasserstein"})


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift: the method, its score, the threshold and how it was computed."""

    feature: str
    kind: Kind
    method: str
    score: float
    threshold: float
    drifted: bool
    reference_size: int
    current_size: int
    binning: str = "-"
    log_base: str = "-"

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "kind": self.kind, "method": self.method,
                "score": self.score, "threshold": self.threshold, "drifted": self.drifted,
                "reference_size": self.reference_size, "current_size": self.current_size,
                "binning": self.binning, "log_base": self.log_base}


@dataclass(frozen=True)
class DatasetDrift:
    features: tuple[FeatureDrift, ...]
    drift_share: float
    """The threshold: the dataset drifts when ``share >= drift_share``."""
    share: float
    drifted: bool

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {"drift_share": self.drift_share, "share": self.share, "drifted": self.drifted,
                "features": [f.to_dict() for f in self.features]}


def _clean(values: Any) -> NDArray[Any]:
    arr = np.asarray(values).ravel()
    if arr.dtype.kind in "fc":
        arr = arr[np.isfinite(arr)]
    return arr


def default_method(reference: NDArray[Any], current: NDArray[Any], kind: Kind) -> str:
    """Evidently's default test for a feature (see the module docstring)."""
    n_values = np.unique(np.concatenate([reference, current])).size
    if reference.size <= 1000:
        if kind == "numerical" and n_values > 5:
            return "ks"
        return "chisquare" if n_values > 2 else "z"
    if kind == "numerical" and n_values > 5:
        return "wasserstein"
    return "jensenshannon"


def binned(reference: NDArray[Any], current: NDArray[Any], kind: Kind, *,
           fill_zeroes: bool) -> tuple[NDArray[np.float64], NDArray[np.float64], str]:
    """The reference and current shares per bin, and a description of the binning."""
    if kind == "numerical" and np.unique(reference).size > 20:
        edges = np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges")
        ref = np.histogram(reference, edges)[0] / reference.size
        cur = np.histogram(current, edges)[0] / current.size
        how = f"sturges, {edges.size - 1} bins over reference and current"
    else:
        keys = np.union1d(np.unique(reference), np.unique(current))
        ref = _shares(reference, keys)
        cur = _shares(current, keys)
        how = f"one bin per value, {keys.size} values"
    if fill_zeroes:
        ref, cur = _fill(ref), _fill(cur)
    return ref.astype(np.float64), cur.astype(np.float64), how


def _shares(values: NDArray[Any], keys: NDArray[Any]) -> NDArray[np.float64]:
    found, counts = np.unique(values, return_counts=True)
    out = np.zeros(keys.size)
    out[np.searchsorted(keys, found)] = counts
    return out / values.size


def _fill(p: NDArray[np.float64]) -> NDArray[np.float64]:
    nonzero = p[p != 0]
    if nonzero.size == 0:
        return p
    smallest = float(nonzero.min())
    out = p.copy()
    out[out == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return out


def _score(method: str, ref: NDArray[Any], cur: NDArray[Any], kind: Kind
           ) -> tuple[float, str, str]:
    if method == "ks":
        return float(stats.ks_2samp(ref, cur)[1]), "-", "-"
    if method == "wasserstein":
        norm = max(float(np.std(ref)), 0.001)
        return float(stats.wasserstein_distance(ref, cur)) / norm, "-", "-"
    if method == "psi":
        p, q, how = binned(ref, cur, kind, fill_zeroes=True)
        return float(np.sum((p - q) * np.log(p / q))), how, "e"
    if method == "jensenshannon":
        p, q, how = binned(ref, cur, kind, fill_zeroes=False)
        return float(distance.jensenshannon(p, q)), how, "e"
    if method == "chisquare":
        keys = np.union1d(np.unique(ref), np.unique(cur))
        observed = _shares(cur, keys) * cur.size
        expected = _shares(ref, keys) * ref.size * (cur.size / ref.size)
        return float(stats.chisquare(observed, expected)[1]), f"{keys.size} values", "-"
    if method == "z":
        return _z_test(ref, cur), "two proportions", "-"
    raise InvalidInputError(f"unknown drift method {method!r}", hint=f"known: {list(METHODS)}")


def _z_test(ref: NDArray[Any], cur: NDArray[Any]) -> float:
    keys = np.union1d(np.unique(ref), np.unique(cur))
    if keys.size == 1:
        return 1.0
    first = keys[0]
    p1 = float(np.mean(ref != first))
    p2 = float(np.mean(cur != first))
    n1, n2 = ref.size, cur.size
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    denom = np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    if denom == 0:
        return 1.0
    z = (p1 - p2) / denom
    return float(2 * (1 - stats.norm.cdf(abs(z))))


def feature_drift(feature: str, reference: Any, current: Any, *, kind: Kind = "numerical",
                  method: str | None = None, threshold: float | None = None) -> FeatureDrift:
    """Compare one feature's current values with its reference values.

    ``method`` None picks Evidently's default; ``threshold`` None the method's default.
    InvalidInputError for an unknown method, a numerical-only method on a categorical feature,
    or an empty sample.
    """
    ref, cur = _clean(reference), _clean(current)
    if ref.size == 0 or cur.size == 0:
        raise InvalidInputError(f"feature {feature!r}: no finite values to compare "
                                f"(reference {ref.size}, current {cur.size})")
    chosen = method or default_method(ref, cur, kind)
    if chosen not in DEFAULT_THRESHOLDS:
        raise InvalidInputError(f"unknown drift method {chosen!r}", hint=f"known: {list(METHODS)}")
    if chosen in _NUMERICAL_ONLY and kind != "numerical":
        raise InvalidInputError(f"feature {feature!r}: {chosen} needs a numerical feature")
    limit = DEFAULT_THRESHOLDS[chosen] if threshold is None else float(threshold)
    score, how, base = _score(chosen, ref, cur, kind)
    if chosen == "ks":
        drifted = score <= limit
    elif chosen in _P_VALUES:
        drifted = score < limit
    else:
        drifted = score >= limit
    return FeatureDrift(feature, kind, chosen, score, limit, bool(drifted), int(ref.size),
                        int(cur.size), how, base)


def dataset_drift(features: Sequence[FeatureDrift], drift_share: float = 0.5) -> DatasetDrift:
    """The share of drifted features, and whether it reaches ``drift_share``."""
    share = sum(f.drifted for f in features) / len(features) if features else 0.0
    return DatasetDrift(tuple(features), drift_share, share,
                        bool(features) and share >= drift_share)
