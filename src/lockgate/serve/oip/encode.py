"""Model results to an infer response body: JSON, or with the binary tensor extension a JSON
header followed by the raw data of the outputs asked for as binary (see
:mod:`lockgate.serve.oip`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from lockgate.serve.oip.datatypes import oip_datatype
from lockgate.serve.oip.decode import InferRequest

__all__ = ["binary_bytes", "encode_binary_response", "encode_response"]


def binary_bytes(arr: np.ndarray[Any, Any]) -> bytes:
    """One output's binary representation (see :mod:`lockgate.serve.oip`)."""
    if arr.dtype.kind in "OSU":
        parts = []
        for x in arr.ravel().tolist():
            b = x if isinstance(x, bytes) else str(x).encode("utf-8")
            parts.append(len(b).to_bytes(4, "little") + b)
        return b"".join(parts)
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8).tobytes()
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


_FAST_KINDS = frozenset("fiub")


class _NonFinite(list[Any]):
    """Tensor data with NaN or an infinity: written by the stdlib, as ``NaN``/``Infinity``."""


def _data(arr: np.ndarray[Any, Any]) -> Any:
    """The flat data of a tensor for JSON: the array itself where orjson writes it natively
    (finite numbers), else a list."""
    if arr.dtype.kind in _FAST_KINDS and arr.dtype.isnative:
        flat = np.ascontiguousarray(arr.ravel())
        if arr.dtype.kind != "f" or bool(np.isfinite(flat).all()):
            return flat
        return _NonFinite(flat.tolist())
    flat_list: list[Any] = arr.ravel().tolist()
    if arr.dtype.kind in "OS":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in flat_list]
    return flat_list


def _dumps(doc: Mapping[str, Any], finite: bool | None = None) -> bytes:
    """Compact JSON; numpy arrays (finite) by orjson, anything non-finite by the stdlib, which
    writes NaN and Infinity as Python's and Triton's JSON do. ``finite``: whether the caller
    knows no output's data is :class:`_NonFinite` (None: look)."""
    if finite is None:
        finite = not any(isinstance(t.get("data"), _NonFinite) for t in doc.get("outputs", ()))
    if finite:
        try:
            return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:  # something orjson does not write natively
            pass
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False,
                      default=lambda a: a.tolist()).encode()


def encode_binary_response(
    model_name: str,
    model_version: str,
    outputs: Mapping[str, np.ndarray[Any, Any]],
    request: InferRequest,
) -> tuple[bytes, int | None]:
    """The response body and, when some outputs travel as binary, the length of its JSON
    header (for ``Inference-Header-Content-Length``)."""
    if not request.binary_all and not request.binary_outputs:
        return encode_response(model_name, model_version, outputs,
                               request_id=request.id), None
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    tensors, blobs = [], []
    for name, arr in outputs.items():
        entry: dict[str, Any] = {"name": name, "datatype": oip_datatype(arr.dtype),
                                 "shape": list(arr.shape)}
        if request.wants_binary(name):
            blob = binary_bytes(arr)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _data(arr)
        tensors.append(entry)
    doc["outputs"] = tensors
    head = _dumps(doc)
    return head + b"".join(blobs), len(head)


def encode_response(
    model_name: str,
    model_version: str,
    outputs: Mapping[str, np.ndarray[Any, Any]],
    *,
    request_id: str | None = None,
) -> bytes:
    """The response body: ``{model_name, model_version, [id], outputs}``; ``data`` is flat.

    Non-finite floats are written as ``NaN``/``Infinity``, as Python's and Triton's JSON do.
    """
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    tensors = []
    finite = True
    for name, arr in outputs.items():
        data = _data(arr)
        if type(data) is _NonFinite:
            finite = False
        tensors.append({"name": name, "datatype": oip_datatype(arr.dtype),
                        "shape": list(arr.shape), "data": data})
    doc["outputs"] = tensors
    return _dumps(doc, finite)
