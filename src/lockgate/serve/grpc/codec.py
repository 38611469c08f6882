"""gRPC infer messages to and from the REST data plane's binary tensor body — pure, no I/O.

A ``ModelInferRequest`` becomes the body a REST client using Triton's binary tensor extension
would send: a JSON header naming every input with its ``binary_data_size`` (and asking every
output back as binary), followed by each input's data. Raw contents
(``raw_input_contents``) are already laid out that way and pass through without a copy; typed
``contents`` are checked and laid out first. The :class:`~lockgate.serve.inference.
InferenceService` then decodes, routes, runs and encodes that body exactly as it does a REST
request's, and :func:`infer_response` turns its answer back into a ``ModelInferResponse``.

Answers come back the way the request came: ``raw_output_contents`` for a request with raw
contents, typed ``contents`` for a typed request (raw when an output's datatype has no typed
field, FP16 or BF16: the protocol does not allow mixing the two in one answer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from lockgate.errors import InvalidInputError, ServeError
from lockgate.serve.grpc.predict_v2_pb2 import (
    InferParameter,
    InferTensorContents,
    ModelInferRequest,
    ModelInferResponse,
)
from lockgate.serve.oip import DATATYPES, MAX_DIMS

__all__ = ["TYPED_FIELDS", "InferBody", "body_size", "infer_body", "infer_response"]

TYPED_FIELDS: Mapping[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The ``InferTensorContents`` field of each datatype that has one (FP16 and BF16 have none)."""

# the numpy dtype of each contents field as protobuf holds it
_FIELD_DTYPES: Mapping[str, np.dtype[Any]] = {
    "bool_contents": np.dtype(np.bool_), "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64), "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64), "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}


_MOST_ELEMENTS = 1 << 40


@dataclass(frozen=True, slots=True)
class InferBody:
    """An infer request as a binary tensor body: ``parts`` (the JSON header, then each input's
    data) add up to ``size`` bytes, the header is the first ``header`` of them; ``raw`` says
    the request came with raw contents (its answer goes back raw)."""

    parts: tuple[bytes, ...]
    header: int
    size: int
    raw: bool

    def join(self) -> bytes:
        return b"".join(self.parts)


def _parameter(name: str, p: InferParameter) -> Any:
    kind = p.WhichOneof("parameter_choice")
    if kind is None:
        raise InvalidInputError(f"parameter {name[:64]!r} has no value")
    return getattr(p, kind)


def _parameters(params: Mapping[str, InferParameter]) -> dict[str, Any]:
    return {k: _parameter(k, v) for k, v in params.items()} if params else {}


def _typed_data(tensor: ModelInferRequest.InferInputTensor) -> bytes:
    """One input's typed ``contents`` laid out as binary tensor data (little-endian; BOOL one
    byte per element; BYTES each element a 4-byte length and its bytes)."""
    name, datatype = tensor.name, tensor.datatype
    field = TYPED_FIELDS.get(datatype)
    if field is None:
        if datatype in DATATYPES or datatype == "BF16":
            raise InvalidInputError(
                f"input {name[:64]!r}: {datatype} has no typed contents field",
                hint="send its data in raw_input_contents (tritonclient.grpc does)")
        raise InvalidInputError(f"input {name[:64]!r}: unknown datatype {datatype[:40]!r}",
                                hint=f"use one of {', '.join(DATATYPES)}")
    values = getattr(tensor.contents, field)
    want_n = _elements(tensor.shape)
    if want_n is not None and len(values) != want_n:
        raise InvalidInputError(
            f"input {name[:64]!r}: shape {list(tensor.shape)} needs {want_n} elements, "
            f"contents.{field} holds {len(values)}",
            hint=f"{datatype} data go in contents.{field}")
    if field == "bytes_contents":
        return b"".join(len(b).to_bytes(4, "little") + b for b in values)
    want = DATATYPES[datatype]
    arr = np.asarray(values, dtype=_FIELD_DTYPES[field])
    if want != arr.dtype and want.kind in "iu" and arr.size:
        info = np.iinfo(want)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            raise InvalidInputError(f"input {name[:64]!r}: value {bad} is out of range for "
                                    f"{datatype} [{info.min}, {info.max}]")
    if want.kind == "b":
        return arr.astype(np.uint8).tobytes()
    return arr.astype(want.newbyteorder("<")).tobytes()


def _elements(shape: Sequence[int]) -> int | None:
    """The elements of a shape; None for one the decoder refuses with its own message (too
    many dimensions, a negative one, more elements than any request may carry)."""
    if len(shape) > MAX_DIMS or any(d < 0 for d in shape):
        return None
    n = math.prod(shape)
    return None if n > _MOST_ELEMENTS else n


def _check_raw(i: int, tensor: ModelInferRequest.InferInputTensor, blob: bytes) -> None:
    """Raw data of a fixed-size datatype hold exactly what the shape needs."""
    dt = DATATYPES.get(tensor.datatype)
    n = _elements(tensor.shape)
    if dt is None or dt.kind == "O" or n is None or n * dt.itemsize == len(blob):
        return
    raise InvalidInputError(
        f"input {tensor.name[:64]!r}: {tensor.datatype} shape {list(tensor.shape)} needs "
        f"{n * dt.itemsize} bytes, raw_input_contents[{i}] holds {len(blob)}")


