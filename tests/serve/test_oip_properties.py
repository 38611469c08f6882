"""Property tests over the OIP v2 request decoder, in-process and over HTTP.

The rule: ``parse_infer_request(body, header_length)`` either returns an ``InferRequest`` or
raises ``InvalidInputError`` — never another exception (no RecursionError, ValueError,
RuntimeError, OverflowError, MemoryError) — whatever the body: random JSON, deep nesting,
mutations of valid requests, random bytes with any header length. A valid request decodes to
exactly the arrays that were sent, as JSON (flat or nested) and as binary tensor data. Over
HTTP, a real `lockgate serve` answers every such probe with a 4xx JSON error and then answers
a good request right.
"""

from __future__ import annotations

import http.client
import json
import math
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate.api.facade import Lockgate
from lockgate.errors import InvalidInputError
from lockgate.serve.oip import DATATYPES, InferRequest, parse_infer_request
from onnx_models import linear_onnx
from servers import http_get, lockgate_server

# derandomized: the same examples on every run, so a failure reproduces (and CI never flakes)
SETTINGS = settings(max_examples=120, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
INT_TYPES = ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
FLOAT_WIDTHS = {"FP16": 16, "FP32": 32, "FP64": 64}


def decode(body: bytes | str, header_length: int | None = None) -> InferRequest | None:
    """The decoder's answer under the rule: a request, or None for an InvalidInputError with a
    message. Any other exception propagates and fails the test."""
    try:
        request = parse_infer_request(body, header_length)
    except InvalidInputError as exc:
        message = str(exc)
    else:
        assert isinstance(request, InferRequest)
        return request
    assert message
    return None


# -- random JSON ------------------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers()
           | st.integers(min_value=-(10**80), max_value=10**80)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=6)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=6), max_leaves=40)
KEYS = st.sampled_from(["id", "parameters", "inputs", "outputs", "name", "shape", "datatype",
                        "data", "binary_data_size", "binary_data", "binary_data_output"])
# documents whose keys are the protocol's, so random values reach the decoder's inner checks
OIP_LIKE = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                        | st.dictionaries(KEYS | st.text(max_size=4), inner, max_size=6)
                        | st.sampled_from(list(DATATYPES)), max_leaves=40)


@SETTINGS
@given(doc=JSON | OIP_LIKE)
def test_random_json_is_decoded_or_refused(doc: Any) -> None:
    text = json.dumps(doc)  # writes NaN and Infinity, as Python and Triton clients may
    decode(text)
    decode(json.dumps({"inputs": doc}))
    decode(json.dumps({"inputs": [doc]}))
    decode(json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                   "data": doc}], "outputs": doc}))


@SETTINGS
@given(doc=OIP_LIKE, datatype=st.sampled_from(list(DATATYPES)),
       shape=st.lists(st.integers(0, 3), max_size=4))
def test_random_data_of_every_datatype_is_decoded_or_refused(
        doc: Any, datatype: str, shape: list[int]) -> None:
    decode(json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                                   "data": doc}]}))


@pytest.mark.parametrize("digits", [19, 20, 40, 309, 400, 4300, 4301, 10_000])
@pytest.mark.parametrize("datatype", ["INT64", "UINT64", "FP64", "BYTES"])
def test_integers_of_any_size_are_decoded_or_refused(digits: int, datatype: str) -> None:
    big = "9" * digits
    for data in (f"[{big}]", f"[-{big}]", f"[1, {big}]", f"[{big}.5]", f"[{big}e10]"):
        decode('{"inputs":[{"name":"x","shape":[1],"datatype":"' + datatype + '","data":'
               + data + "}]}")
    decode('{"inputs":[{"name":"x","shape":[' + big + '],"datatype":"FP32","data":[]}]}')


# -- deep nesting, as raw text ----------------------------------------------------------------

DEPTHS = [31, 32, 33, 63, 64, 65, 100, 1000, 1024, 1025, 3000, 100_000]


