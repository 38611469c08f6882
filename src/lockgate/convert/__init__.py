"""Converters: one module per framework behind the two-method :class:`Converter` protocol.

:func:`converter_for` picks the first converter that accepts a model, in this order: ONNX file or
ModelProto, torch ``nn.Module``, scikit-learn estimator. Asking does not import torch or sklearn
unless the model comes from them.
"""

from __future__ import annotations

from lockgate.convert.base import Converted, Converter, ReferenceRunner
from lockgate.convert.onnxfile import OnnxFileConverter
from lockgate.convert.sklearn import SklearnConverter
from lockgate.convert.torch import TorchConverter
from lockgate.errors import UnsupportedModelError

__all__ = [
    "Converted",
    "Converter",
    "OnnxFileConverter",
    "ReferenceRunner",
    "SklearnConverter",
    "TorchConverter",
    "converter_for",
    "converters",
]

_SUPPORTED = (
    "a path to a .onnx file or an onnx.ModelProto; a torch.nn.Module (extra 'torch'); "
    "a fitted scikit-learn estimator or Pipeline (extra 'sklearn')"
)


def converters() -> tuple[Converter, ...]:
    """Every converter, in the order :func:`converter_for` asks them."""
    return (OnnxFileConverter(), TorchConverter(), SklearnConverter())


def converter_for(model: object) -> Converter:
    """The first converter that accepts ``model``; :class:`UnsupportedModelError` if none."""
    for converter in converters():
        if converter.accepts(model):
            return converter
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    raise UnsupportedModelError(
        f"no converter accepts a {kind}", hint=f"lockgate converts {_SUPPORTED}"
    )
