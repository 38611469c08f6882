"""The stock tritonclient.http client against a real `lockgate serve`: JSON and binary tensors,
BYTES and FP16, unchanged client code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lockgate.api.facade import Lockgate
from onnx_models import linear_onnx

pytestmark = pytest.mark.slow


def _typed_model() -> onnx.ModelProto:
    """fp16 in -> fp16 doubled out, and a string passed through."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["h", "h"], ["h2"]),
         helper.make_node("Identity", ["s"], ["s_out"])], "typed",
        [helper.make_tensor_value_info("h", TensorProto.FLOAT16, ["batch", 2]),
         helper.make_tensor_value_info("s", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("h2", TensorProto.FLOAT16, ["batch", 2]),
         helper.make_tensor_value_info("s_out", TensorProto.STRING, ["batch"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_tritonclient_json_and_binary(home: Path, tmp_path: Path) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    from test_deployments import _server

    onnx.save(linear_onnx(seed=2), tmp_path / "lin.onnx")
    onnx.save(_typed_model(), tmp_path / "typed.onnx")
    with Lockgate.open(home) as lg:
        lg.register(str(tmp_path / "lin.onnx"), name="lin")
        lg.register(str(tmp_path / "typed.onnx"), name="typed")
        expected = lg.load("lin@1")
    with _server(home, "lin@1", "typed@1") as (host, port):
        client = httpclient.InferenceServerClient(url=f"{host}:{port}")
        try:
            assert client.is_server_live()
            assert client.is_model_ready("lin")
            assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
            x = np.arange(8, dtype=np.float32).reshape(2, 4)
            want = next(iter(expected({"input": x}).values()))
            for binary in (False, True):
                inp = httpclient.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=binary)
                out = httpclient.InferRequestedOutput(expected.output_names[0],
                                                      binary_data=binary)
                result = client.infer("lin", [inp], outputs=[out])
                np.testing.assert_allclose(result.as_numpy(expected.output_names[0]), want,
                                           rtol=1e-6)
            h = np.array([[1.5, -2.0], [0.25, 4.0]], np.float16)
            s = np.array([b"hello", "w\u00f6rld".encode()], dtype=np.object_)
            hin = httpclient.InferInput("h", [2, 2], "FP16")
            hin.set_data_from_numpy(h, binary_data=True)
            sin = httpclient.InferInput("s", [2], "BYTES")
            sin.set_data_from_numpy(s, binary_data=True)
            result = client.infer("typed", [hin, sin], outputs=[
                httpclient.InferRequestedOutput("h2", binary_data=True),
                httpclient.InferRequestedOutput("s_out", binary_data=True)])
            np.testing.assert_array_equal(result.as_numpy("h2"), h * 2)
            assert [bytes(v) for v in result.as_numpy("s_out")] == [b"hello",
                                                                    "w\u00f6rld".encode()]
        finally:
            client.close()
