"""Small helpers shared by the converter modules."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Sequence

import numpy as np
import onnx

from lockgate.errors import ConversionError

__all__ = ["BATCH", "dist_version", "first_line", "from_package", "io_names", "rename_batch",
           "rename_io", "sample_arrays"]

BATCH = "batch"
"""The name converters give the symbolic batch dim (dim 0) of inputs and outputs."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def from_package(model: object, package: str) -> bool:
    """True when a class in ``type(model).__mro__`` is defined in ``package`` or below it.

    Lets ``accepts`` decide without importing the framework.
    """
    for cls in type(model).__mro__:
        module = getattr(cls, "__module__", None) or ""
        if module == package or module.startswith(package + "."):
            return True
    return False


def first_line(obj: object) -> str:
    """The first line of ``str(obj)`` without terminal colour codes."""
    text = strip_ansi(str(obj)).strip()
    return text.splitlines()[0] if text else type(obj).__name__


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def dist_version(dist: str) -> str:
    """An installed distribution's version, or ``"unknown"``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def rename_batch(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Name the symbolic dim 0 of inputs ``"batch"`` everywhere it appears."""
    graph = proto.graph
    names = {
        v.type.tensor_type.shape.dim[0].dim_param
        for v in graph.input
        if v.type.tensor_type.shape.dim and v.type.tensor_type.shape.dim[0].dim_param
    }
    names.discard(BATCH)
    if not names:
        return proto
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = BATCH
    return proto


def rename_io(proto: onnx.ModelProto, inputs: Sequence[str] | None,
              outputs: Sequence[str] | None) -> onnx.ModelProto:
    """Give the graph's inputs and outputs these names (in order), everywhere they are used."""
    graph = proto.graph
    mapping: dict[str, str] = {}
    initializers = {t.name for t in graph.initializer}
    real_inputs = [v for v in graph.input if v.name not in initializers]
    for values, names in ((real_inputs, inputs), (list(graph.output), outputs)):
        if names is None:
            continue
        for value, name in zip(values, names, strict=True):
            if value.name != name:
                mapping[value.name] = name
    if not mapping:
        return proto

    def fix(graph_: onnx.GraphProto) -> None:
        for node in graph_.node:
            node.input[:] = [mapping.get(n, n) for n in node.input]
            node.output[:] = [mapping.get(n, n) for n in node.output]
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    fix(attr.g)
                for sub in attr.graphs:
                    fix(sub)
        for value in [*graph_.input, *graph_.output, *graph_.value_info]:
            value.name = mapping.get(value.name, value.name)

    fix(graph)
    return proto


def io_names(prefix: str, n: int) -> list[str]:
    """``prefix`` for one tensor, ``prefix_0``, ``prefix_1`` … for several."""
    return [prefix] if n == 1 else [f"{prefix}_{i}" for i in range(n)]


def sample_arrays(sample: object, kind: str) -> list[np.ndarray]:
    """The sample input as numpy arrays (an array, a framework tensor, or a tuple/list of
    them), each with a batch dimension."""
    if sample is None:
        raise ConversionError(f"a {kind} model needs a sample input",
                              hint="pass a numpy array (or a tuple of arrays) with a batch dim")
    items = list(sample) if isinstance(sample, (tuple, list)) else [sample]
    out = []
    for item in items:
        arr = np.asarray(item.numpy() if hasattr(item, "numpy") else item)
        if arr.ndim == 0:
            raise ConversionError("sample inputs need a batch dimension (dim 0)")
        out.append(arr)
    return out
