"""The Open Inference Protocol over gRPC on a real `lockgate serve --grpc-port 0`, with the stock
tritonclient.grpc clients (blocking, streaming and asyncio) and typed requests built with the
generated message classes: round trips per datatype, metadata and readiness, status codes,
tokens, canary and shadow through the same service as REST, and the health service."""

from __future__ import annotations

import asyncio
import http.client
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from serve_process import call

from lockgate.api.facade import Lockgate
from lockgate.config.settings import load_settings
from lockgate.errors import ConfigError
from lockgate.serve.grpc import health_pb2, predict_v2_pb2
from onnx_models import linear_onnx
from servers import http_get
from tamper import flip_byte

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import aio as triton_aio  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.slow

POLICY = '[gates]\n"*" = ["seeds_recorded"]\n'
X = np.arange(8, dtype=np.float32).reshape(2, 4)


def _half_model() -> onnx.ModelProto:
    """FP16 in, doubled out; a string passed through."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["h", "h"], ["h2"]),
         helper.make_node("Identity", ["s"], ["s_out"])], "half",
        [helper.make_tensor_value_info("h", TensorProto.FLOAT16, ["batch", 2]),
         helper.make_tensor_value_info("s", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("h2", TensorProto.FLOAT16, ["batch", 2]),
         helper.make_tensor_value_info("s_out", TensorProto.STRING, ["batch"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _expected(seed: int = 0, x: np.ndarray = X) -> np.ndarray:
    sess = ort.InferenceSession(linear_onnx(seed=seed).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


@contextmanager
def grpc_server(home: Path, *args: str, env: dict[str, str] | None = None,
                ready: bool = True) -> Iterator[tuple[int, int]]:
    """`lockgate serve --port 0 --grpc-port 0 ARGS`; yields (REST port, gRPC port) once both
    listen (and, with ``ready``, once REST and gRPC say every model is ready: behind several
    worker processes, gRPC is one worker's)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockgate", "--home", str(home), "serve", "--port", "0",
         "--poll", "0.1", *args],
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "ORT_DISABLE_TELEMETRY": "1", **(env or {})})
    try:
        assert proc.stderr is not None
        grpc_port = rest_port = None
        while rest_port is None:
            line = proc.stderr.readline()
            assert line, "server exited"
            if m := re.search(r"gRPC \(OIP v2\) on 127\.0\.0\.1:(\d+)", line):
                grpc_port = int(m.group(1))
            if m := re.search(r"on http://127\.0\.0\.1:(\d+)/v2", line):
                rest_port = int(m.group(1))
        assert grpc_port is not None, "no gRPC address before the REST one"
        threading.Thread(target=lambda: [None for _ in proc.stderr],  # type: ignore[union-attr]
                         daemon=True).start()
        deadline = time.monotonic() + 60
        while ready and http_get(rest_port, "/v2/health/ready")[0] != 200:
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.05)
        while ready and not _client(grpc_port).is_server_ready():
            assert time.monotonic() < deadline, "gRPC never said ready"
            time.sleep(0.05)
        yield rest_port, grpc_port
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        if proc.stderr is not None:
            proc.stderr.close()


def _client(port: int) -> Any:
    return tritonclient_grpc.InferenceServerClient(f"127.0.0.1:{port}")


def _input(name: str, arr: np.ndarray, datatype: str) -> Any:
    inp = tritonclient_grpc.InferInput(name, list(arr.shape), datatype)
    inp.set_data_from_numpy(arr)
    return inp


def _status(exc: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(exc.value.status())


# -- the setting ---------------------------------------------------------------------------------

def test_grpc_is_off_unless_a_port_is_set(tmp_path: Path) -> None:
    assert load_settings(tmp_path, env={}).serve_grpc_port == -1
    (tmp_path / "lockgate.toml").write_text("[serve]\ngrpc_port = 8081\n")
    assert load_settings(tmp_path, env={}).serve_grpc_port == 8081
    env = {"LOCKGATE_SERVE_GRPC_PORT": "0"}
    assert load_settings(tmp_path, env=env).serve_grpc_port == 0
    for bad in ("-2", "70000"):
        with pytest.raises(ConfigError, match="out of range"):
            load_settings(tmp_path, env={"LOCKGATE_SERVE_GRPC_PORT": bad})


# -- one server: three models ------------------------------------------------------------------

@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, typed_bytes: bytes) -> Path:
    root = tmp_path_factory.mktemp("grpc")
    home = root / "home"
    onnx.save(linear_onnx(), root / "lin.onnx")
    onnx.save(_half_model(), root / "half.onnx")
    (root / "typed.onnx").write_bytes(typed_bytes)
    with Lockgate.open(home) as lg:
        for name in ("lin", "half", "typed"):
            lg.register(str(root / f"{name}.onnx"), name=name)
    return home


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[tuple[int, int]]:
    with grpc_server(home, "lin@1", "half@1", "typed@1", "--grpc-port", "0") as ports:
        yield ports


