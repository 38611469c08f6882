"""The pure OIP v2 JSON codec: datatypes, tensors, requests and responses."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lockgate.errors import InvalidInputError, ServeError
from lockgate.serve.oip import (
    DATATYPES,
    decode_tensor,
    encode_binary_response,
    encode_response,
    numpy_dtype,
    oip_datatype,
    oip_shape,
    parse_infer_request,
)

EXPECTED = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}

SAMPLE_DATA = {
    "BOOL": [True, False, True, True, False, False],
    "BYTES": ["a", "bé", "", "d", "e", "f"],
    "FP16": [0.5, -1.0, 2.0, 3, 4.25, -0.0],
    "FP32": [0.1, -1.5, 2.0, 3, 4.25, 1e30],
    "FP64": [0.1, -1.5, 2.0, 3, 4.25, 1e300],
}


def sample(datatype: str) -> list[object]:
    if datatype in SAMPLE_DATA:
        return SAMPLE_DATA[datatype]
    info = np.iinfo(EXPECTED[datatype])
    return [int(info.min), int(info.max), 0, 1, 2, 3]


def tensor(datatype: str = "FP32", shape: object = (2, 3), data: object = None, **extra: object):
    body = {
        "name": "x",
        "datatype": datatype,
        "shape": list(shape) if isinstance(shape, tuple) else shape,
        "data": sample(datatype) if data is None else data,
    }
    body.update(extra)
    return body


def test_datatype_table_is_complete() -> None:
    assert set(DATATYPES) == set(EXPECTED)


@pytest.mark.parametrize("datatype", sorted(EXPECTED))
def test_every_datatype_maps_both_ways(datatype: str) -> None:
    dt = numpy_dtype(datatype)
    assert dt == np.dtype(EXPECTED[datatype])
    assert oip_datatype(dt) == datatype
    assert oip_datatype(str(dt)) == datatype


@pytest.mark.parametrize("datatype", sorted(EXPECTED))
def test_every_datatype_round_trips_through_request_and_response(datatype: str) -> None:
    data = sample(datatype)
    name, arr = decode_tensor(tensor(datatype))
    assert name == "x"
    assert arr.dtype == np.dtype(EXPECTED[datatype])
    assert arr.shape == (2, 3)
    body = json.loads(encode_response("m", "1", {"out": arr}))
    out = body["outputs"][0]
    assert out["datatype"] == datatype
    assert out["shape"] == [2, 3]
    if datatype in ("FP16", "FP32"):  # the shortest text that reads back as the same value
        dt = np.float16 if datatype == "FP16" else np.float32
        assert np.array_equal(np.asarray(out["data"], dtype=dt), np.asarray(data, dtype=dt))
        assert all(len(repr(x)) <= 16 for x in out["data"])
    else:
        assert out["data"] == data


def test_unknown_datatype() -> None:
    with pytest.raises(InvalidInputError, match="unknown datatype 'FLOAT32'"):
        numpy_dtype("FLOAT32")
    with pytest.raises(InvalidInputError, match=r"input 'x': unknown datatype 'FP8'"):
        decode_tensor(tensor("FP8", data=[1]))
    with pytest.raises(InvalidInputError, match="unknown datatype 32"):
        decode_tensor(tensor(32, data=[1]))  # type: ignore[arg-type]


def test_numpy_dtypes_without_oip_name() -> None:
    assert oip_datatype(np.dtype("U5")) == "BYTES"
    assert oip_datatype("bfloat16") == "BF16"
    with pytest.raises(ServeError, match="complex64"):
        oip_datatype(np.dtype(np.complex64))


def test_oip_shape_marks_symbolic_dims() -> None:
    assert oip_shape(("batch", 4, "seq")) == [-1, 4, -1]
    assert oip_shape(()) == []


def test_nested_and_flat_data_agree() -> None:
    _, flat = decode_tensor(tensor("FP32", (2, 3), [1, 2, 3, 4, 5, 6]))
    _, nested = decode_tensor(tensor("FP32", (2, 3), [[1, 2, 3], [4, 5, 6]]))
    np.testing.assert_array_equal(flat, nested)
    assert nested.dtype == np.float32
    np.testing.assert_array_equal(nested, np.arange(1, 7, dtype=np.float32).reshape(2, 3))


def test_nested_bytes() -> None:
    _, arr = decode_tensor(tensor("BYTES", (2, 2), [["a", "b"], ["c", "d"]]))
    assert arr.dtype == object
    assert arr.tolist() == [["a", "b"], ["c", "d"]]


def test_scalar_and_empty_tensors() -> None:
    _, scalar = decode_tensor(tensor("INT32", [], [7]))
    assert scalar.shape == ()
    assert scalar.dtype == np.int32
    assert int(scalar) == 7
    _, empty = decode_tensor(tensor("INT64", (0, 4), []))
    assert empty.shape == (0, 4)
    assert empty.dtype == np.int64


@pytest.mark.parametrize(
    ("shape", "data", "message"),
    [
        ((2, 3), [1, 2, 3, 4, 5], r"input 'x': shape \[2, 3\] needs 6 elements, data has 5"),
        ((2, 3), [[1, 2, 3], [4, 5, 6], [7, 8, 9]], r"needs 6 elements, data has 9"),
        ((1,), [], r"shape \[1\] needs 1 elements, data has 0"),
    ],
)
def test_shape_and_data_length_must_agree(shape: tuple[int, ...], data: object, message: str):
    with pytest.raises(InvalidInputError, match=message):
        decode_tensor(tensor("FP32", shape, data))


def test_ragged_nested_data() -> None:
    with pytest.raises(InvalidInputError, match="ragged"):
        decode_tensor(tensor("FP32", (2, 3), [[1, 2, 3], [4, 5]]))
    with pytest.raises(InvalidInputError, match="ragged"):
        decode_tensor(tensor("BYTES", (2, 2), [["a", "b"], ["c"]]))


@pytest.mark.parametrize("shape", [[-1, 3], [2.0, 3], [True, 3], "2,3", None])
def test_bad_shape(shape: object) -> None:
    with pytest.raises(InvalidInputError, match="shape must be a list of non-negative integers"):
        decode_tensor(tensor("FP32", shape, [1, 2, 3, 4, 5, 6]))


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("FP32", ["1", "2"], "FP32 data must be JSON numbers, got elements of type string"),
        ("FP32", [1.0, None], "FP32 data must be JSON numbers, got elements of type float/null"),
        ("INT64", [1.5, 2], "INT64 data must be JSON integers, got elements of type float"),
        ("INT32", [True, False], "INT32 data must be JSON integers, got elements of type boolean"),
        ("BOOL", [1, 0], "BOOL data must be JSON true/false, got elements of type integer"),
        ("UINT8", [0, 256], r"value 256 is out of range for UINT8 \[0, 255\]"),
        ("INT8", [-129, 0], r"value -129 is out of range for INT8 \[-128, 127\]"),
        ("UINT32", [-1, 0], "value -1 is out of range for UINT32"),
        ("INT64", [2**63, 0], "value 9223372036854775808 is out of range for INT64"),
        ("UINT64", [-1, 2**64], "value -1 is out of range for UINT64"),
        ("UINT64", [1, 2**64], "value 18446744073709551616 is out of range for UINT64"),
        ("UINT64", [2**64 - 1, 0.5], "UINT64 data must be JSON integers, got elements of type fl"),
        ("INT64", [[1], [2**63, 3]], "ragged"),
        ("BYTES", ["a", 1], "BYTES data must be JSON strings, got integer"),
    ],
)
def test_data_must_match_datatype(datatype: str, data: list[object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decode_tensor(tensor(datatype, (2,), data))


def test_float_overflow_becomes_inf_without_warning() -> None:
    _, arr = decode_tensor(tensor("FP16", (2,), [1e10, -1e10]))
    assert arr.dtype == np.float16
    assert np.isinf(arr).all()


def test_tensor_structure_errors() -> None:
    with pytest.raises(InvalidInputError, match="each input must be a JSON object"):
        decode_tensor([1, 2])
    with pytest.raises(InvalidInputError, match="non-empty string 'name'"):
        decode_tensor({"shape": [1], "datatype": "FP32", "data": [1]})
    for key in ("shape", "datatype", "data"):
        body = tensor()
        del body[key]
        with pytest.raises(InvalidInputError, match=f"input 'x' has no '{key}'"):
            decode_tensor(body)
    with pytest.raises(InvalidInputError, match="needs the Inference-Header-Content-Length"):
        decode_tensor(tensor(parameters={"binary_data_size": 24}))


def request(**doc: object) -> bytes:
    doc.setdefault("inputs", [tensor()])
    return json.dumps(doc).encode()


def test_parse_request() -> None:
    req = parse_infer_request(
        request(id="r-1", parameters={"p": 1}, outputs=[{"name": "b"}, {"name": "a"}])
    )
    assert req.id == "r-1"
    assert req.parameters == {"p": 1}
    assert req.outputs == ("b", "a")
    assert list(req.inputs) == ["x"]
    assert req.inputs["x"].shape == (2, 3)


def test_parse_minimal_request() -> None:
    req = parse_infer_request(request())
    assert req.id is None
    assert req.outputs is None
    assert req.parameters == {}
    req = parse_infer_request(request(outputs=[]))
    assert req.outputs is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b"\xff\xfe", "request body is not valid JSON"),
        (b"[1, 2]", "request body must be a JSON object"),
        (b"{}", "request needs 'inputs'"),
        (b'{"inputs": []}', "request needs 'inputs'"),
        (b'{"inputs": {"x": 1}}', "request needs 'inputs'"),
        (request(id=5), "'id' must be a string"),
        (request(parameters=[1]), "'parameters' must be a JSON object"),
        (request(inputs=[tensor(), tensor()]), "input 'x' is given twice"),
        (request(outputs={"name": "y"}), "'outputs' must be a list"),
        (request(outputs=[{"nom": "y"}]), "each requested output needs a non-empty string"),
        (request(outputs=["y"]), "each requested output needs a non-empty string"),
        (request(outputs=[{"name": "y"}, {"name": "y"}]), "output 'y' is requested twice"),
    ],
)
def test_bad_requests(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_infer_request(body)


def test_encode_response() -> None:
    outputs = {
        "y": np.arange(6, dtype=np.float32).reshape(3, 2),
        "s": np.array([b"ab", "c\u00e9"], dtype=object),
        "n": np.array([math.nan, math.inf], dtype=np.float64),
    }
    doc = json.loads(encode_response("m", "3", outputs, request_id="abc"))
    assert doc["model_name"] == "m"
    assert doc["model_version"] == "3"
    assert doc["id"] == "abc"
    y, s, n = doc["outputs"]
    assert y == {"name": "y", "datatype": "FP32", "shape": [3, 2], "data": [0, 1, 2, 3, 4, 5]}
    assert s == {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["ab", "c\u00e9"]}
    assert n["datatype"] == "FP64"
    assert math.isnan(n["data"][0])
    assert n["data"][1] == math.inf
    assert "id" not in json.loads(encode_response("m", "3", outputs))


# --- binary tensor extension ------------------------------------------------------------------


def _binary_request(tensors: list[tuple[str, str, list[int], bytes]],
                    **doc: object) -> tuple[bytes, int]:
    inputs = [{"name": n, "datatype": dt, "shape": shape,
               "parameters": {"binary_data_size": len(raw)}} for n, dt, shape, raw in tensors]
    head = json.dumps({"inputs": inputs, **doc}).encode()
    return head + b"".join(raw for *_, raw in tensors), len(head)


def test_binary_inputs_of_every_kind() -> None:
    fp16 = np.array([[1.5, -2.25]], np.float16)
    i64 = np.array([7, -8, 9], np.int64)
    flags = np.array([True, False, True])
    words = [b"abc", "h\u00e9".encode()]
    raw_words = b"".join(len(w).to_bytes(4, "little") + w for w in words)
    body, head = _binary_request([
        ("a", "FP16", [1, 2], fp16.tobytes()), ("b", "INT64", [3], i64.tobytes()),
        ("c", "BOOL", [3], flags.astype(np.uint8).tobytes()), ("d", "BYTES", [2], raw_words)])
    req = parse_infer_request(body, head)
    np.testing.assert_array_equal(req.inputs["a"], fp16)
    assert req.inputs["a"].dtype == np.float16
    np.testing.assert_array_equal(req.inputs["b"], i64)
    np.testing.assert_array_equal(req.inputs["c"], flags)
    assert req.inputs["d"].tolist() == ["abc", "h\u00e9"]


def test_binary_errors() -> None:
    x = np.ones((1, 3), np.float32).tobytes()
    body, head = _binary_request([("x", "FP32", [1, 3], x)])
    short, short_head = _binary_request([("x", "FP32", [1, 3], x[:8])])
    with pytest.raises(InvalidInputError, match="needs 12 bytes, binary_data_size gives 8"):
        parse_infer_request(short, short_head)
    with pytest.raises(InvalidInputError, match="not claimed"):
        parse_infer_request(body + b"xx", head)
    with pytest.raises(InvalidInputError, match="does not fit"):
        parse_infer_request(body, len(body) + 5)


def test_binary_outputs() -> None:
    body, head = _binary_request([("x", "FP32", [1, 3], np.ones((1, 3), np.float32).tobytes())],
                                 outputs=[{"name": "y", "parameters": {"binary_data": True}},
                                          {"name": "z"}])
    req = parse_infer_request(body, head)
    assert req.wants_binary("y")
    assert not req.wants_binary("z")
    y = np.array([[1.0, 2.0]], np.float32)
    z = np.array([3], np.int64)
    content, json_len = encode_binary_response("m", "1", {"y": y, "z": z}, req)
    assert json_len is not None
    doc = json.loads(content[:json_len])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert "data" not in doc["outputs"][0]
    assert doc["outputs"][1]["data"] == [3]
    np.testing.assert_array_equal(np.frombuffer(content[json_len:], np.float32), y.ravel())
    everything = parse_infer_request(request(parameters={"binary_data_output": True}))
    assert everything.wants_binary("anything")
