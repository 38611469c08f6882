"""The model written in pieces parses to the very model, and its outline keeps all but weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lockgate.runtime.predictor import Predictor
from lockgate.seal.folder import outline, weights_bytes, write_model


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((200, 200)).astype(np.float32), f"w{i}")
               for i in range(3)]
    nodes = [helper.make_node("MatMul", [i, f"w{n}"], [o])
             for n, (i, o) in enumerate([("x", "h0"), ("h0", "h1"), ("h1", "y")])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 200])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 200])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             producer_name="test", producer_version="1")


def test_a_model_written_in_pieces_parses_to_the_same_model(tmp_path: Path) -> None:
    model = _mlp()
    path = tmp_path / "model.onnx"
    write_model(model, path)
    assert onnx.load(str(path)) == model
    onnx.checker.check_model(str(path), full_check=True)
    x = np.ones((2, 200), np.float32)
    from_file = Predictor(path).run({"x": x})["y"]
    from_bytes = Predictor(model.SerializeToString()).run({"x": x})["y"]
    np.testing.assert_array_equal(from_file, from_bytes)


def test_the_outline_keeps_everything_but_the_weights_values() -> None:
    model = _mlp()
    out = outline(model)
    assert weights_bytes(model) == 3 * 200 * 200 * 4
    assert len(out.SerializeToString()) < 1000 < len(model.SerializeToString())
    assert [t.name for t in out.graph.initializer] == ["w0", "w1", "w2"]
    assert [list(t.dims) for t in out.graph.initializer] == [[200, 200]] * 3
    assert not any(t.raw_data for t in out.graph.initializer)
    assert out.graph.node == model.graph.node
    assert (out.producer_name, out.producer_version, out.ir_version, out.opset_import) == (
        model.producer_name, model.producer_version, model.ir_version, model.opset_import)
    assert not out.HasField("doc_string")  # absent fields stay absent
