"""Golden tests: lockgate's drift numbers against Evidently's own functions on the same data."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

with warnings.catch_warnings():  # Evidently's imports warn about numpy and litestar APIs
    warnings.simplefilter("ignore")
    from evidently import Report
    from evidently.legacy.calculations.stattests import (
        chisquare_stattest,
        jensenshannon,
        ks_stattest,
        psi,
        wasserstein_distance_norm,
        z_stattest,
    )
    from evidently.legacy.calculations.stattests.registry import (
        _get_default_stattest,
    )
    from evidently.legacy.core import ColumnType
    from evidently.presets import DataDriftPreset

    from lockgate.errors import InvalidInputError
    from lockgate.monitor.stats import dataset_drift, default_method, feature_drift

NUM = ColumnType.Numerical
CAT = ColumnType.Categorical

EVIDENTLY: dict[str, Any] = {
    "psi": psi._psi,
    "ks": ks_stattest._ks_stat_test,
    "wasserstein": wasserstein_distance_norm._wasserstein_distance_norm,
    "jensenshannon": jensenshannon._jensenshannon,
}


def _pair(shift: float, n_ref: int, n_cur: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, n_ref), rng.normal(shift, 1.3 if shift else 1.0, n_cur)


@pytest.mark.parametrize("method", ["psi", "ks", "wasserstein", "jensenshannon"])
@pytest.mark.parametrize("shift", [0.0, 0.6])
@pytest.mark.parametrize("sizes", [(600, 300), (3000, 800)])
def test_numerical_methods_match_evidently(method: str, shift: float,
                                           sizes: tuple[int, int]) -> None:
    ref, cur = _pair(shift, *sizes, seed=int(shift * 10) + sizes[0])
    ours = feature_drift("x", ref, cur, method=method)
    theirs, drifted = EVIDENTLY[method](pd.Series(ref), pd.Series(cur), NUM, ours.threshold)
    assert ours.score == pytest.approx(float(theirs), abs=1e-6)
    assert ours.drifted == bool(drifted)
    assert ours.drifted == (shift > 0)  # the data really is (not) shifted


@pytest.mark.parametrize("shifted", [False, True])
def test_categorical_methods_match_evidently(shifted: bool) -> None:
    rng = np.random.default_rng(7)
    ref = rng.choice([0, 1, 2, 3], size=800, p=[0.4, 0.3, 0.2, 0.1])
    probs = [0.1, 0.2, 0.3, 0.4] if shifted else [0.4, 0.3, 0.2, 0.1]
    cur = rng.choice([0, 1, 2, 3], size=400, p=probs)
    for method, fn in [("chisquare", chisquare_stattest._chi_stat_test),
                       ("psi", psi._psi), ("jensenshannon", jensenshannon._jensenshannon)]:
        ours = feature_drift("c", ref, cur, kind="categorical", method=method)
        theirs, drifted = fn(pd.Series(ref), pd.Series(cur), CAT, ours.threshold)
        assert ours.score == pytest.approx(float(theirs), abs=1e-6), method
        assert ours.drifted == bool(drifted) == shifted, method
    rng = np.random.default_rng(21)
    binary_ref = rng.integers(0, 2, 500)
    binary_cur = (rng.random(300) < (0.8 if shifted else 0.5)).astype(int)
    ours = feature_drift("b", binary_ref, binary_cur, kind="categorical", method="z")
    theirs, drifted = z_stattest._z_stat_test(pd.Series(binary_ref), pd.Series(binary_cur),
                                              CAT, 0.05)
    assert ours.score == pytest.approx(float(theirs), abs=1e-6)
    assert ours.drifted == bool(drifted) == shifted


@pytest.mark.parametrize("n_ref", [500, 2000])
def test_default_selection_matches_evidently(n_ref: int) -> None:
    rng = np.random.default_rng(3)
    cases = [(rng.normal(size=n_ref), rng.normal(size=200), NUM, "numerical"),
             (rng.integers(0, 4, n_ref).astype(float), rng.integers(0, 4, 200).astype(float),
              NUM, "numerical"),
             (rng.integers(0, 2, n_ref), rng.integers(0, 2, 200), CAT, "categorical"),
             (rng.integers(0, 6, n_ref), rng.integers(0, 6, 200), CAT, "categorical")]
    names = {"ks": "ks", "wasserstein": "wasserstein", "jensenshannon": "jensenshannon",
             "chisquare": "chisquare", "z": "z"}
    for ref, cur, ctype, kind in cases:
        theirs = _get_default_stattest(pd.Series(ref), pd.Series(cur), ctype).name
        assert names[theirs] == default_method(ref, cur, kind)  # type: ignore[arg-type]


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_dataset_drift_share_matches_evidently_report(shift: float) -> None:
    rng = np.random.default_rng(11)
    n_ref, n_cur = 2000, 600
    ref = pd.DataFrame({"a": rng.normal(size=n_ref), "b": rng.normal(size=n_ref),
                        "c": rng.normal(size=n_ref), "d": rng.integers(0, 3, n_ref)})
    cur = pd.DataFrame({"a": rng.normal(shift, size=n_cur), "b": rng.normal(shift, size=n_cur),
                        "c": rng.normal(size=n_cur), "d": rng.integers(0, 3, n_cur)})
    snapshot = Report([DataDriftPreset()]).run(cur, ref).dict()
    values = {m["config"].get("column"): m["value"] for m in snapshot["metrics"]}
    counted = next(m["value"] for m in snapshot["metrics"]
                   if m["config"]["type"].endswith("DriftedColumnsCount"))
    ours = [feature_drift(c, ref[c].to_numpy(), cur[c].to_numpy()) for c in ref.columns]
    for f in ours:
        assert f.score == pytest.approx(float(values[f.feature]), abs=1e-6), f.feature
    result = dataset_drift(ours, 0.5)
    assert result.share == pytest.approx(counted["share"], abs=1e-9)
    assert result.drifted == (shift > 0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown drift method"):
        feature_drift("x", [1.0, 2.0], [1.0], method="cosine")
    with pytest.raises(InvalidInputError, match="needs a numerical"):
        feature_drift("x", [1, 2], [1], kind="categorical", method="ks")
    with pytest.raises(InvalidInputError, match="no finite values"):
        feature_drift("x", [np.nan], [1.0])


def test_results_record_how_they_were_computed() -> None:
    ref, cur = _pair(0.5, 2000, 500, 1)
    f = feature_drift("x", ref, cur, method="psi").to_dict()
    assert (f["method"], f["log_base"]) == ("psi", "e")
    assert "sturges" in f["binning"]
    assert (f["reference_size"], f["current_size"]) == (2000, 500)
