"""XGBoost and LightGBM scikit-learn models → ONNX: onnxmltools' converters inside skl2onnx.

:func:`register_boosters` puts onnxmltools' converters for ``XGBClassifier``, ``XGBRegressor``,
``LGBMClassifier`` and ``LGBMRegressor`` into skl2onnx's registry (once per framework, and only
when the model or one of its pipeline steps comes from xgboost or lightgbm), so
:class:`~lockgate.convert.sklearn.SklearnConverter` converts them alone or as a Pipeline's step,
classifiers with the ``zipmap`` option off. A native ``xgboost.Booster`` is loaded into the
scikit-learn wrapper its objective calls for (:func:`as_estimator`); a native
``lightgbm.Booster`` is refused with a hint. :func:`booster_identity` says what the version
records: the booster's framework (``"xgboost"``, ``"lightgbm"``) for a bare model, scikit-learn
for a pipeline, with every version in the converter string.

Split thresholds: ONNX TreeEnsemble compares float32 features with float32 thresholds. XGBoost
does the same, so its trees agree exactly. LightGBM compares in float64 against float64
thresholds: rounding a threshold to the nearest float32 sends a feature lying between the two
values the other way. LightGBM's ``x <= t`` holds for a float32 ``x`` exactly when ``x`` is at
most the largest float32 not above ``t``, so each LightGBM threshold is rounded down, not to the
nearest, and a bare LightGBM model's trees agree exactly too. Trees after a float32 preprocessing
step (a scaler in the same pipeline) can still disagree on rows that sit on a threshold: ONNX
computes the step in float32, scikit-learn in float64. So in a pipeline with a booster, scalers
(StandardScaler, RobustScaler, MaxAbsScaler) compute in float64 in ONNX too (skl2onnx's
``div="div_cast"``) and the reference runs the pipeline on the float32 features as float64, as
scikit-learn runs it in production: the booster then sees the same float32 values on both sides.

Tolerance: parity's float32 default (atol 1e-4, rtol 1e-3) holds for boosted trees with a wide
margin once the splits agree. What remains is float32 summation of the leaves: probabilities
within about 5e-7, raw scores and regression values within a relative 1e-5 (500 trees,
targets around 1e4: at most 0.04 absolute). A regressor whose predictions sit near zero while
its leaves are large can exceed atol there; pass a larger ``atol`` for it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper

from lockgate.convert._common import dist_version, from_package
from lockgate.errors import ConversionError

__all__ = ["BOOSTER_FRAMEWORKS", "BoosterIdentity", "as_estimator", "booster_identity",
           "boosters_in", "is_native_booster", "matrix_reader", "register_boosters",
           "scaler_options"]

BOOSTER_FRAMEWORKS = ("xgboost", "lightgbm")
"""The packages whose scikit-learn wrappers convert through onnxmltools."""

_CLASSIFIER_OPTIONS = {"nocl": [True, False], "zipmap": [True, False, "columns"]}

_XGB_CLASSIFIER_OBJECTIVES = ("binary:logistic", "multi:softprob", "binary:hinge")

# XGBRegressor objectives whose prediction onnxmltools reproduces: the trees' sum plus
# base_score (identity link), or exp of it (log link).
_XGB_REGRESSION_OBJECTIVES = frozenset({
    "reg:squarederror", "reg:squaredlogerror", "reg:pseudohubererror", "reg:absoluteerror",
    "reg:quantileerror", "count:poisson", "reg:gamma", "reg:tweedie",
})


@dataclass(frozen=True)
class BoosterIdentity:
    """What a version converted from (or through) a booster records."""

    framework: str
    framework_version: str
    converter: str
    details: dict[str, str]


def _estimators(model: object) -> Iterator[object]:
    """``model`` and, for a Pipeline (or nested ones), every step."""
    yield model
    for _, step in getattr(model, "steps", None) or ():
        yield from _estimators(step)


def boosters_in(model: object) -> tuple[str, ...]:
    """The booster frameworks (``"xgboost"``, ``"lightgbm"``) ``model`` or its steps come from."""
    found = [p for est in _estimators(model) for p in BOOSTER_FRAMEWORKS if from_package(est, p)]
    return tuple(dict.fromkeys(found))


def register_boosters(model: object) -> None:
    """Register onnxmltools' converters for the boosters in ``model`` into skl2onnx (once).

    ConversionError naming the extra when onnxmltools is missing, or for a booster whose
    objective (or kind of booster) onnxmltools does not reproduce.
    """
    for est in _estimators(model):
        if from_package(est, "xgboost") and hasattr(est, "get_booster"):
            _check_xgboost(est)
        elif from_package(est, "lightgbm") and type(est).__name__ == "LGBMClassifier":
            _check_lightgbm(est)
    for package in boosters_in(model):
        _register(package)


@functools.cache
def _register(package: str) -> None:
    try:
        import onnxmltools  # noqa: F401
    except ImportError as exc:
        raise ConversionError(
            f"converting a {package} model needs onnxmltools, which is not installed",
            hint=f"pip install 'lockgate[{package}]'",
        ) from exc
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    _register_scalers()
    if package == "xgboost":
        import xgboost

        update_registered_converter(
            xgboost.XGBClassifier, "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes, _convert_xgboost,
            options=_CLASSIFIER_OPTIONS)
        update_registered_converter(
            xgboost.XGBRegressor, "XGBoostXGBRegressor",
            calculate_linear_regressor_output_shapes, _convert_xgboost)
    elif package == "lightgbm":
        import lightgbm

        update_registered_converter(
            lightgbm.LGBMClassifier, "LightGbmLGBMClassifier",
            calculate_linear_classifier_output_shapes, _convert_lightgbm,
            options=_CLASSIFIER_OPTIONS)
        update_registered_converter(
            lightgbm.LGBMRegressor, "LightGbmLGBMRegressor",
            calculate_linear_regressor_output_shapes, _convert_lightgbm,
            options={"split": None})


@functools.cache
def _register_scalers() -> None:
    """skl2onnx's scaler converter, with the float64 offset of ``div="div_cast"`` exact.

    skl2onnx rounds the offset (the mean, or the center) to float32 before casting it to
    float64; the float64 subtraction then differs from scikit-learn's by up to the rounding.
    """
    from skl2onnx import update_registered_converter
    from skl2onnx.operator_converters.scaler_op import convert_sklearn_scaler
    from skl2onnx.shape_calculators.scaler import calculate_sklearn_scaler_output_shapes
    from sklearn.preprocessing import RobustScaler, StandardScaler

    def convert(scope: Any, operator: Any, container: Any) -> None:
        start = len(container.nodes)
        convert_sklearn_scaler(scope, operator, container)
        op = operator.raw_operator
        offset = getattr(op, "mean_", None) if isinstance(op, StandardScaler) else op.center_
        if offset is None or container.get_options(op, {"div": "std"})["div"] != "div_cast":
            return
        subs = {n.input[1] for n in container.nodes[start:] if n.op_type == "Sub"}
        for init in container.initializers:
            if init.name in subs and init.data_type == onnx.TensorProto.DOUBLE:
                init.CopyFrom(onnx.numpy_helper.from_array(
                    np.asarray(offset, dtype=np.float64), init.name))

    for cls, alias in ((StandardScaler, "SklearnScaler"), (RobustScaler, "SklearnRobustScaler")):
        update_registered_converter(cls, alias, calculate_sklearn_scaler_output_shapes,
                                    convert, options={"div": ["std", "div", "div_cast"]})


def _check_xgboost(model: Any) -> None:
    import json

    name = type(model).__name__
    learner = json.loads(model.get_booster().save_config())["learner"]
    kind = learner.get("gradient_booster", {}).get("name", "gbtree")
    if kind != "gbtree":
        raise ConversionError(
            f"onnxmltools converts tree boosters, not the {name}'s booster={kind!r}",
            hint="train with booster='gbtree' (the default)")
    objective = learner["objective"]["name"]
    if name == "XGBClassifier" and objective not in _XGB_CLASSIFIER_OBJECTIVES:
        raise ConversionError(
            f"onnxmltools does not reproduce an XGBClassifier with objective {objective!r}",
            hint=f"train with one of {', '.join(_XGB_CLASSIFIER_OBJECTIVES)} (binary:logistic "
            "and multi:softprob are the defaults)")
    if name == "XGBRegressor" and objective not in _XGB_REGRESSION_OBJECTIVES:
        raise ConversionError(
            f"onnxmltools does not reproduce an XGBRegressor with objective {objective!r}: "
            "its export leaves out the link function and base_score's transform",
            hint="train an XGBClassifier for binary:logistic, or a regressor with "
            f"one of {', '.join(sorted(_XGB_REGRESSION_OBJECTIVES))}",
        )


def _check_lightgbm(model: Any) -> None:
    objective = str(model.objective_ if hasattr(model, "objective_") else model.objective)
    if objective in ("multiclassova", "multiclass_ova", "ova", "ovr"):
        raise ConversionError(
            f"onnxmltools does not reproduce an LGBMClassifier with objective {objective!r}: "
            "its probabilities are one sigmoid per class, the export's a softmax",
            hint="train with objective='multiclass' (the default for several classes)")


def _convert_xgboost(scope: Any, operator: Any, container: Any) -> None:
    """onnxmltools' XGBoost converter, on a copy without feature names for a model fitted on a
    DataFrame (onnxmltools reads split features as ``f<index>`` only)."""
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import (
        convert_xgboost,
    )

    model = operator.raw_operator
    booster = model.get_booster()
    if not booster.feature_names:
        convert_xgboost(scope, operator, container)
        return
    nameless = copy.copy(model)
    nameless._Booster = booster.copy()
    nameless._Booster.feature_names = None
    nameless._Booster.feature_types = None
    operator.raw_operator = nameless
    try:
        convert_xgboost(scope, operator, container)
    finally:
        operator.raw_operator = model


def _convert_lightgbm(scope: Any, operator: Any, container: Any) -> None:
    """onnxmltools' LightGBM converter, then each split threshold rounded down to float32."""
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import (
        convert_lightgbm,
    )

    start = len(container.nodes)
    convert_lightgbm(scope, operator, container)
    table = _lightgbm_thresholds(operator.raw_operator)
    for node in container.nodes[start:]:
        if node.domain == "ai.onnx.ml" and node.op_type.startswith("TreeEnsemble"):
            _round_down(node, table)


