"""Converters: one module per framework behind the two-method :class:`Converter` protocol.

:func:`converter_for` picks the first converter that accepts a model, in this order: ONNX file or
ModelProto, Keras model / ``tf.Module`` / SavedModel directory, torch ``nn.Module``, CatBoost
model, scikit-learn estimator (XGBoost and LightGBM's scikit-learn models among them), JAX
function or flax module. Asking does not import a framework unless the model
comes from it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from lockgate.convert.base import Converted, Converter, Dynamic, ReferenceRunner
from lockgate.convert.catboost import CatBoostConverter
from lockgate.convert.jax import JaxConverter, JaxFunction
from lockgate.convert.keras import KerasConverter
from lockgate.convert.onnxfile import OnnxFileConverter, not_onnx
from lockgate.convert.sklearn import SklearnConverter
from lockgate.convert.torch import TorchConverter
from lockgate.errors import NotFoundError, UnsupportedModelError

__all__ = [
    "CatBoostConverter",
    "Converted",
    "Converter",
    "Dynamic",
    "JaxConverter",
    "JaxFunction",
    "KerasConverter",
    "OnnxFileConverter",
    "ReferenceRunner",
    "SklearnConverter",
    "TorchConverter",
    "converter_for",
    "converters",
    "missing_extra",
]

_SUPPORTED = (
    "a path to a .onnx file or an onnx.ModelProto; a torch.nn.Module (extra 'torch'); "
    "a fitted scikit-learn estimator or Pipeline (extra 'sklearn'); a Keras 3 model, tf.Module "
    "or SavedModel directory (extra 'tensorflow'); a JaxFunction, jax.jit function, flax nnx "
    "module or bound linen module (extra 'jax'); an XGBoost or LightGBM scikit-learn model "
    "(XGBClassifier, LGBMRegressor, ...), alone or as a Pipeline step, or an xgboost.Booster "
    "(extras 'xgboost', 'lightgbm'); a CatBoostClassifier or CatBoostRegressor (extra "
    "'catboost')"
)


def converters() -> tuple[Converter, ...]:
    """Every converter, in the order :func:`converter_for` asks them."""
    # Keras before torch: on the torch backend a Keras model is also a torch.nn.Module
    return (OnnxFileConverter(), KerasConverter(), TorchConverter(), CatBoostConverter(),
            SklearnConverter(), JaxConverter())


_EXTRAS: tuple[tuple[tuple[str, ...], str, tuple[str, ...]], ...] = (
    (("xgboost",), "xgboost", ("xgboost", "onnxmltools", "skl2onnx")),
    (("lightgbm",), "lightgbm", ("lightgbm", "onnxmltools", "skl2onnx")),
    (("catboost",), "catboost", ("catboost",)),
    (("torch",), "torch", ("torch", "onnxscript")),
    (("keras", "tensorflow", "tf_keras"), "tensorflow", ("tensorflow", "tf2onnx")),
    (("jax", "jaxlib", "flax"), "jax", ("jax", "jax2onnx")),
    (("sklearn",), "sklearn", ("sklearn", "skl2onnx")),
)
"""Framework packages (a model's classes come from one of them), the lockgate extra that
converts their models, and the modules that extra installs."""


def converter_for(model: object) -> Converter:
    """The first converter that accepts ``model``.

    Otherwise :class:`UnsupportedModelError`, naming the extra to install when the model comes
    from a framework whose converter is missing, or saying what a file is when a path that is
    not ONNX was given (:class:`NotFoundError` when nothing is there).
    """
    for converter in converters():
        if converter.accepts(model):
            return converter
    if isinstance(model, str | os.PathLike):
        path = Path(os.fspath(model))
        if not path.exists():
            raise NotFoundError(
                f"no file at {path}",
                hint="give an .onnx file, a SavedModel folder or --from MODULE:FUNCTION")
        raise not_onnx(path)
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    missing = missing_extra(model)
    if missing is not None:
        extra, modules = missing
        raise UnsupportedModelError(
            f"no converter accepts a {kind}: lockgate's {extra} support is not installed "
            f"(missing {', '.join(modules)})",
            hint=f"pip install 'lockgate[{extra}]'")
    raise UnsupportedModelError(
        f"no converter accepts a {kind}", hint=f"lockgate converts {_SUPPORTED}"
    )


def missing_extra(model: object, installed: Callable[[str], bool] | None = None
                  ) -> tuple[str, list[str]] | None:
    """The lockgate extra that converts ``model``'s framework and the modules of it that are
    not ``installed`` (by default: not importable here); None when ``model`` comes from no
    framework lockgate knows, or when its extra is installed."""
    def importable(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    check = installed or importable
    for cls in type(model).__mro__:
        top = (getattr(cls, "__module__", None) or "").partition(".")[0]
        for packages, extra, modules in _EXTRAS:
            if top in packages:
                absent = [m for m in modules if not check(m)]
                return (extra, absent) if absent else None
    return None
