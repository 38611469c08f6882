"""CatBoost → ONNX through CatBoost's own exporter (``save_model(format="onnx")``).

The graph is made to look like the scikit-learn converter's: one float32 input ``"input"`` of
shape ``["batch", n_features]``; a classifier gives ``"label"`` and ``"probabilities"`` (the
exporter's ZipMap removed: a plain ``["batch", n_classes]`` tensor), a regressor gives
``"variable"`` of shape ``["batch", 1]``. CatBoost compares float32 features with float32 borders,
as ONNX does, so the trees agree exactly. A Poisson or Tweedie regressor's value is the exponent
of the trees' sum, as its ``predict`` gives. Models with categorical or text features, several
targets or one-vs-all probabilities are refused: CatBoost's ONNX export has no form for them.
catboost is imported only for its own models.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from lockgate.convert._common import BATCH, dist_version, first_line, from_package
from lockgate.convert.base import Converted, Dynamic
from lockgate.convert.sklearn import default_opset
from lockgate.errors import ConversionError
from lockgate.progress import Progress
from lockgate.runtime.onnxmeta import signature_of
from lockgate.types import TensorSpec

__all__ = ["CatBoostConverter"]

INPUT = "input"
_KINDS = ("CatBoostClassifier", "CatBoostRegressor")
_IR_VERSION = 9
_LOG_LINK = frozenset({"Poisson", "Tweedie"})
"""Losses whose prediction is the exponent of the trees' sum: the export gives the sum."""
_REFUSED_LOSSES = {
    "MultiClassOneVsAll": "its probabilities are one sigmoid per class, the export's a softmax",
    "MultiRMSE": "it predicts several targets, lockgate converts one",
}


class CatBoostConverter:
    """Converts a fitted CatBoostClassifier or CatBoostRegressor; the sample is a 2-D array of
    numeric features."""

    framework = "catboost"

    def accepts(self, model: object) -> bool:
        return from_package(model, "catboost") and type(model).__name__ in _KINDS

    def convert(
        self, model: object, sample: object, *, opset: int | None, progress: Progress,
        dynamic: Dynamic | None = None,
    ) -> Converted:
        import catboost

        cb: Any = model
        name = type(model).__name__
        if not cb.is_fitted():
            raise ConversionError(f"the {name} model is not fitted", hint="fit it before "
                                  "registering")
        special = [*cb.get_cat_feature_indices(), *cb.get_text_feature_indices()]
        if special:
            raise ConversionError(
                f"the {name} model has categorical or text features (columns {special}): "
                "CatBoost's ONNX export has no form for them",
                hint="encode those columns as numbers before training (or register a "
                "scikit-learn pipeline with an encoder and a booster)")
        x = _features(sample, int(cb.n_features_in_), name)
        loss = str(cb.get_all_params().get("loss_function", "")).partition(":")[0]
        if loss in _REFUSED_LOSSES:
            raise ConversionError(
                f"CatBoost's ONNX export does not reproduce the {name} model's {loss} loss: "
                f"{_REFUSED_LOSSES[loss]}",
                hint="train with a loss the export reproduces (RMSE, MAE, Quantile, Huber, "
                "Poisson, Tweedie; Logloss, CrossEntropy, MultiClass)")
        opset = opset or default_opset()
        progress.start("export")
        try:
            proto = _tidy(_export(cb, name), opset)
            if loss in _LOG_LINK:
                _exponent(proto)
        finally:
            progress.finish("export")
        signature = signature_of(proto)
        classifier = name == "CatBoostClassifier"
        version = catboost.__version__
        return Converted(
            model=proto,
            framework=self.framework,
            framework_version=version,
            converter=f"catboost=={version}",
            sample={INPUT: x},
            reference=_Reference(cb, classifier, signature.outputs),
            details={"exporter": "catboost save_model(format='onnx')", "opset": str(opset),
                     "catboost_version": version, "onnx_version": dist_version("onnx")},
        )


def _export(model: Any, name: str) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory(prefix="lockgate-catboost-") as folder:
        path = Path(folder) / "model.onnx"
        try:
            model.save_model(str(path), format="onnx")
            return onnx.load(str(path))
        except Exception as exc:  # CatBoostError and whatever the file read raises
            raise ConversionError(
                f"CatBoost could not export the {name} model to ONNX: "
                f"{type(exc).__name__}: {first_line(exc)}",
                hint="CatBoost exports numeric features with the standard losses; see "
                "catboost's ONNX export documentation for what it supports",
            ) from exc