def _input_header(tensor: ModelInferRequest.InferInputTensor, size: int) -> dict[str, Any]:
    params = _parameters(tensor.parameters)
    params["binary_data_size"] = size
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
            "parameters": params}


def body_size(request: ModelInferRequest) -> int:
    """About the size of the request's binary tensor body, read without building it (what it
    reserves of the decode budget before its typed contents are laid out)."""
    raw = request.raw_input_contents
    total = 256 * len(request.inputs)  # the JSON header, about
    if raw:
        return total + sum(map(len, raw))
    for tensor in request.inputs:
        field = TYPED_FIELDS.get(tensor.datatype)
        if field == "bytes_contents":
            total += sum(len(b) + 4 for b in tensor.contents.bytes_contents)
        elif field is not None:
            total += len(getattr(tensor.contents, field)) * DATATYPES[tensor.datatype].itemsize
    return total


def infer_body(request: ModelInferRequest) -> InferBody:
    """The request as a binary tensor body; InvalidInputError for raw and typed contents
    mixed, raw contents that do not match the inputs, or typed contents the datatype has no
    field for. Everything else (shapes, datatypes, sizes, names) the decoder checks."""
    inputs = request.inputs
    raw: Sequence[bytes] = request.raw_input_contents
    if raw:
        if len(raw) != len(inputs):
            raise InvalidInputError(
                f"raw_input_contents holds {len(raw)} tensors for {len(inputs)} inputs",
                hint="give one raw_input_contents entry per input, in order")
        for tensor in inputs:
            if tensor.HasField("contents"):
                raise InvalidInputError(
                    f"input {tensor.name[:64]!r} has contents although the request carries "
                    "raw_input_contents", hint="send every input raw, or every input typed")
        for i, (tensor, blob) in enumerate(zip(inputs, raw, strict=True)):
            _check_raw(i, tensor, blob)
        data = list(raw)
    else:
        data = [_typed_data(t) for t in inputs]
    params = _parameters(request.parameters)
    params["binary_data_output"] = True
    doc: dict[str, Any] = {"inputs": [_input_header(t, len(d)) for t, d in zip(inputs, data,
                                                                              strict=True)],
                           "parameters": params}
    if request.id:
        doc["id"] = request.id
    if request.outputs:
        doc["outputs"] = [{"name": o.name, "parameters": {"binary_data": True}}
                          for o in request.outputs]
    header = orjson.dumps(doc)
    return InferBody((header, *data), len(header), len(header) + sum(map(len, data)),
                     bool(raw))


def _bytes_items(blob: bytes) -> list[bytes]:
    items, pos = [], 0
    while pos < len(blob):
        n = int.from_bytes(blob[pos:pos + 4], "little")
        items.append(blob[pos + 4:pos + 4 + n])
        pos += 4 + n
    return items


def _fill_typed(contents: InferTensorContents, datatype: str, blob: bytes) -> None:
    field = TYPED_FIELDS[datatype]
    target = getattr(contents, field)
    if field == "bytes_contents":
        target.extend(_bytes_items(blob))
        return
    dt = DATATYPES[datatype]
    arr = np.frombuffer(blob, dtype=np.uint8 if dt.kind == "b" else dt.newbyteorder("<"))
    target.extend(arr.astype(_FIELD_DTYPES[field]).tolist())


def _output_blobs(doc: Mapping[str, Any], body: bytes, header: int) -> list[bytes]:
    """Each output's binary data, cut from the answer after its JSON header."""
    blobs, pos = [], header
    for out in doc["outputs"]:
        params = out.get("parameters") or {}
        size = params.get("binary_data_size")
        if not isinstance(size, int):
            raise ServeError(f"output {out.get('name')!r} came back without binary data")
        blobs.append(body[pos:pos + size])
        pos += size
    return blobs


def infer_response(body: bytes, header: int | None, *, raw: bool) -> ModelInferResponse:
    """The ``ModelInferResponse`` of a 200 answer (its JSON header, then each output's binary
    data); ``raw``: the request came raw, so the answer goes back raw."""
    if header is None:
        raise ServeError("the answer carries no binary tensor data")
    doc = orjson.loads(body[:header])
    blobs = _output_blobs(doc, body, header)
    response = ModelInferResponse(model_name=doc.get("model_name", ""),
                                  model_version=doc.get("model_version", ""),
                                  id=doc.get("id", ""))
    typed = not raw and all(o["datatype"] in TYPED_FIELDS for o in doc["outputs"])
    for out, blob in zip(doc["outputs"], blobs, strict=True):
        tensor = response.outputs.add(name=out["name"], datatype=out["datatype"],
                                      shape=out["shape"])
        if typed:
            _fill_typed(tensor.contents, out["datatype"], blob)
    if not typed:
        response.raw_output_contents.extend(blobs)
    return response

