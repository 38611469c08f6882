"""XGBoost, LightGBM and CatBoost → ONNX: classifiers and regressors, alone and as a Pipeline's
last step, registered with parity proven; float32 thresholds, base_score and ZipMap handled."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")
pytest.importorskip("onnxmltools")
pytest.importorskip("xgboost")
pytest.importorskip("lightgbm")
pytest.importorskip("catboost")

import catboost
import lightgbm
import xgboost
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lockgate.api.facade import Lockgate
from lockgate.convert import CatBoostConverter, Converted, SklearnConverter, boosted, converter_for
from lockgate.convert.frameworks import FrameworkPolicyError
from lockgate.errors import ConversionError
from lockgate.parity.check import assert_parity, check_parity
from lockgate.progress import NullProgress
from lockgate.runtime.predictor import Predictor
from lockgate.types import ParityReport

pytestmark = pytest.mark.sklearn

X_IRIS, Y_IRIS = load_iris(return_X_y=True)
X_CANCER, Y_CANCER = load_breast_cancer(return_X_y=True)
X_CANCER, Y_CANCER = X_CANCER[:200], Y_CANCER[:200]
X_DIAB, Y_DIAB = load_diabetes(return_X_y=True)
X_DIAB, Y_DIAB = X_DIAB[:200], Y_DIAB[:200]  # features on a grid: rows sit on thresholds

TREES: dict[str, Any] = {"n_estimators": 15, "max_depth": 3}
LGBM: dict[str, Any] = {**TREES, "verbose": -1}
CATBOOST: dict[str, Any] = {"iterations": 15, "depth": 3, "verbose": 0,
                            "allow_writing_files": False}


def _convert(model: object, sample: np.ndarray) -> Converted:
    return converter_for(model).convert(model, sample, opset=None, progress=NullProgress())


def _parity(converted: Converted, x: np.ndarray | None = None) -> tuple[Predictor, ParityReport]:
    """Parity on the sample and random inputs; ``x`` (every training row) compared too."""
    predictor = Predictor(converted.model.SerializeToString())
    report = check_parity(converted, predictor, n_random=8)
    assert_parity(report)
    if x is not None:
        assert converted.reference is not None
        inputs = {"input": x.astype(np.float32)}
        got = predictor.run(inputs)
        for name, want in zip(predictor.output_names, converted.reference(inputs), strict=True):
            if want.dtype.kind == "f":
                np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-4, err_msg=name)
            else:
                np.testing.assert_array_equal(got[name], want, err_msg=name)
    return predictor, report


@pytest.mark.parametrize(("make", "framework"), [
    (lambda: xgboost.XGBClassifier(**TREES), "xgboost"),
    (lambda: lightgbm.LGBMClassifier(**LGBM), "lightgbm"),
    (lambda: catboost.CatBoostClassifier(**CATBOOST), "catboost"),
])
@pytest.mark.parametrize(("x", "y"), [(X_IRIS, Y_IRIS), (X_CANCER, Y_CANCER)],
                         ids=["multiclass", "binary"])
def test_classifiers_register_with_parity(lg: Lockgate, make: object, framework: str,
                                          x: np.ndarray, y: np.ndarray) -> None:
    model = make().fit(x, y)  # type: ignore[operator]
    version = lg.register(model, x[:20], name="clf")
    assert version.framework == framework
    assert version.framework_version == sys.modules[framework].__version__
    assert version.parity is not None
    assert all(o.passed for o in version.parity.outputs)
    assert [o.name for o in version.signature.outputs] == ["label", "probabilities"]
    proba = version.signature.outputs[1]
    assert (proba.dtype, proba.shape) == ("float32", ("batch", len(set(y))))  # no ZipMap
    assert version.signature.inputs[0].shape == ("batch", x.shape[1])
    assert f"{framework}==" in version.environment["converter"]
    _parity(_convert(model, x[:20]), x)


@pytest.mark.parametrize(("make", "framework"), [
    (lambda: xgboost.XGBRegressor(**TREES), "xgboost"),
    (lambda: lightgbm.LGBMRegressor(**LGBM), "lightgbm"),
    (lambda: catboost.CatBoostRegressor(**CATBOOST), "catboost"),
])
def test_regressors_register_with_parity(lg: Lockgate, make: object, framework: str) -> None:
    model = make().fit(X_DIAB, Y_DIAB)  # type: ignore[operator]
    version = lg.register(model, X_DIAB[:20], name="reg")
    assert version.framework == framework
    assert version.parity is not None
    assert all(o.passed for o in version.parity.outputs)
    out = version.signature.outputs
    assert [(o.name, o.dtype, o.shape) for o in out] == [("variable", "float32", ("batch", 1))]
    _parity(_convert(model, X_DIAB[:20]), X_DIAB)


@pytest.mark.parametrize("make", [lambda: xgboost.XGBClassifier(**TREES),
                                  lambda: lightgbm.LGBMClassifier(**LGBM)],
                         ids=["xgboost", "lightgbm"])
def test_booster_as_a_pipelines_last_step(lg: Lockgate, make: object) -> None:
    model = make_pipeline(StandardScaler(), make()).fit(X_CANCER, Y_CANCER)  # type: ignore[operator]
    version = lg.register(model, X_CANCER[:20], name="pipe")
    assert version.framework == "scikit-learn"
    converter = version.environment["converter"]
    assert converter.startswith("skl2onnx==")
    assert "onnxmltools==" in converter
    assert version.parity is not None
    assert all(o.passed for o in version.parity.outputs)
    _parity(_convert(model, X_CANCER[:20]), X_CANCER)


@pytest.mark.parametrize("make", [lambda: xgboost.XGBRegressor(**TREES),
                                  lambda: lightgbm.LGBMRegressor(**LGBM)],
                         ids=["xgboost", "lightgbm"])
def test_scaler_before_a_booster_keeps_rows_on_a_threshold(make: object) -> None:
    """XGBoost's split values are training values: a scaler computed in float32 moves a row by
    one ulp across one. Scalers before a booster compute in float64 in ONNX too."""
    model = make_pipeline(StandardScaler(), make()).fit(X_DIAB, Y_DIAB)  # type: ignore[operator]
    converted = _convert(model, X_DIAB[:20])
    _parity(converted, X_DIAB)
    assert "Cast" in {n.op_type for n in converted.model.graph.node}
    assert converted.details["onnxmltools_version"]


def test_lightgbm_thresholds_round_down_to_float32() -> None:
    """LightGBM splits at float64 thresholds; the nearest float32 sends rows between the two the
    other way, the largest float32 not above it does not."""
    model = lightgbm.LGBMRegressor(**LGBM).fit(X_DIAB, Y_DIAB)
    converted = _convert(model, X_DIAB[:20])
    _parity(converted, X_DIAB)
    exact = np.array([
        t for tree in model.booster_.dump_model()["tree_info"]
        for t in _thresholds(tree["tree_structure"])])
    nearest = exact.astype(np.float32)
    assert (nearest.astype(np.float64) > exact).any()  # some round up: those were moved down
    (tree,) = [n for n in converted.model.graph.node if n.op_type == "TreeEnsembleRegressor"]
    values = np.array(next(a.floats for a in tree.attribute if a.name == "nodes_values"))
    modes = next(a.strings for a in tree.attribute if a.name == "nodes_modes")
    splits = values[[m == b"BRANCH_LEQ" for m in modes]].astype(np.float32)
    assert set(splits.tolist()) <= set(
        np.where(nearest.astype(np.float64) > exact,
                 np.nextafter(nearest, np.float32(-np.inf)), nearest).tolist())


def _thresholds(node: dict[str, object]) -> list[float]:
    if "split_feature" not in node:
        return []
    return [float(node["threshold"]),  # type: ignore[arg-type]
            *_thresholds(node["left_child"]), *_thresholds(node["right_child"])]  # type: ignore[arg-type]


@pytest.mark.parametrize("base_score", [0.2, 0.8])
def test_xgboost_base_score_is_kept(base_score: float) -> None:
    """xgboost 3 keeps base_score in its JSON config; a classifier and a regressor keep it."""
    clf = xgboost.XGBClassifier(**TREES, base_score=base_score).fit(X_CANCER, Y_CANCER)
    _parity(_convert(clf, X_CANCER[:20]), X_CANCER)
    reg = xgboost.XGBRegressor(**TREES, base_score=base_score * 300).fit(X_DIAB, Y_DIAB)
    _parity(_convert(reg, X_DIAB[:20]), X_DIAB)


@pytest.mark.parametrize("objective", ["reg:squarederror", "reg:absoluteerror", "reg:gamma",
                                       "count:poisson"])
def test_xgboost_regression_objectives(objective: str) -> None:
    model = xgboost.XGBRegressor(**TREES, objective=objective).fit(X_DIAB, Y_DIAB)
    _parity(_convert(model, X_DIAB[:20]), X_DIAB)


def test_xgboost_regressor_with_a_logistic_objective_is_refused() -> None:
    model = xgboost.XGBRegressor(**TREES, objective="binary:logistic").fit(X_CANCER, Y_CANCER)
    with pytest.raises(ConversionError, match="objective 'binary:logistic'") as info:
        _convert(model, X_CANCER[:5])
    assert "XGBClassifier" in (info.value.hint or "")


@pytest.mark.parametrize(("make", "match"), [
    (lambda: xgboost.XGBClassifier(**TREES, objective="multi:softmax"), "'multi:softmax'"),
    (lambda: xgboost.XGBClassifier(**TREES, booster="dart"), "booster='dart'"),
    (lambda: lightgbm.LGBMClassifier(**LGBM, objective="multiclassova"), "one sigmoid per class"),
], ids=["xgboost-softmax", "xgboost-dart", "lightgbm-one-vs-all"])
def test_boosters_the_export_cannot_reproduce_are_refused(make: object, match: str) -> None:
    model = make().fit(X_IRIS, Y_IRIS)  # type: ignore[operator]
    with pytest.raises(ConversionError, match=match) as info:
        _convert(model, X_IRIS[:5])
    assert "train with" in (info.value.hint or "")


@pytest.mark.parametrize("make", [lambda: xgboost.XGBRegressor(**TREES),
                                  lambda: lightgbm.LGBMRegressor(**LGBM)],
                         ids=["xgboost", "lightgbm"])
def test_missing_values_take_the_sources_default_branch(make: object) -> None:
    x = np.where(X_DIAB > 0.05, np.nan, X_DIAB)
    model = make().fit(x, Y_DIAB)  # type: ignore[operator]
    _parity(_convert(model, x[:20]), x)


def test_string_classes_come_out_exact() -> None:
    labels = np.array(["setosa", "versicolor", "virginica"])[Y_IRIS]
    for model in (lightgbm.LGBMClassifier(**LGBM).fit(X_IRIS, labels),
                  catboost.CatBoostClassifier(**CATBOOST).fit(X_IRIS, labels)):
        predictor, _ = _parity(_convert(model, X_IRIS[:10]), X_IRIS)
        assert predictor.signature.outputs[0].dtype == "object"


def test_converters_are_picked_and_registered_once() -> None:
    cat = catboost.CatBoostClassifier(**CATBOOST).fit(X_IRIS, Y_IRIS)
    assert isinstance(converter_for(cat), CatBoostConverter)
    xgb = xgboost.XGBClassifier(**TREES).fit(X_IRIS, Y_IRIS)
    assert isinstance(converter_for(xgb), SklearnConverter)
    pipe = make_pipeline(StandardScaler(), lightgbm.LGBMClassifier(**LGBM))
    assert boosted.boosters_in(pipe) == ("lightgbm",)
    assert boosted.boosters_in(StandardScaler()) == ()
    first = _convert(xgb, X_IRIS[:5])
    second = _convert(xgb, X_IRIS[:5])  # registering again changes nothing
    assert first.model.graph == second.model.graph


@pytest.mark.parametrize(("params", "x", "y", "outputs"), [
    ({"objective": "multi:softprob", "num_class": 3}, X_IRIS, Y_IRIS, ["label", "probabilities"]),
    ({"objective": "binary:logistic"}, X_CANCER, Y_CANCER, ["label", "probabilities"]),
    ({"objective": "reg:squarederror"}, X_DIAB, Y_DIAB, ["variable"]),
], ids=["multiclass", "binary", "regression"])
def test_a_native_xgboost_booster_converts_as_its_wrapper(
        lg: Lockgate, params: dict[str, Any], x: np.ndarray, y: np.ndarray,
        outputs: list[str]) -> None:
    booster = xgboost.train({**params, "max_depth": 3}, xgboost.DMatrix(x, label=y), 15)
    version = lg.register(booster, x[:20], name="native")
    assert version.framework == "xgboost"
    assert [o.name for o in version.signature.outputs] == outputs
    converted = _convert(booster, x[:20])
    _parity(converted, x)
    assert converted.reference is not None
    got = converted.reference({"input": x.astype(np.float32)})[-1]
    want = booster.predict(xgboost.DMatrix(x.astype(np.float32)))
    if params["objective"] == "binary:logistic":
        want = np.stack([1 - want, want], axis=1)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-6)  # the same trees


def test_a_native_lightgbm_booster_is_refused_with_a_hint() -> None:
    booster = lightgbm.train({"objective": "regression", "verbose": -1},
                             lightgbm.Dataset(X_DIAB, label=Y_DIAB), 5)
    with pytest.raises(ConversionError, match=r"native lightgbm\.Booster") as info:
        _convert(booster, X_DIAB[:5])
    assert "LGBMRegressor" in (info.value.hint or "")


def test_a_native_booster_with_another_objective_is_refused() -> None:
    data = xgboost.DMatrix(X_DIAB, label=Y_DIAB > 150)
    booster = xgboost.train({"objective": "rank:pairwise"}, data, 3)
    with pytest.raises(ConversionError, match="objective 'rank:pairwise'"):
        _convert(booster, X_DIAB[:5])


def test_missing_onnxmltools_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    model = xgboost.XGBClassifier(**TREES).fit(X_IRIS, Y_IRIS)
    monkeypatch.setitem(sys.modules, "onnxmltools", None)  # import fails as if not installed
    boosted._register.cache_clear()
    try:
        with pytest.raises(ConversionError, match="needs onnxmltools") as info:
            _convert(model, X_IRIS[:5])
        assert info.value.hint == "pip install 'lockgate[xgboost]'"
    finally:
        boosted._register.cache_clear()


def test_catboost_categorical_features_are_refused() -> None:
    x = np.column_stack([X_IRIS[:, :3], (Y_IRIS % 2).astype(int)]).astype(object)
    x[:, 3] = x[:, 3].astype(int)
    model = catboost.CatBoostClassifier(**CATBOOST, cat_features=[3]).fit(x, Y_IRIS)
    with pytest.raises(ConversionError, match="categorical or text features"):
        _convert(model, X_IRIS[:5])


@pytest.mark.parametrize("loss", ["Poisson", "Tweedie:variance_power=1.5", "MAE"])
def test_catboost_regression_losses(loss: str) -> None:
    """A log-link loss predicts the exponent of the trees' sum; the export gets an Exp."""
    model = catboost.CatBoostRegressor(**CATBOOST, loss_function=loss).fit(X_DIAB, Y_DIAB)
    _parity(_convert(model, X_DIAB[:20]), X_DIAB)