@pytest.mark.parametrize("depth", DEPTHS)
def test_deeply_nested_documents_are_refused(depth: int) -> None:
    assert decode("[" * depth + "]" * depth) is None
    assert decode('{"a":' * depth + "1" + "}" * depth) is None
    assert decode('{"inputs":' + "[" * depth + "]" * depth + "}") is None
    # deep tensor parameters may be kept or refused, under the rule
    decode('{"inputs":[{"name":"x","parameters":' + '{"a":' * depth + "1" + "}" * depth
           + ',"shape":[1],"datatype":"FP32","data":[1]}]}')


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("datatype", ["FP32", "INT64", "BOOL", "BYTES"])
def test_deeply_nested_tensor_data_is_decoded_or_refused(depth: int, datatype: str) -> None:
    element = {"BYTES": '"a"', "BOOL": "true"}.get(datatype, "1")
    body = ('{"inputs":[{"name":"x","shape":[1],"datatype":"' + datatype + '","data":'
            + "[" * depth + element + "]" * depth + "}]}")
    request = decode(body)  # one element, nested: the decoder may take it or refuse it
    if request is not None:
        assert request.inputs["x"].shape == (1,)
        assert request.inputs["x"].ravel().tolist() == [{"BYTES": "a", "BOOL": True}.get(
            datatype, 1)]


# -- shapes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [0, 1, 32, 33, 64, 65, 100, 200])
def test_shapes_of_any_rank_are_decoded_or_refused(dims: int) -> None:
    ones = decode(json.dumps({"inputs": [{"name": "x", "shape": [1] * dims,
                                          "datatype": "FP32", "data": [1.0]}]}))
    zeros = decode(json.dumps({"inputs": [{"name": "x", "shape": [0] * dims,
                                           "datatype": "FP32", "data": []}]}))
    if dims <= 32:  # any server takes these
        assert ones is not None
        assert ones.inputs["x"].shape == (1,) * dims
        if dims:
            assert zeros is not None
            assert zeros.inputs["x"].shape == (0,) * dims


@pytest.mark.parametrize("shape", [[0, 2**62, 2**62], [2**62, 2**62, 0], [0, 2**63 - 1],
                                   [0, 2**63], [0, 2**64 - 1], [2**31] * 3 + [0]])
def test_empty_shapes_with_huge_dimensions_are_decoded_or_refused(shape: list[int]) -> None:
    for datatype in ("FP32", "BYTES"):
        request = decode(json.dumps({"inputs": [{"name": "x", "shape": shape,
                                                 "datatype": datatype, "data": []}]}))
        if request is not None:
            assert list(request.inputs["x"].shape) == shape


DIM = (st.integers(0, 3) | st.integers(-3, -1) | st.integers(2**31 - 2, 2**31 + 2)
       | st.integers(2**63 - 2, 2**64 + 2) | st.integers(-(2**80), 2**80)
       | st.booleans() | st.floats() | st.text(max_size=3) | st.none())


@SETTINGS
@given(shape=st.lists(DIM, max_size=200), datatype=st.sampled_from(list(DATATYPES)),
       data=st.sampled_from([[], [1], [True], ["a"], [[1, 2], [3, 4]], [1.5] * 6]))
def test_random_shapes_are_decoded_or_refused(shape: list[Any], datatype: str,
                                              data: list[Any]) -> None:
    request = decode(json.dumps({"inputs": [{"name": "x", "shape": shape,
                                             "datatype": datatype, "data": data}]}))
    if request is not None:
        assert list(request.inputs["x"].shape) == shape


# -- valid requests decode to what was sent ---------------------------------------------------

