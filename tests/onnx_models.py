"""Small ONNX models built directly with onnx.helper, shared by tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def linear_onnx(n_in: int = 4, n_out: int = 3, seed: int = 0) -> onnx.ModelProto:
    """y = x @ W + b with a dynamic batch dim."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(n_in, n_out)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(size=(n_out,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["xw"]),
         helper.make_node("Add", ["xw", "B"], ["output"])],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", n_out])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def one_row_onnx(n_in: int = 4, n_out: int = 3, seed: int = 0) -> onnx.ModelProto:
    """Declares a dynamic batch like :func:`linear_onnx` but runs only one row: ONNX Runtime
    fails on a batch of two or more (a runtime error, the version's own failure)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(n_in, n_out)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(size=(n_out,)).astype(np.float32), "B")
    one = numpy_helper.from_array(np.array([1, n_in], dtype=np.int64), "one_row")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "one_row"], ["row"]),
         helper.make_node("MatMul", ["row", "W"], ["xw"]),
         helper.make_node("Add", ["xw", "B"], ["output"])],
        "one_row",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", n_out])],
        [w, b, one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