@pytest.mark.parametrize(("make", "y", "match"), [
    (lambda: catboost.CatBoostClassifier(**CATBOOST, loss_function="MultiClassOneVsAll"),
     Y_DIAB > 140, "one sigmoid per class"),
    (lambda: catboost.CatBoostRegressor(**CATBOOST, loss_function="MultiRMSE"),
     np.column_stack([Y_DIAB, Y_DIAB]), "several targets"),
], ids=["one-vs-all", "multi-target"])
def test_catboost_losses_the_export_cannot_reproduce(make: object, y: np.ndarray,
                                                      match: str) -> None:
    model = make().fit(X_DIAB, y)  # type: ignore[operator]
    with pytest.raises(ConversionError, match=match) as info:
        _convert(model, X_DIAB[:5])
    assert "RMSE" in (info.value.hint or "")


def test_catboost_bool_labels_fail_with_a_clear_error() -> None:
    model = catboost.CatBoostClassifier(**CATBOOST).fit(X_CANCER, Y_CANCER == 1)
    with pytest.raises(ConversionError, match="CatBoost could not export"):
        _convert(model, X_CANCER[:5])


def test_framework_policy_names_the_booster(lg: Lockgate) -> None:
    from dataclasses import replace

    lg.settings = replace(lg.settings, frameworks={"scikit-learn": "*"})
    model = lightgbm.LGBMClassifier(**LGBM).fit(X_IRIS, Y_IRIS)
    with pytest.raises(FrameworkPolicyError, match="lightgbm is not an allowed"):
        lg.register(model, X_IRIS[:5], name="lgbm")
    lg.register(make_pipeline(StandardScaler(), lightgbm.LGBMClassifier(**LGBM))
                .fit(X_IRIS, Y_IRIS), X_IRIS[:5], name="pipe")


@pytest.mark.parametrize("make", [lambda: xgboost.XGBClassifier(**TREES),
                                  lambda: lightgbm.LGBMClassifier(**LGBM)],
                         ids=["xgboost", "lightgbm"])
def test_a_booster_fitted_on_a_dataframe(lg: Lockgate, make: object) -> None:
    """XGBoost names split features after the columns; the export reads them by position.
    LightGBM renames "mean radius" to "mean_radius": the inputs take the fitted names."""
    pd = pytest.importorskip("pandas")
    frame = load_breast_cancer(as_frame=True).frame.iloc[:200]
    x, y = frame.drop(columns="target"), frame["target"]
    model = make().fit(x, y)  # type: ignore[operator]
    version = lg.register(model, x.iloc[:20], name="frame")
    assert version.parity is not None
    assert all(o.passed for o in version.parity.outputs)
    fitted = [str(n) for n in model.feature_names_in_]
    assert [s.name for s in version.signature.inputs][:2] == fitted[:2]
    assert isinstance(x, pd.DataFrame)
