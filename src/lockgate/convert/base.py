"""The Converter protocol: two methods, one per framework module."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import onnx

from lockgate.progress import Progress

__all__ = ["Converted", "Converter", "Dynamic", "ReferenceRunner"]

ReferenceRunner = Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]
"""Runs the source model on inputs keyed by ONNX input name; outputs come in ONNX output order."""

Dynamic = Mapping[str, Mapping[int, str]]
"""Dimensions that stay free in the ONNX graph, by input name: ``{"input_ids": {0: "batch",
1: "sequence"}}``. Axes with the same name are the same size in every input."""


@dataclass(frozen=True)
class Converted:
    """What a converter hands back.

    ``sample`` is the caller's sample input keyed by the ONNX model's input names, as numpy arrays.
    ``reference`` runs the source framework for parity; for a model that arrived as ONNX it
    runs the code given as its source (``source=``), and is None without one (nothing to
    compare against).
    """

    model: onnx.ModelProto
    framework: str
    framework_version: str
    converter: str
    sample: Mapping[str, np.ndarray]
    reference: ReferenceRunner | None
    details: Mapping[str, str] = field(default_factory=dict)
    categories: Mapping[str, tuple[object, ...]] = field(default_factory=dict)
    """Inputs whose elements take only these values (the categories a fitted encoder knows),
    by input name: parity draws their random inputs from them."""


class Converter(Protocol):
    """Turns one framework's models into ONNX."""

    framework: str

    def accepts(self, model: object) -> bool:
        """True when this converter handles ``model``; must not import heavy frameworks unless
        ``model`` already comes from them."""
        ...

    def convert(
        self, model: object, sample: object, *, opset: int | None, progress: Progress,
        dynamic: Dynamic | None = None,
    ) -> Converted:
        """Export ``model`` to ONNX, traced or checked with ``sample``; ``dynamic`` names the
        dimensions that stay free (None: the converter's default, dim 0 as ``"batch"``)."""
        ...