def _lightgbm_thresholds(model: Any) -> dict[tuple[int, float], set[float]]:
    """``(feature, nearest float32 threshold) → {largest float32 <= threshold}`` for every
    numerical split of the LightGBM model."""
    features: list[int] = []
    values: list[float] = []
    stack = [tree["tree_structure"] for tree in model.booster_.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_feature" not in node:
            continue
        if node.get("decision_type") == "<=" and type(node.get("threshold")) in (int, float):
            features.append(int(node["split_feature"]))
            values.append(float(node["threshold"]))
        stack += [node["left_child"], node["right_child"]]
    exact = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore"):
        nearest = exact.astype(np.float32)
    down = np.where(nearest.astype(np.float64) > exact,
                    np.nextafter(nearest, np.float32(-np.inf)), nearest)
    table: dict[tuple[int, float], set[float]] = {}
    for feature, near, low in zip(features, nearest.tolist(), down.tolist(), strict=True):
        table.setdefault((feature, near), set()).add(low)
    return table


def _round_down(node: Any, table: dict[tuple[int, float], set[float]]) -> None:
    attrs = {a.name: a for a in node.attribute}
    if "nodes_values" not in attrs or "nodes_featureids" not in attrs:
        return
    values = list(attrs["nodes_values"].floats)
    features = list(attrs["nodes_featureids"].ints)
    modes = list(attrs["nodes_modes"].strings)
    changed = False
    for i, (value, feature, mode) in enumerate(zip(values, features, modes, strict=True)):
        lows = table.get((feature, value)) if mode == b"BRANCH_LEQ" else None
        if lows is not None and len(lows) == 1:
            low = next(iter(lows))
            changed |= low != value
            values[i] = low
    if changed:
        del attrs["nodes_values"].floats[:]
        attrs["nodes_values"].floats.extend(values)


def booster_identity(model: object, converter: str) -> BoosterIdentity | None:
    """The framework, versions and details of a model converted through onnxmltools; None when
    ``model`` has no booster. ``converter`` is skl2onnx's converter string."""
    packages = boosters_in(model)
    if not packages:
        return None
    onnxmltools = f"onnxmltools=={dist_version('onnxmltools')}"
    pins = " ".join(f"{p}=={dist_version(p)}" for p in packages)
    details = {f"{p}_version": dist_version(p) for p in packages}
    details["onnxmltools_version"] = dist_version("onnxmltools")
    if getattr(model, "steps", None) is None:  # a bare booster
        package = packages[0]
        return BoosterIdentity(package, dist_version(package),
                               f"{onnxmltools} {converter} {pins}", details)
    return BoosterIdentity("scikit-learn", dist_version("scikit-learn"),
                           f"{converter} {onnxmltools} {pins}", details)


def _in_pipeline(model: object) -> bool:
    return getattr(model, "steps", None) is not None and bool(boosters_in(model))


def scaler_options(model: object) -> dict[int, dict[str, Any]]:
    """skl2onnx options computing the scalers of a pipeline with a booster in float64."""
    if not _in_pipeline(model):
        return {}
    from skl2onnx import get_model_alias
    from skl2onnx.common._registration import get_converter

    options: dict[int, dict[str, Any]] = {}
    for est in list(_estimators(model))[1:]:
        try:
            allowed = get_converter(get_model_alias(type(est))).get_allowed_options() or {}
        except Exception:  # no converter registered: conversion will say so
            continue
        if "div_cast" in (allowed.get("div") or ()):
            options[id(est)] = {"div": "div_cast"}
    return options


def matrix_reader(
    model: object, read: Callable[[Mapping[str, np.ndarray]], np.ndarray]
) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    """``read`` (the float32 features), as float64 for a pipeline with a booster."""
    if not _in_pipeline(model):
        return read
    return lambda inputs: np.asarray(read(inputs), dtype=np.float64)


def is_native_booster(model: object) -> bool:
    """True for an ``xgboost.Booster`` or ``lightgbm.Booster`` (the training API's models)."""
    return type(model).__name__ == "Booster" and any(
        from_package(model, p) for p in BOOSTER_FRAMEWORKS)




def as_estimator(model: object) -> object:
    """``model``, or for a native xgboost Booster the XGBClassifier / XGBRegressor holding it
    (same trees, same predictions). A native lightgbm Booster: ConversionError with a hint."""
    if not is_native_booster(model):
        return model
    if from_package(model, "lightgbm"):
        raise ConversionError(
            "a native lightgbm.Booster has no scikit-learn form lockgate can convert",
            hint="train with lightgbm.LGBMClassifier or LGBMRegressor (the scikit-learn API) "
            "and register that model")
    import json

    import xgboost

    booster: Any = model
    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    if objective in _XGB_CLASSIFIER_OBJECTIVES:
        wrapper: Any = xgboost.XGBClassifier()
    elif objective in _XGB_REGRESSION_OBJECTIVES:
        wrapper = xgboost.XGBRegressor()
    else:
        raise ConversionError(
            f"lockgate does not convert an xgboost.Booster with objective {objective!r}",
            hint=f"train with one of {', '.join(_XGB_CLASSIFIER_OBJECTIVES)} (a classifier) or "
            f"{', '.join(sorted(_XGB_REGRESSION_OBJECTIVES))} (a regressor)")
    wrapper.load_model(bytearray(booster.save_raw("json")))
    return wrapper
