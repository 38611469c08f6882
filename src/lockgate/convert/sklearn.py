"""scikit-learn → ONNX through skl2onnx.

The sample decides the inputs:

- a 2-D numeric array: one float32 input named ``"input"`` of shape ``["batch", n_features]``;
- a pandas DataFrame or a dict of columns (name → 1-D values): one input per column the model
  was fitted on, named after it, of shape ``["batch", 1]``: float32 for floats, int64 for
  integers, bool for bools, string for object, ``string`` and ``category`` columns
  (:mod:`lockgate.convert.columns`); the reference rebuilds a DataFrame with the sample's column
  names and dtypes, so the estimator sees what it was fitted on (an estimator that reads one
  matrix, given numeric columns, reads them cast to float32 and joined in order);
- a 1-D list of strings (or a Series of them): one string input ``"input"`` (or the Series'
  name) of shape ``["batch", 1]``, for text pipelines (CountVectorizer, TfidfVectorizer; see
  :mod:`lockgate.convert.sklearn_text`); a 2-D array of strings: one string input ``"input"``.

Classifiers give ``"label"`` (int64, or string for string classes) and ``"probabilities"`` (a
plain tensor, no ZipMap); regressors and transformers give ``"variable"``. Inputs read by a
OneHotEncoder or OrdinalEncoder carry its categories in ``Converted.categories``. A
FunctionTransformer (arbitrary Python) is refused, naming its step. sklearn, skl2onnx and pandas
are imported only for objects that come from them.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import onnx

from lockgate.convert._common import BATCH, dist_version, first_line, from_package
from lockgate.convert.base import Converted, Dynamic
from lockgate.convert.boosted import (
    as_estimator,
    booster_identity,
    is_native_booster,
    matrix_reader,
    register_boosters,
    scaler_options,
)
from lockgate.convert.columns import (
    Layout,
    encoder_categories,
    is_columnar,
    join_columns,
    joined_input,
    layout_of,
    walk,
)
from lockgate.convert.sklearn_text import check_tokenizers, portable_locale, vectorizer_options
from lockgate.errors import ConversionError
from lockgate.progress import Progress
from lockgate.runtime.onnxmeta import default_opset as onnx_opset
from lockgate.runtime.onnxmeta import signature_of
from lockgate.types import TensorSpec

__all__ = ["ML_OPSET", "SklearnConverter", "default_opset"]

INPUT = "input"
ML_OPSET = 3
"""``ai.onnx.ml`` opset: the one skl2onnx pairs with main opsets 18 and above."""

# Raised by sklearn when an estimator fitted on a DataFrame is given the numpy array ONNX sees.
_FEATURE_NAMES_WARNING = "X does not have valid feature names"
# Raised when a DataFrame sample's columns go to an estimator fitted on a bare array.
_FITTED_WITHOUT_NAMES = "X has feature names, but"


@functools.cache
def default_opset() -> int:
    """The highest main opset that both skl2onnx is tested with and ONNX Runtime can load."""
    import onnxruntime as ort
    import skl2onnx

    upper = min(int(skl2onnx.__max_supported_opset__), onnx.defs.onnx_opset_version())
    for version in range(upper, 17, -1):
        if _ort_loads(ort, version):
            return version
    return 18


def _ort_loads(ort: Any, version: int) -> bool:
    helper, tp = onnx.helper, onnx.TensorProto
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", tp.FLOAT, [1])],
        [helper.make_tensor_value_info("y", tp.FLOAT, [1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", version), helper.make_opsetid("ai.onnx.ml", 3)],
        ir_version=9,
    )
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        ort.InferenceSession(
            model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception:
        return False
    return True


class SklearnConverter:
    """Converts a fitted estimator or Pipeline; the sample is a 2-D array of features."""

    framework = "scikit-learn"

    def accepts(self, model: object) -> bool:
        if not from_package(model, "sklearn"):
            return is_native_booster(model)  # converted as its scikit-learn wrapper
        from sklearn.base import BaseEstimator

        return isinstance(model, BaseEstimator)

    def convert(
        self, model: object, sample: object, *, opset: int | None, progress: Progress,
        dynamic: Dynamic | None = None,
    ) -> Converted:
        import sklearn

        model = as_estimator(model)
        _check_fitted(model)
        layout, arrays = _sample_inputs(model, sample)
        _refuse_python_steps(model)
        opset = opset or default_opset()
        progress.start("export")
        try:
            proto, notes = _convert(model, _initial_types(layout, arrays), opset)
        finally:
            progress.finish("export")
        signature = signature_of(proto)
        methods = _methods(model, signature.outputs)
        skl2onnx_version = dist_version("skl2onnx")
        details = {"target_opset": str(opset), "opset": str(onnx_opset(proto))}
        if notes:
            details["export_warnings"] = notes
        categories: dict[str, tuple[object, ...]] = {}
        if layout is not None:
            details["inputs"] = layout.describe()
            if layout.dropped:
                details["unused_columns"] = ", ".join(layout.dropped)
            categories = encoder_categories(model, [c.name for c in layout.columns])
        locale = portable_locale(proto)
        if locale is not None:
            details["string_normalizer_locale"] = locale
        converted = Converted(
            model=proto,
            framework=self.framework,
            framework_version=sklearn.__version__,
            converter=f"skl2onnx=={skl2onnx_version} scikit-learn=={sklearn.__version__}",
            sample=arrays,
            reference=_Reference(model, methods, signature.outputs,
                                 matrix_reader(model, _matrix) if layout is None
                                 else layout.rebuild),
            details=details,
            categories=categories,
        )
        booster = booster_identity(model, converted.converter)
        return converted if booster is None else replace(
            converted, framework=booster.framework, framework_version=booster.framework_version,
            converter=booster.converter, details={**converted.details, **booster.details})


def _check_fitted(model: object) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    name = type(model).__name__
    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise ConversionError(
            f"the {name} model is not fitted", hint="fit it before registering"
        ) from exc
    except TypeError as exc:
        raise ConversionError(f"{name} is not a scikit-learn estimator") from exc


def _sample_inputs(model: object, sample: object) -> tuple[Layout | None, dict[str, np.ndarray]]:
    """The sample as ONNX inputs: columns (a DataFrame, dict, texts) or one float32 matrix."""
    if sample is not None and is_columnar(sample):
        return layout_of(sample, model)
    x = _features(sample)
    expected = getattr(model, "n_features_in_", None)
    if expected is not None and int(expected) != x.shape[1]:
        raise ConversionError(
            f"the sample has {x.shape[1]} features, the {type(model).__name__} model was "
            f"fitted on {expected}"
        )
    return None, {INPUT: x}


def _initial_types(layout: Layout | None, arrays: Mapping[str, np.ndarray]) -> list[Any]:
    from skl2onnx.common.data_types import FloatTensorType

    if layout is None:
        return [(INPUT, FloatTensorType([None, arrays[INPUT].shape[1]]))]
    return layout.initial_types()


def _refuse_python_steps(model: object) -> None:
    """A FunctionTransformer runs arbitrary Python, which has no ONNX form."""
    from sklearn.preprocessing import FunctionTransformer

    for path, est in walk(model):
        if isinstance(est, FunctionTransformer) and est.func is not None:  # None: identity
            func = getattr(est.func, "__qualname__", None) or repr(est.func)
            raise ConversionError(
                f"the step {path!r} is a FunctionTransformer calling {func}: arbitrary Python "
                "code cannot be converted to ONNX",
                hint="replace it with a built-in transformer that does the same (e.g. "
                "SimpleImputer, StandardScaler, OneHotEncoder), or export the model to ONNX "
                "yourself and register the file with --reference or --expect",
            )


def _convert(model: object, initial_types: list[Any], opset: int) -> tuple[onnx.ModelProto, str]:
    from sklearn.pipeline import Pipeline

    register_boosters(model)  # XGBoost / LightGBM steps convert through onnxmltools
    final = model
    while isinstance(final, Pipeline):
        final = final.steps[-1][1]
    options = {**vectorizer_options(model), **scaler_options(model), **(_options(final) or {})}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            proto = _skl2onnx(model, initial_types, {"": opset, "ai.onnx.ml": ML_OPSET}, options)
        except Exception as exc:  # skl2onnx raises RuntimeError, NameError, KeyError, ...
            step = _step_in(model, exc)
            raise ConversionError(
                f"skl2onnx could not convert {type(model).__name__}"
                + (f" (at the step {step})" if step else "")
                + f": {type(exc).__name__}: {first_line(exc)}",
                hint="see skl2onnx.supported_converters() for the estimators it knows",
            ) from exc
    notes = " | ".join(sorted({first_line(w.message) for w in caught}))[:2000]
    proto = _tidy(proto)
    check_tokenizers(proto)
    return proto, notes


def _skl2onnx(model: object, initial_types: list[Any], opsets: dict[str, int],
              options: dict[int, dict[str, Any]]) -> onnx.ModelProto:
    """``convert_sklearn``; an estimator that reads one matrix but is given numeric columns is
    converted on their concatenation, and the columns are put in front of it."""
    from skl2onnx import convert_sklearn

    def run(types: list[Any]) -> onnx.ModelProto:
        converted: onnx.ModelProto = convert_sklearn(
            model, initial_types=types, target_opset=opsets, options=options or None,
            name=type(model).__name__,  # skl2onnx's default is a random uuid
        )
        return converted

    try:
        return run(initial_types)
    except Exception as exc:
        one_input = type(exc).__name__ == "InvalidInputLengthException"
        joined = joined_input(initial_types) if one_input else None
        if joined is None:
            raise
    return join_columns(run([joined]), initial_types)


def _step_in(model: object, exc: BaseException) -> str | None:
    """The step skl2onnx failed on, as ``'path' (Class)``: the estimator its converter was
    working on (found in the traceback), else one whose class the message names."""
    steps = list(walk(model))
    found = None
    tb = exc.__traceback__
    while tb is not None:  # the innermost converter's operator is the step
        raw = getattr(tb.tb_frame.f_locals.get("operator"), "raw_operator", None)
        tb = tb.tb_next
        found = next((f"{path!r} ({type(est).__name__})" for path, est in steps
                      if raw is est and est is not model), found)
    if found is not None:
        return found
    message = first_line(exc)
    for path, est in steps[1:]:
        if any(cls.__name__ in message for cls in type(est).__mro__[:-1]):
            return f"{path!r} ({type(est).__name__})"
    return None


def _options(final: object) -> dict[int, dict[str, Any]] | None:
    """No ZipMap on the final classifier, so probabilities come out as a plain tensor.

    A classifier without the zipmap option still gets an (empty) entry: skl2onnx's Pipeline
    parser otherwise adds ``zipmap`` to it and then rejects its own option.
    """
    from skl2onnx import get_model_alias
    from skl2onnx.common._registration import get_converter
    from sklearn.base import is_classifier

    if not is_classifier(final):
        return None
    try:
        allowed = get_converter(get_model_alias(type(final))).get_allowed_options() or {}
    except Exception:  # no converter registered: conversion will say so
        allowed = {"zipmap": True}
    return {id(final): {"zipmap": False} if "zipmap" in allowed else {}}


def _tidy(proto: onnx.ModelProto) -> onnx.ModelProto:
    """One opset entry per domain; dim 0 of inputs and outputs named ``"batch"``."""
    versions: dict[str, int] = {}
    for imp in proto.opset_import:
        versions[imp.domain] = max(versions.get(imp.domain, 0), int(imp.version))
    del proto.opset_import[:]
    proto.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in versions.items())
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value") and not dims[0].dim_param:
            dims[0].dim_param = BATCH
    return proto


def _methods(model: object, outputs: tuple[TensorSpec, ...]) -> list[str]:
    """The estimator method that gives each ONNX output."""
    methods: list[str] = []
    for spec in outputs:
        if spec.name == "label":
            method = "predict"
        elif spec.name == "probabilities":
            method = "predict_proba" if hasattr(model, "predict_proba") else "decision_function"
        elif spec.name == "variable" or len(outputs) == 1:
            method = "predict" if hasattr(model, "predict") else "transform"
        else:
            raise ConversionError(
                f"no scikit-learn method gives the ONNX output {spec.name!r}",
                hint="lockgate maps label, probabilities and variable outputs",
            )
        if not hasattr(model, method):
            raise ConversionError(f"{type(model).__name__} has no {method}() for {spec.name!r}")
        methods.append(method)
    return methods


def _matrix(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.asarray(inputs[INPUT], dtype=np.float32)


class _Reference:
    """Calls the estimator's methods on what ``prepare`` makes of the ONNX inputs (the float32
    features, or a DataFrame rebuilt from the columns), shaped like the ONNX outputs."""

    def __init__(
        self, model: object, methods: list[str], outputs: tuple[TensorSpec, ...],
        prepare: Callable[[Mapping[str, np.ndarray]], object],
    ) -> None:
        self._model = model
        self._methods = methods
        self._shapes = [o.shape for o in outputs]
        self._prepare = prepare

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        x = self._prepare(inputs)
        results: list[np.ndarray] = []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_FEATURE_NAMES_WARNING)
            warnings.filterwarnings("ignore", message=_FITTED_WITHOUT_NAMES)
            for method, shape in zip(self._methods, self._shapes, strict=True):
                out = np.asarray(getattr(self._model, method)(x))
                if out.ndim == 1 and len(shape) == 2:
                    if method == "decision_function" and shape[1] == 2:
                        out = np.stack([out, -out], axis=1)  # skl2onnx's binary SVC layout
                    else:
                        out = out.reshape(-1, 1)
                results.append(out)
        return results


def _features(sample: object) -> np.ndarray:
    if sample is None:
        raise ConversionError(
            "a scikit-learn model needs a sample", hint="pass a few rows of features"
        )
    try:
        x = np.asarray(sample, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"the sample is not numeric: {exc}") from exc
    if x.ndim != 2 or x.shape[0] == 0:
        raise ConversionError(
            f"the sample has shape {list(x.shape)}, not a 2-D array of rows by features",
            hint="pass a few rows of the training features",
        )
    return x