def _values(datatype: str) -> st.SearchStrategy[Any]:
    if datatype == "BOOL":
        return st.booleans()
    if datatype == "BYTES":
        return st.text(max_size=6)
    if datatype in FLOAT_WIDTHS:
        return st.floats(width=FLOAT_WIDTHS[datatype],  # type: ignore[arg-type]
                         allow_nan=False, allow_infinity=False)
    info = np.iinfo(DATATYPES[datatype])
    return st.integers(int(info.min), int(info.max))


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, list[int], list[Any]]:
    datatype = draw(st.sampled_from(list(DATATYPES)))
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    values = draw(st.lists(_values(datatype), min_size=math.prod(shape),
                           max_size=math.prod(shape)))
    return datatype, shape, values


def _nest(values: list[Any], shape: list[int]) -> Any:
    if not shape:
        return values[0]
    if len(shape) == 1:
        return list(values)
    step = math.prod(shape[1:])
    return [_nest(values[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def _binary(datatype: str, values: list[Any]) -> bytes:
    """Binary tensor data as Triton's clients write it (independent of the server's encoder)."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
    if datatype == "BOOL":
        return bytes(int(v) for v in values)
    return np.asarray(values, dtype=DATATYPES[datatype].newbyteorder("<")).tobytes()


def _expected(datatype: str, shape: list[int], values: list[Any]) -> np.ndarray[Any, Any]:
    return np.array(values, dtype=DATATYPES[datatype]).reshape(shape)


def _same(got: np.ndarray[Any, Any], datatype: str, shape: list[int],
          values: list[Any]) -> None:
    assert got.dtype == DATATYPES[datatype]
    assert got.shape == tuple(shape)
    if datatype == "BYTES":
        assert got.ravel().tolist() == values
    else:
        np.testing.assert_array_equal(got, _expected(datatype, shape, values))


@SETTINGS
@given(specs=st.lists(tensors(), min_size=1, max_size=4), nested=st.booleans(),
       rid=st.none() | st.text(max_size=8), binary_mask=st.lists(st.booleans(), min_size=4,
                                                                  max_size=4))
def test_valid_requests_decode_to_the_arrays_sent(
        specs: list[tuple[str, list[int], list[Any]]], nested: bool, rid: str | None,
        binary_mask: list[bool]) -> None:
    inputs, blobs = [], []
    for i, (datatype, shape, values) in enumerate(specs):
        tensor: dict[str, Any] = {"name": f"in{i}", "shape": shape, "datatype": datatype}
        if binary_mask[i]:
            blob = _binary(datatype, values)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = _nest(values, shape) if nested else values
        inputs.append(tensor)
    doc: dict[str, Any] = {"inputs": inputs, "outputs": [{"name": "y"}]}
    if rid is not None:
        doc["id"] = rid
    head = json.dumps(doc).encode()
    request = decode(head + b"".join(blobs), len(head)) if blobs else decode(head)
    assert request is not None
    assert request.id == rid
    assert request.outputs == ("y",)
    assert list(request.inputs) == [f"in{i}" for i in range(len(specs))]
    for i, (datatype, shape, values) in enumerate(specs):
        _same(request.inputs[f"in{i}"], datatype, shape, values)


# -- mutations of a valid request -------------------------------------------------------------

def _valid() -> dict[str, Any]:
    return {"id": "r1", "parameters": {"binary_data_output": False},
            "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
                        "data": [1.0, 2.0, 3.0, 4.0], "parameters": {}},
                       {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}


PATHS = [("id",), ("parameters",), ("parameters", "binary_data_output"), ("inputs",),
         ("inputs", 0), ("inputs", 0, "name"), ("inputs", 0, "shape"),
         ("inputs", 0, "shape", 0), ("inputs", 0, "datatype"), ("inputs", 0, "data"),
         ("inputs", 0, "data", 0), ("inputs", 0, "parameters"),
         ("inputs", 0, "parameters", "binary_data_size"), ("inputs", 1, "data", 0),
         ("inputs", 1, "datatype"), ("outputs",), ("outputs", 0), ("outputs", 0, "name"),
         ("outputs", 0, "parameters"), ("outputs", 0, "parameters", "binary_data")]


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


@SETTINGS
@given(mutations=st.lists(st.tuples(st.sampled_from(PATHS), JSON), min_size=1, max_size=3))
def test_mutated_requests_are_decoded_or_refused(
        mutations: list[tuple[tuple[Any, ...], Any]]) -> None:
    doc = _valid()
    for path, value in mutations:
        try:
            _set(doc, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed the container
    decode(json.dumps(doc))


@SETTINGS
@given(size=st.integers() | st.integers(-(2**80), 2**80) | st.floats() | st.booleans()
       | st.text(max_size=4) | st.none() | st.lists(st.integers(), max_size=2),
       datatype=st.sampled_from(list(DATATYPES)), shape=st.lists(st.integers(0, 4), max_size=3),
       tail=st.binary(max_size=64), delta=st.integers(-3, 3))
def test_binary_data_sizes_are_decoded_or_refused(size: Any, datatype: str, shape: list[int],
                                                  tail: bytes, delta: int) -> None:
    head = json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                                   "parameters": {"binary_data_size": size}}]}).encode()
    body = head + tail
    for length in (len(head), len(head) + delta, None):
        decode(body, length)


@SETTINGS
@given(body=st.binary(max_size=300),
       header=st.none() | st.integers(-5, 310) | st.integers(-(2**70), 2**70))
def test_random_bytes_are_decoded_or_refused(body: bytes, header: int | None) -> None:
    decode(body, header)
    decode(b'{"inputs":' + body, header)


# -- over HTTP, against a real `lockgate serve` -----------------------------------------------

GOOD = [1.0, 2.0, 3.0, 4.0]


def _good_body() -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                   "data": GOOD}]}).encode()


def _head(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


BIN_HEAD = _head({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                              "parameters": {"binary_data_size": 16}}]})
BIN_BODY = BIN_HEAD + np.asarray(GOOD, dtype="<f4").tobytes()
HUGE_HEAD = _head({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                               "parameters": {"binary_data_size": 2**62}}]})
PROBES: dict[str, tuple[bytes, list[tuple[str, bytes]]]] = {
    "deep-list": (b"[" * 100_000 + b"]" * 100_000, []),
    "deep-object": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, []),
    "deep-2000": (b'{"inputs":' + b"[" * 2000 + b"]" * 2000 + b"}", []),
    "deep-bytes-data": (b'{"inputs":[{"name":"input","shape":[1],"datatype":"BYTES","data":'
                        + b"[" * 40 + b'"a"' + b"]" * 40 + b"}]}", []),
    "65-dims": (_head({"inputs": [{"name": "input", "shape": [1] * 65, "datatype": "FP32",
                                   "data": [1.0]}]}), []),
    "200-dims-empty": (_head({"inputs": [{"name": "input", "shape": [0] * 200,
                                          "datatype": "FP32", "data": []}]}), []),
    "empty-huge-dims": (_head({"inputs": [{"name": "input", "shape": [0, 2**62, 2**62],
                                           "datatype": "FP32", "data": []}]}), []),
    "huge-dim": (_head({"inputs": [{"name": "input", "shape": [2**63, 2**63],
                                    "datatype": "FP32", "data": []}]}), []),
    "huge-binary-size": (HUGE_HEAD + b"\0" * 16, [("Inference-Header-Content-Length",
                                                  b"%d" % len(HUGE_HEAD))]),
    "header-superscript-latin1": (BIN_BODY, [("Inference-Header-Content-Length", b"\xb2")]),
    "header-superscript-utf8": (BIN_BODY, [("Inference-Header-Content-Length",
                                            "²".encode())]),
    "header-fullwidth-digits": (BIN_BODY, [("Inference-Header-Content-Length",
                                            "\uff11\uff12".encode())]),  # fullwidth 12
    "header-negative": (BIN_BODY, [("Inference-Header-Content-Length", b"-1")]),
    "header-huge": (BIN_BODY, [("Inference-Header-Content-Length", b"9" * 400)]),
    "header-twice": (BIN_BODY, [("Inference-Header-Content-Length", b"4"),
                                ("Inference-Header-Content-Length", b"%d" % len(BIN_HEAD))]),
    "header-twice-bad": (BIN_BODY, [("Inference-Header-Content-Length", b"%d" % len(BIN_HEAD)),
                                    ("Inference-Header-Content-Length", b"x")]),
    "random-bytes": (bytes(range(256)) * 3, [("Inference-Header-Content-Length", b"100")]),
    "lone-surrogate-name": (b'{"inputs":[{"name":"\\ud800","shape":[1,4],"datatype":"FP32",'
                            b'"data":[1,2,3,4]}]}', []),
    "lone-surrogate-id": (b'{"id":"\\udfff","inputs":[{"name":"input","shape":[1,4],'
                          b'"datatype":"FP32","data":[1,2,3,4]}]}', []),
    "nan-and-huge-ints": (b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32",'
                          b'"data":[NaN,Infinity,-Infinity,' + b"9" * 5000 + b"]}]}", []),
}
# probes a server may answer 200 (the request is valid), as long as it answers right
MAY_SUCCEED = {"header-twice", "lone-surrogate-id", "nan-and-huge-ints"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, np.ndarray[Any, Any]]]:
    """A real `lockgate serve` of model m, and its answer to the good request."""
    import os

    home = tmp_path_factory.mktemp("oip-properties") / "home"
    home.mkdir()
    (home / "lockgate.toml").write_text('[gates]\n"*" = ["seeds_recorded"]\n', encoding="utf-8")
    model = home.parent / "m.onnx"
    onnx.save(linear_onnx(), model)
    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(
        None, {"input": np.asarray([GOOD], dtype=np.float32)})[0]
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("LOCKGATE_")}
    try:
        with Lockgate.open(home) as lg:
            lg.register(str(model), name="m", seed=0)
            lg.promote("m@1", "production")
        with lockgate_server(home, "m@1") as (_, port):
            yield port, expected
    finally:
        os.environ.update(saved)


def _post(port: int, body: bytes, headers: list[tuple[str, bytes]],
          path: str = "/v2/models/m/versions/1/infer") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _check_good(port: int, expected: np.ndarray[Any, Any]) -> None:
    status, raw = _post(port, _good_body(), [])
    assert status == 200, raw[:500]
    out = json.loads(raw)["outputs"][0]
    assert out["shape"] == [1, 3]
    np.testing.assert_allclose(np.asarray(out["data"], dtype=np.float32).reshape(1, 3),
                               expected, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("probe", sorted(PROBES))
def test_http_probes_get_a_4xx_and_the_server_stays_up(
        server: tuple[int, np.ndarray[Any, Any]], probe: str) -> None:
    port, expected = server
    body, headers = PROBES[probe]
    for path in ("/v2/models/m/versions/1/infer", "/v2/models/m/infer"):
        status, raw = _post(port, body, headers, path)
        assert status < 500, f"{probe}: {status} {raw[:300]!r}"
        if status != 200 or probe not in MAY_SUCCEED:
            assert 400 <= status < 500, f"{probe}: {status} {raw[:300]!r}"
            assert json.loads(raw)["error"]
        assert http_get(port, "/v2/health/live") == (200, {"live": True})
        _check_good(port, expected)


@pytest.mark.slow
def test_http_binary_request_is_answered_right(
        server: tuple[int, np.ndarray[Any, Any]]) -> None:
    port, expected = server
    status, raw = _post(port, BIN_BODY, [("Inference-Header-Content-Length",
                                          b"%d" % len(BIN_HEAD))])
    assert status == 200, raw[:300]
    out = json.loads(raw)["outputs"][0]
    np.testing.assert_allclose(np.asarray(out["data"], dtype=np.float32).reshape(1, 3),
                               expected, rtol=1e-6)
