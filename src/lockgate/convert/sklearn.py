"""scikit-learn → ONNX through skl2onnx.

One float32 input named ``"input"`` of shape ``["batch", n_features]``. Classifiers give
``"label"`` and ``"probabilities"`` (a plain tensor, no ZipMap); regressors and transformers give
``"variable"``. sklearn and skl2onnx are imported only for objects that come from sklearn.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from lockgate.convert._common import BATCH, dist_version, first_line, from_package
from lockgate.convert.base import Converted, Dynamic
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
            return False
        from sklearn.base import BaseEstimator

        return isinstance(model, BaseEstimator)

    def convert(
        self, model: object, sample: object, *, opset: int | None, progress: Progress,
        dynamic: Dynamic | None = None,
    ) -> Converted:
        import sklearn
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        name = type(model).__name__
        x = _features(sample)
        try:
            check_is_fitted(model)
        except NotFittedError as exc:
            raise ConversionError(
                f"the {name} model is not fitted", hint="fit it before registering"
            ) from exc
        except TypeError as exc:
            raise ConversionError(f"{name} is not a scikit-learn estimator") from exc
        expected = getattr(model, "n_features_in_", None)
        if expected is not None and int(expected) != x.shape[1]:
            raise ConversionError(
                f"the sample has {x.shape[1]} features, the {name} model was fitted on "
                f"{expected}"
            )
        opset = opset or default_opset()
        progress.start("export")
        try:
            proto, notes = _convert(model, x.shape[1], opset)
        finally:
            progress.finish("export")
        signature = signature_of(proto)
        methods = _methods(model, signature.outputs)
        skl2onnx_version = dist_version("skl2onnx")
        details = {"target_opset": str(opset), "opset": str(onnx_opset(proto))}
        if notes:
            details["export_warnings"] = notes
        return Converted(
            model=proto,
            framework=self.framework,
            framework_version=sklearn.__version__,
            converter=f"skl2onnx=={skl2onnx_version} scikit-learn=={sklearn.__version__}",
            sample={INPUT: x},
            reference=_Reference(model, methods, signature.outputs),
            details=details,
        )


def _convert(model: object, n_features: int, opset: int) -> tuple[onnx.ModelProto, str]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.pipeline import Pipeline

    final = model
    while isinstance(final, Pipeline):
        final = final.steps[-1][1]
    options = _options(final)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            proto = convert_sklearn(
                model,
                initial_types=[(INPUT, FloatTensorType([None, n_features]))],
                target_opset={"": opset, "ai.onnx.ml": ML_OPSET},
                options=options,
                name=type(model).__name__,  # skl2onnx's default is a random uuid
            )
        except Exception as exc:  # skl2onnx raises RuntimeError, NameError, KeyError, ...
            raise ConversionError(
                f"skl2onnx could not convert {type(model).__name__}: "
                f"{type(exc).__name__}: {first_line(exc)}",
                hint="see skl2onnx.supported_converters() for the estimators it knows",
            ) from exc
    notes = " | ".join(sorted({first_line(w.message) for w in caught}))[:2000]
    return _tidy(proto), notes


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


class _Reference:
    """Calls the estimator's methods on the float32 features, shaped like the ONNX outputs."""

    def __init__(
        self, model: object, methods: list[str], outputs: tuple[TensorSpec, ...]
    ) -> None:
        self._model = model
        self._methods = methods
        self._shapes = [o.shape for o in outputs]

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[INPUT], dtype=np.float32)
        results: list[np.ndarray] = []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_FEATURE_NAMES_WARNING)
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