def test_raw_round_trips_fp32_fp16_int64_bool_bytes(server: tuple[int, int]) -> None:
    client = _client(server[1])
    result = client.infer("lin", [_input("input", X, "FP32")])
    np.testing.assert_allclose(result.as_numpy("output"), _expected(), rtol=1e-6)
    assert result.get_response().model_version == "1"

    h = np.array([[1.5, -2.0], [0.25, 65504.0]], np.float16)
    s = np.array([b"hello", "w\u00f6rld".encode(), b""], dtype=np.object_)
    result = client.infer("half", [_input("h", h, "FP16"), _input("s", s[:2], "BYTES")])
    assert result.as_numpy("h2").dtype == np.float16
    want = np.array([[3.0, -4.0], [0.5, np.inf]], np.float16)  # 65504 doubled overflows
    np.testing.assert_array_equal(result.as_numpy("h2"), want)
    assert result.as_numpy("s_out").tolist() == [b"hello", "w\u00f6rld".encode()]

    ids = np.array([5, -3, 0, 2**40], np.int64)
    flags = np.array([True, False, True, False])
    pixels = np.array([[0, 255], [1, 2], [3, 4], [5, 6]], np.uint8)
    result = client.infer("typed", [
        _input("ids", ids, "INT64"), _input("flags", flags, "BOOL"),
        _input("text", s[[0, 1, 2, 0]], "BYTES"), _input("pixels", pixels, "UINT8")],
        outputs=[tritonclient_grpc.InferRequestedOutput(n) for n in ("positive", "wide")])
    assert [o.name for o in result.get_response().outputs] == ["positive", "wide"]
    assert result.as_numpy("positive").tolist() == [True, False, False, True]
    np.testing.assert_array_equal(result.as_numpy("wide"), pixels.astype(np.float64))


def _typed_call(port: int, request: predict_v2_pb2.ModelInferRequest,
                metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=predict_v2_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=predict_v2_pb2.ModelInferResponse.FromString)
        return call(request, metadata=metadata, timeout=30)


def test_typed_contents_round_trip_and_come_back_typed(server: tuple[int, int]) -> None:
    req = predict_v2_pb2.ModelInferRequest(model_name="lin", id="r-1")
    t = req.inputs.add(name="input", datatype="FP32", shape=[2, 4])
    t.contents.fp32_contents.extend(X.ravel().tolist())
    resp = _typed_call(server[1], req)
    assert (resp.model_name, resp.model_version, resp.id) == ("lin", "1", "r-1")
    assert not resp.raw_output_contents
    (out,) = resp.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("output", "FP32", [2, 3])
    np.testing.assert_allclose(np.array(out.contents.fp32_contents).reshape(2, 3),
                               _expected(), rtol=1e-6)

    req = predict_v2_pb2.ModelInferRequest(model_name="typed")
    for name, datatype, field, values in (
            ("ids", "INT64", "int64_contents", [7, -7]),
            ("flags", "BOOL", "bool_contents", [False, True]),
            ("text", "BYTES", "bytes_contents", [b"a", "\u00e9".encode()]),
            ("pixels", "UINT8", "uint_contents", [9, 8, 7, 255])):
        tensor = req.inputs.add(name=name, datatype=datatype,
                                shape=[2, 2] if name == "pixels" else [2])
        getattr(tensor.contents, field).extend(values)
    resp = _typed_call(server[1], req)
    got = {o.name: o for o in resp.outputs}
    assert list(got["positive"].contents.bool_contents) == [True, False]
    assert list(got["flipped"].contents.bool_contents) == [True, False]
    assert list(got["echo"].contents.bytes_contents) == [b"a", "\u00e9".encode()]
    assert list(got["wide"].contents.fp64_contents) == [9.0, 8.0, 7.0, 255.0]


