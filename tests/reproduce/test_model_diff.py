"""A rebuild that is not bit-identical names the first thing that differs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from lockgate.reproduce.diff import first_difference
from lockgate.reproduce.recipe import compare_models
from onnx_models import linear_onnx

SAMPLES = {"request": {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                  "data": [0.5, -1.0, 2.0, 0.25]}]}}


def _with_weight(model: onnx.ModelProto, row: int, col: int, delta: float) -> onnx.ModelProto:
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    (w,) = [t for t in changed.graph.initializer if t.name == "W"]
    arr = numpy_helper.to_array(w).copy()
    arr[row, col] += np.float32(delta)
    w.CopyFrom(numpy_helper.from_array(arr, "W"))
    return changed


def test_the_first_differing_initializer_is_named_with_its_element() -> None:
    a = linear_onnx()
    b = _with_weight(a, 2, 1, 0.5)
    first = first_difference(a, b)
    assert first["where"] == "initializer"
    assert first["name"] == "W"
    assert "1 of 12 values differ; first at [2, 1]" in first["detail"]
    assert "max abs difference 0.5" in first["detail"]


def test_header_and_nodes_come_before_initializers() -> None:
    a = linear_onnx()
    b = _with_weight(a, 0, 0, 1.0)
    b.producer_version = "9.9"
    assert first_difference(a, b)["where"] == "model"
    assert first_difference(a, b)["name"] == "producer"
    c = onnx.ModelProto()
    c.CopyFrom(a)
    c.graph.node[1].op_type = "Sub"
    first = first_difference(a, c)
    assert first == {"where": "node", "name": "#1",
                     "detail": "node #1 (Add) op_type: 'Add' != 'Sub'"}
    assert first_difference(a, a)["where"] == "serialization"


def test_compare_models_reports_the_first_difference() -> None:
    a = linear_onnx()
    b = _with_weight(a, 3, 2, 1e-3)
    result = compare_models(a.SerializeToString(), b.SerializeToString(), SAMPLES,
                            atol=1e-6, rtol=0.0)
    assert result["bit_identical"] is False
    assert result["changed_initializers"] == ["W"]
    assert result["first_difference"]["name"] == "W"
    assert "first difference: initializer W: 1 of 12 values differ; first at [3, 2]" \
        in result["message"]


def _with_trace(model: onnx.ModelProto, venv: str) -> onnx.ModelProto:
    """The model with the torch exporter's stack-trace metadata, as exported in ``venv``."""
    traced = onnx.ModelProto()
    traced.CopyFrom(model)
    for node in traced.graph.node:
        entry = node.metadata_props.add()
        entry.key, entry.value = "pkg.torch.onnx.stack_trace", f'File "{venv}/torch/linear.py"'
    return traced


def test_a_rebuild_differing_only_in_node_metadata_says_so() -> None:
    a = _with_trace(linear_onnx(), "/work/.venv/lib")
    b = _with_trace(linear_onnx(), "/home/cache/venvs/0123/lib")
    first = first_difference(a, b)
    assert first["where"] == "node"
    assert first["detail"].startswith("node #0 (MatMul) metadata pkg.torch.onnx.stack_trace: ")
    assert "/home/cache/venvs/0123/lib" in first["detail"]
    result = compare_models(a.SerializeToString(), b.SerializeToString(), SAMPLES,
                            atol=0.0, rtol=0.0)
    assert result["only_node_metadata_differs"] == ["pkg.torch.onnx.stack_trace"]
    assert "only node metadata differs (pkg.torch.onnx.stack_trace)" in result["message"]
    # A weight that differs as well is not "only metadata".
    c = _with_weight(b, 0, 0, 1.0)
    assert compare_models(a.SerializeToString(), c.SerializeToString(), SAMPLES,
                          atol=0.0, rtol=0.0)["only_node_metadata_differs"] == []
