"""Converters: one module per framework behind the two-method :class:`Converter` protocol.

:func:`converter_for` picks the first converter that accepts a model, in this order: ONNX file or
ModelProto, Keras model / ``tf.Module`` / SavedModel directory, torch ``nn.Module``, scikit-learn
estimator, JAX function or flax module. Asking does not import a framework unless the model
comes from it.
"""

from __future__ import annotations

from lockgate.convert.base import Converted, Converter, Dynamic, ReferenceRunner
from lockgate.convert.jax import JaxConverter, JaxFunction
from lockgate.convert.keras import KerasConverter
from lockgate.convert.onnxfile import OnnxFileConverter
from lockgate.convert.sklearn import SklearnConverter
from lockgate.convert.torch import TorchConverter
from lockgate.errors import UnsupportedModelError

__all__ = [
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
]

_SUPPORTED = (
    "a path to a .onnx file or an onnx.ModelProto; a torch.nn.Module (extra 'torch'); "
    "a fitted scikit-learn estimator or Pipeline (extra 'sklearn'); a Keras 3 model, tf.Module "
    "or SavedModel directory (extra 'tensorflow'); a JaxFunction, jax.jit function, flax nnx "
    "module or bound linen module (extra 'jax')"
)


def converters() -> tuple[Converter, ...]:
    """Every converter, in the order :func:`converter_for` asks them."""
    # Keras before torch: on the torch backend a Keras model is also a torch.nn.Module
    return (OnnxFileConverter(), KerasConverter(), TorchConverter(), SklearnConverter(),
            JaxConverter())


def converter_for(model: object) -> Converter:
    """The first converter that accepts ``model``; :class:`UnsupportedModelError` if none."""
    for converter in converters():
        if converter.accepts(model):
            return converter
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    raise UnsupportedModelError(
        f"no converter accepts a {kind}", hint=f"lockgate converts {_SUPPORTED}"
    )