def test_typed_contents_without_a_field_or_out_of_range_are_invalid(
        server: tuple[int, int]) -> None:
    req = predict_v2_pb2.ModelInferRequest(model_name="half")
    req.inputs.add(name="h", datatype="FP16", shape=[1, 2])
    req.inputs.add(name="s", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"x")
    with pytest.raises(grpc.RpcError) as err:
        _typed_call(server[1], req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents" in err.value.details()

    req = predict_v2_pb2.ModelInferRequest(model_name="typed")
    tensor = req.inputs.add(name="pixels", datatype="UINT8", shape=[1, 2])
    tensor.contents.uint_contents.extend([1, 256])
    with pytest.raises(grpc.RpcError) as err:
        _typed_call(server[1], req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "256 is out of range for UINT8" in err.value.details()

    req = predict_v2_pb2.ModelInferRequest(model_name="lin")
    req.inputs.add(name="input", datatype="FP32", shape=[1, 4]).contents.int64_contents.extend(
        [1, 2, 3, 4])  # the wrong field for FP32
    with pytest.raises(grpc.RpcError) as err:
        _typed_call(server[1], req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs 4 elements, contents.fp32_contents holds 0" in err.value.details()

    req = predict_v2_pb2.ModelInferRequest(model_name="lin", raw_input_contents=[b"\0" * 12])
    req.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    with pytest.raises(grpc.RpcError) as err:
        _typed_call(server[1], req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs 16 bytes, raw_input_contents[0] holds 12" in err.value.details()


def test_metadata_and_readiness(server: tuple[int, int]) -> None:
    client = _client(server[1])
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("lin")
    assert client.is_model_ready("lin", "1")
    meta = client.get_server_metadata()
    assert meta.name == "lockgate"
    assert meta.version
    model = client.get_model_metadata("typed", as_json=True)
    assert model["name"] == "typed"
    assert model["versions"] == ["1"]
    assert model["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"], t["shape"]) for t in model["inputs"]] == [
        ("ids", "INT64", ["-1"]), ("flags", "BOOL", ["-1"]), ("text", "BYTES", ["-1"]),
        ("pixels", "UINT8", ["-1", "2"])]
    deadline = time.monotonic() + 30
    while (got := http_get(server[0], "/v2/models/typed"))[0] != 200:  # each worker loads
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    rest = got[1]
    assert [t["datatype"] for t in rest["outputs"]] == [t["datatype"] for t in model["outputs"]]
    with pytest.raises(InferenceServerException) as err:
        client.is_model_ready("nope")
    assert _status(err) == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("lin", "7")
    assert _status(err) == "StatusCode.NOT_FOUND"


def test_bad_requests_answer_their_status_and_the_server_goes_on(
        server: tuple[int, int]) -> None:
    client = _client(server[1])
    wrong_shape = np.zeros((2, 3), np.float32)
    cases = [
        ("nope", None, [_input("input", X, "FP32")], "NOT_FOUND", "nope"),
        ("lin", "9", [_input("input", X, "FP32")], "NOT_FOUND", "9"),
        ("lin", None, [_input("input", wrong_shape, "FP32")], "INVALID_ARGUMENT", "input"),
        ("lin", None, [_input("input", X.astype(np.float64), "FP64")], "INVALID_ARGUMENT",
         "input"),
        ("lin", None, [_input("other", X, "FP32")], "INVALID_ARGUMENT", "input"),
    ]
    for model, version, inputs, code, named in cases:
        with pytest.raises(InferenceServerException) as err:
            client.infer(model, inputs, model_version=version or "")
        assert _status(err) == f"StatusCode.{code}", (model, version, err.value)
        assert named in str(err.value.message())
        assert "Traceback" not in str(err.value.message())
    bad = predict_v2_pb2.ModelInferRequest(model_name="lin", raw_input_contents=[b"", b""])
    bad.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    with pytest.raises(grpc.RpcError) as rpc:
        _typed_call(server[1], bad)
    assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "2 tensors for 1 inputs" in rpc.value.details()
    result = client.infer("lin", [_input("input", X, "FP32")])
    np.testing.assert_allclose(result.as_numpy("output"), _expected(), rtol=1e-6)


def test_grpc_requests_count_in_the_same_metrics_as_rest(server: tuple[int, int]) -> None:
    def requests() -> float:
        conn = http.client.HTTPConnection("127.0.0.1", server[0], timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        m = re.search(r'^lockgate_requests_total\{model="half",version="1"\} (\S+)$', text,
                      re.M)
        return float(m.group(1)) if m else 0.0

    before = requests()
    client = _client(server[1])
    h = np.ones((1, 2), np.float16)
    for _ in range(5):
        client.infer("half", [_input("h", h, "FP16"),
                              _input("s", np.array([b"x"], np.object_), "BYTES")])
    assert requests() == before + 5


def test_model_statistics_over_grpc_count_the_requests_as_rest_does(
        server: tuple[int, int]) -> None:
    """Triton's ModelStatistics RPC, read by the stock client, answers what REST's statistics
    extension answers, and counts every request sent."""
    client = _client(server[1])
    before = client.get_inference_statistics("lin", "1", as_json=True)
    x = np.ones((3, 4), np.float32)
    for _ in range(4):
        client.infer("lin", [_input("input", x, "FP32")])
    after = client.get_inference_statistics("lin", "1", as_json=True)
    (was,), (now,) = before["model_stats"], after["model_stats"]
    assert (now["name"], now["version"]) == ("lin", "1")
    assert int(now["inference_count"]) == int(was.get("inference_count", 0)) + 12  # rows
    assert int(now["execution_count"]) == int(was.get("execution_count", 0)) + 4
    success = now["inference_stats"]["success"]
    assert int(success["count"]) == int(was["inference_stats"].get("success", {})
                                        .get("count", 0)) + 4
    assert int(success["ns"]) > 0
    status, rest = call(server[0], "GET", "/v2/models/lin/versions/1/stats")
    assert status == 200
    assert rest["model_stats"][0]["inference_count"] == int(now["inference_count"])
    every = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {(m["name"], m["version"]) for m in every} == {("lin", "1"), ("half", "1"),
                                                          ("typed", "1")}
    with pytest.raises(InferenceServerException) as exc:
        client.get_inference_statistics("nope")
    assert _status(exc) == "StatusCode.NOT_FOUND"


def test_stream_answers_in_order_and_goes_on_after_a_failure(server: tuple[int, int]) -> None:
    client = _client(server[1])
    got: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: got.put((result, error)))
    try:
        for i in range(3):
            x = X + i
            client.async_stream_infer("lin", [_input("input", x, "FP32")], request_id=str(i))
        client.async_stream_infer("lin", [_input("input", np.zeros((1, 3), np.float32),
                                                 "FP32")], request_id="bad")
        client.async_stream_infer("lin", [_input("input", X, "FP32")], request_id="last")
        answers = [got.get(timeout=30) for _ in range(5)]
    finally:
        client.stop_stream()
    for i, (result, error) in enumerate(answers[:3]):
        assert error is None
        assert result.get_response().id == str(i)
        np.testing.assert_allclose(result.as_numpy("output"), _expected(x=X + i), rtol=1e-6)
    assert answers[3][0] is None
    assert "input" in str(answers[3][1])
    assert answers[4][0].get_response().id == "last"


def test_the_asyncio_client(server: tuple[int, int]) -> None:
    async def main() -> tuple[bool, np.ndarray, np.ndarray]:
        client = triton_aio.InferenceServerClient(f"127.0.0.1:{server[1]}")
        try:
            ready = await client.is_model_ready("lin")
            inputs = [_aio_input(X), _aio_input(X * 2)]
            first, second = await asyncio.gather(*(client.infer("lin", [i]) for i in inputs))
            return ready, first.as_numpy("output"), second.as_numpy("output")
        finally:
            await client.close()

    ready, first, second = asyncio.run(main())
    assert ready
    np.testing.assert_allclose(first, _expected(), rtol=1e-6)
    np.testing.assert_allclose(second, _expected(x=X * 2), rtol=1e-6)


def _aio_input(x: np.ndarray) -> Any:
    inp = triton_aio.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def _health(port: int, service: str = "") -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        return check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def _watch_first(port: int, service: str = "") -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        watch = channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        stream = watch(health_pb2.HealthCheckRequest(service=service), timeout=10)
        first = next(stream).status
        stream.cancel()
        return first


def test_health_says_serving_when_ready(server: tuple[int, int]) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert _health(server[1]) == serving
    assert _health(server[1], "inference.GRPCInferenceService") == serving
    assert _watch_first(server[1]) == serving
    assert _watch_first(server[1], "other.Service") == \
        health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
    with pytest.raises(grpc.RpcError) as err:
        _health(server[1], "other.Service")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


# -- a version that failed to load -----------------------------------------------------------

def test_a_version_not_ready_is_unavailable_and_health_not_serving(tmp_path: Path) -> None:
    home = tmp_path / "home"
    onnx.save(linear_onnx(), tmp_path / "lin.onnx")
    onnx.save(linear_onnx(seed=3), tmp_path / "bad.onnx")  # its own blob, damaged below
    with Lockgate.open(home) as lg:
        lg.register(str(tmp_path / "lin.onnx"), name="lin")
        lg.register(str(tmp_path / "bad.onnx"), name="bad")
        flip_byte(lg, lg.get("bad@1").digest)
    with grpc_server(home, "lin@1", "bad@1", "--grpc-port", "0", ready=False) as (_, port):
        client = _client(port)
        deadline = time.monotonic() + 60
        while True:
            with pytest.raises(InferenceServerException) as err:
                client.infer("bad", [_input("input", X, "FP32")])
            assert _status(err) == "StatusCode.UNAVAILABLE"  # loading, then failed
            if "failed to load" in str(err.value.message()) and client.is_model_ready("lin"):
                break
            assert time.monotonic() < deadline, "the damaged version never failed"
            time.sleep(0.05)
        assert not client.is_server_ready()
        assert not client.is_model_ready("bad")
        assert _health(port) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(InferenceServerException) as err:
            client.get_model_metadata("bad")
        assert _status(err) == "StatusCode.UNAVAILABLE"
        result = client.infer("lin", [_input("input", X, "FP32")])
        np.testing.assert_allclose(result.as_numpy("output"), _expected(), rtol=1e-6)


# -- tokens and message limits -----------------------------------------------------------------

@pytest.mark.parametrize("layer", ["lockgate", "uvicorn"])
def test_tokens_and_the_message_limit(tmp_path: Path, layer: str) -> None:
    home = tmp_path / "home"
    onnx.save(linear_onnx(), tmp_path / "lin.onnx")
    with Lockgate.open(home) as lg:
        lg.register(str(tmp_path / "lin.onnx"), name="lin")
        tokens = {}
        for user, roles in {"caller": ["inference"], "reader": ["viewer"]}.items():
            lg.add_user(user, roles)
            tokens[user] = lg.create_token(user)[1]
    (home / "lockgate.toml").write_text(POLICY + '[serve]\nauth = "token"\ngrpc_port = 0\n')
    budget = {"LOCKGATE_SERVE_DECODE_BUDGET": str(1 << 20),  # messages of at most 256 KiB
              "LOCKGATE_SERVE_MAX_CONNECTIONS": "2"}  # and two calls at once
    with grpc_server(home, "lin@1", "--http", layer, env=budget) as (_, port):
        client = _client(port)
        x = [_input("input", X, "FP32")]
        for headers, code in ((None, "UNAUTHENTICATED"),
                              ({"authorization": "Basic dXNlcjpwYXNz"}, "UNAUTHENTICATED"),
                              ({"authorization": "Bearer lgt_000000000000_" + "a" * 64},
                               "UNAUTHENTICATED"),
                              ({"authorization": f"Bearer {tokens['reader']}"},
                               "PERMISSION_DENIED")):
            with pytest.raises(InferenceServerException) as err:
                client.infer("lin", x, headers=headers)
            assert _status(err) == f"StatusCode.{code}"
        caller = {"authorization": f"Bearer {tokens['caller']}"}
        result = client.infer("lin", x, headers=caller)
        np.testing.assert_allclose(result.as_numpy("output"), _expected(), rtol=1e-6)
        for headers, ok in ((None, False), (caller, True)):  # a stream's token: its metadata
            got: queue.Queue[tuple[Any, Any]] = queue.Queue()
            client.start_stream(callback=lambda result, error, got=got: got.put(
                (result, error)), headers=headers)
            try:
                client.async_stream_infer("lin", x)
                result, error = got.get(timeout=30)
            finally:
                client.stop_stream()
            assert (error is None) == ok, error
            assert ok or "API token is required" in str(error)
        assert client.is_server_ready()  # probes and metadata stay open
        assert client.get_model_metadata("lin").name == "lin"
        assert _health(port) == health_pb2.HealthCheckResponse.SERVING
        big = np.zeros((20_000, 4), np.float32)  # 320 KB
        with pytest.raises(InferenceServerException) as err:
            client.infer("lin", [_input("input", big, "FP32")], headers=caller)
        assert _status(err) == "StatusCode.RESOURCE_EXHAUSTED"
        fits = np.zeros((10_000, 4), np.float32)  # 160 KB
        result = client.infer("lin", [_input("input", fits, "FP32")], headers=caller)
        assert result.as_numpy("output").shape == (10_000, 3)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = channel.unary_stream(
                "/grpc.health.v1.Health/Watch",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString)
            watches = [watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(2)]
            assert [next(w).status for w in watches] == [health_pb2.HealthCheckResponse.SERVING] * 2
            with pytest.raises(grpc.RpcError) as rpc:  # a third call at once
                _health(port)
            assert rpc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            for w in watches:
                w.cancel()


# -- deployments: canary and shadow under gRPC ---------------------------------------------------

def _metric(rest_port: int, name: str, model: str, version: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    m = re.search(rf'^{name}\{{model="{model}",version="{version}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def _ready(client: Any, model: str, version: str) -> bool:
    try:
        return bool(client.is_model_ready(model, version))
    except InferenceServerException:  # not followed yet: NOT_FOUND
        return False


def test_canary_split_and_shadow_mirroring_under_grpc(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "lockgate.toml").write_text(POLICY)
    with Lockgate.open(home) as lg:
        for name in ("m", "s"):
            for seed in (0, 1):
                path = tmp_path / f"{name}{seed}.onnx"
                onnx.save(linear_onnx(seed=seed), path)
                lg.register(str(path), name=name, seed=seed)
            lg.promote(f"{name}@1", "production")
            lg.deploy(f"{name}@1")
            lg.promote(f"{name}@2", "stabilized")
        lg.deploy("m@2", canary=30)
        lg.deploy("s@2", shadow=True)
    with grpc_server(home, "--grpc-port", "0") as (rest, port):
        client = _client(port)
        deadline = time.monotonic() + 30
        while not _ready(client, "m", "2") or not _ready(client, "s", "2"):
            assert time.monotonic() < deadline, "the candidate and the shadow never loaded"
            time.sleep(0.05)
        seen = {"1": 0, "2": 0}
        for _ in range(400):
            result = client.infer("m", [_input("input", X, "FP32")])
            version = result.get_response().model_version
            seen[version] += 1
            np.testing.assert_allclose(result.as_numpy("output"),
                                       _expected(seed=int(version) - 1), rtol=1e-6)
        assert 60 < seen["2"] < 200, seen  # 30 % of 400: 120 expected
        assert _metric(rest, "lockgate_requests_total", "m", "2") == seen["2"]
        assert _metric(rest, "lockgate_requests_total", "m", "1") == seen["1"]
        for _ in range(50):
            result = client.infer("s", [_input("input", X, "FP32")])
            assert result.get_response().model_version == "1"  # callers see the stable one
            np.testing.assert_allclose(result.as_numpy("output"), _expected(), rtol=1e-6)
        deadline = time.monotonic() + 30
        while _metric(rest, "lockgate_shadow_requests_total", "s", "2") < 1:
            assert time.monotonic() < deadline, "the shadow never saw a mirrored request"
            time.sleep(0.05)
        assert _metric(rest, "lockgate_shadow_divergence", "s", "2") > 0.01


# -- the REST rules of readiness and unloading ---------------------------------------------------

def test_an_empty_store_is_not_ready_and_an_unloaded_model_not_found(tmp_path: Path) -> None:
    """gRPC answers readiness and model lookups as /v2/health/ready and the REST model routes
    do: a server following a store with nothing deployed is live but not ready; a model
    unloaded through the repository extension is NOT_FOUND and no longer waited for."""
    home = tmp_path / "home"
    Lockgate.open(home).close()
    with grpc_server(home, "--grpc-port", "0", ready=False) as (_, grpc_port):
        client = _client(grpc_port)
        assert client.is_server_live()
        assert not client.is_server_ready()
        assert _health(grpc_port) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(InferenceServerException) as exc:
            client.get_model_metadata("lin")
        assert _status(exc) == "StatusCode.NOT_FOUND"

    onnx.save(linear_onnx(), tmp_path / "lin.onnx")
    with Lockgate.open(home) as lg:
        lg.register(str(tmp_path / "lin.onnx"), name="lin")
    with grpc_server(home, "lin@1", "--grpc-port", "0") as (rest_port, grpc_port):
        client = _client(grpc_port)
        assert client.is_model_ready("lin")
        assert call(rest_port, "POST", "/v2/repository/models/lin/unload") == (200, None)
        with pytest.raises(InferenceServerException) as exc:
            client.is_model_ready("lin")
        assert _status(exc) == "StatusCode.NOT_FOUND"
        assert "unloaded" in str(exc.value)
        assert client.is_server_ready()  # an unloaded model is not waited for