def _tidy(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """No ZipMap; input ``"input"``, outputs ``"label"``/``"probabilities"`` or
    ``"variable"``; dim 0 ``"batch"``; a default-domain opset and a current IR version."""
    graph = proto.graph
    if len(graph.input) != 1:
        raise ConversionError(f"CatBoost's ONNX export has {len(graph.input)} inputs, not one")
    old_input = graph.input[0].name
    zipmaps = [n for n in graph.node if n.op_type == "ZipMap"]
    for node in zipmaps:  # its input, the probability tensor, becomes the output
        out = next(o for o in graph.output if o.name == node.output[0])
        n_classes = _classes(graph)
        out.CopyFrom(onnx.helper.make_tensor_value_info(
            node.input[0], onnx.TensorProto.FLOAT, [BATCH, n_classes]))
        graph.node.remove(node)
    renames = {old_input: INPUT}
    for out in graph.output:
        if out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and not zipmaps:
            out.type.tensor_type.shape.CopyFrom(
                onnx.helper.make_tensor_value_info("v", onnx.TensorProto.FLOAT,
                                                   [BATCH, 1]).type.tensor_type.shape)
            renames[out.name] = "variable"
        elif zipmaps and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            renames[out.name] = "probabilities"
        else:
            renames[out.name] = "label"
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in [*graph.input, *graph.output]:
        value.name = renames.get(value.name, value.name)
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH
    versions = {imp.domain: int(imp.version) for imp in proto.opset_import}
    versions[""] = opset
    del proto.opset_import[:]
    proto.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in versions.items())
    proto.ir_version = _IR_VERSION
    if not graph.name:
        graph.name = "CatBoost"
    return proto


def _exponent(proto: onnx.ModelProto) -> None:
    """``variable`` becomes the exponent of what the trees give (CatBoost's ``predict`` for a
    log-link loss)."""
    graph = proto.graph
    for node in graph.node:
        node.output[:] = ["raw_variable" if n == "variable" else n for n in node.output]
    graph.node.append(onnx.helper.make_node("Exp", ["raw_variable"], ["variable"],
                                            name="exponent"))


def _classes(graph: onnx.GraphProto) -> int:
    for node in graph.node:
        if node.op_type == "TreeEnsembleClassifier":
            for attr in node.attribute:
                if attr.name in ("classlabels_int64s", "classlabels_strings"):
                    return len(attr.ints) or len(attr.strings)
    raise ConversionError("CatBoost's ONNX export has a ZipMap but no TreeEnsembleClassifier")


class _Reference:
    """predict / predict_proba on the float32 features, shaped like the ONNX outputs."""

    def __init__(self, model: Any, classifier: bool, outputs: tuple[TensorSpec, ...]) -> None:
        self._model = model
        self._methods = ["predict", "predict_proba"] if classifier else ["predict"]
        self._shapes = [o.shape for o in outputs]
        if len(self._methods) != len(outputs):
            raise ConversionError(
                f"CatBoost's ONNX export gives {len(outputs)} outputs, lockgate expects "
                f"{len(self._methods)} for a {'classifier' if classifier else 'regressor'}")

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[INPUT], dtype=np.float32)
        results: list[np.ndarray] = []
        for method, shape in zip(self._methods, self._shapes, strict=True):
            out = np.asarray(getattr(self._model, method)(x))
            if len(shape) == 1:
                out = out.reshape(-1)
            elif out.ndim == 1:
                out = out.reshape(-1, 1)
            results.append(out)
        return results


def _features(sample: object, n_features: int, name: str) -> np.ndarray:
    if sample is None:
        raise ConversionError(f"a {name} model needs a sample", hint="pass a few rows of "
                              "features")
    try:
        x = np.asarray(sample, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"the sample is not numeric: {exc}",
                              hint="pass a 2-D array of numeric features") from exc
    if x.ndim != 2 or x.shape[0] == 0:
        raise ConversionError(
            f"the sample has shape {list(x.shape)}, not a 2-D array of rows by features",
            hint="pass a few rows of the training features")
    if x.shape[1] != n_features:
        raise ConversionError(
            f"the sample has {x.shape[1]} features, the {name} model was fitted on "
            f"{n_features}")
    return x
