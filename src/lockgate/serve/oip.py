"""The Open Inference Protocol v2 (KServe v2 / Triton REST) JSON codec — pure, no I/O.

Turns an infer request body into numpy arrays and numpy results into a response body. Every
problem with a request raises :class:`~lockgate.errors.InvalidInputError` with a message that
names the tensor and says what was expected.

Datatypes (OIP name ↔ numpy dtype)::

    BOOL  bool       UINT8  uint8    INT8  int8     FP16  float16
    BYTES object     UINT16 uint16   INT16 int16    FP32  float32
                     UINT32 uint32   INT32 int32    FP64  float64
                     UINT64 uint64   INT64 int64

``BYTES`` elements travel as JSON strings and arrive as numpy ``object`` arrays of ``str`` (what
ONNX Runtime takes for string tensors). ``data`` may be flat (row-major) or nested; either way it
must hold exactly ``prod(shape)`` elements. Booleans must be JSON ``true``/``false``; integer
tensors take only JSON integers within the type's range; float tensors take numbers.

The binary tensor extension (Triton's ``binary_tensor_data``) is supported both ways: with the
``Inference-Header-Content-Length`` header the body is that many bytes of JSON followed by the
raw data of every input whose ``parameters.binary_data_size`` is set, in order (little-endian;
``BOOL`` one byte per element; ``BYTES`` each element as a 4-byte little-endian length and its
bytes). Outputs asked for with ``parameters.binary_data`` (or every output, with the request's
``parameters.binary_data_output``) come back the same way. FP16 travels best as binary.

Limits, each a 400: a shape of more than :data:`MAX_DIMS` dimensions, a tensor or a request of
more than ``max_elements`` elements (checked from the shapes, before any data is decoded), JSON
nested deeper than :data:`MAX_DEPTH`. Large bodies are decoded lean: a flat numeric ``data``
array is parsed by numpy straight from the body's bytes, never as a Python list of elements;
anything else (nested data, booleans, strings, parameters) goes through orjson.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import orjson

from lockgate.errors import InvalidInputError, ServeError
from lockgate.types import Dim

__all__ = [
    "DATATYPES",
    "DEFAULT_MAX_ELEMENTS",
    "MAX_DEPTH",
    "MAX_DIMS",
    "InferRequest",
    "binary_bytes",
    "decode_tensor",
    "encode_binary_response",
    "encode_response",
    "numpy_dtype",
    "oip_datatype",
    "oip_shape",
    "parse_infer_request",
]

DATATYPES: Mapping[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
"""Every OIP datatype this server carries, with its numpy dtype."""

_BY_DTYPE: dict[np.dtype[Any], str] = {dt: name for name, dt in DATATYPES.items()}
_BY_NUMPY: dict[str, str] = {str(dt): name for name, dt in DATATYPES.items()}
_BY_NUMPY["bfloat16"] = "BF16"  # shown in metadata; ONNX Runtime's numpy API cannot carry it
_BY_NUMPY["str"] = "BYTES"

MAX_DIMS = 32
"""Dimensions a tensor may have (numpy's own limit is 64)."""
MAX_DEPTH = 1024
"""How deep a request's JSON may nest (objects and arrays; orjson's own limit)."""
DEFAULT_MAX_ELEMENTS = 1 << 26
"""Elements a request may carry, all inputs together (64 Mi)."""
LEAN_FROM = 1 << 20
"""Bodies of at least this many bytes have their flat numeric data parsed without lists."""

# numpy kinds of the array json/numpy infer from the data, accepted per target kind
_ACCEPTED_KINDS: dict[str, str] = {"b": "b", "i": "iu", "u": "iu", "f": "iuf", "O": ""}


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of an OIP datatype name; unknown names raise InvalidInputError."""
    try:
        return DATATYPES[datatype]
    except (KeyError, TypeError):
        raise InvalidInputError(
            f"unknown datatype {datatype!r}", hint=f"use one of {', '.join(DATATYPES)}"
        ) from None


def oip_datatype(dtype: np.dtype[Any] | str) -> str:
    """The OIP datatype name of a numpy dtype (or dtype name, as in a TensorSpec)."""
    if not isinstance(dtype, str) and dtype in _BY_DTYPE:  # the fast path: str(dtype) is slow
        return _BY_DTYPE[dtype]
    key = dtype if isinstance(dtype, str) else str(dtype)
    try:
        return _BY_NUMPY[key]
    except KeyError:
        if not isinstance(dtype, str) and dtype.kind in "SU":
            return "BYTES"
        raise ServeError(f"dtype {key} has no Open Inference Protocol datatype") from None


def oip_shape(shape: Sequence[Dim]) -> list[int]:
    """A signature shape for metadata: fixed sizes as they are, symbolic dims as ``-1``."""
    return [d if isinstance(d, int) else -1 for d in shape]


@dataclass(slots=True)
class InferRequest:
    """A decoded infer request. ``outputs`` is None when the request selects no outputs;
    ``binary_outputs`` names outputs to send as binary, ``binary_all`` says all of them.
    Treat it as read-only (not frozen only because a frozen dataclass costs ~3 µs a request
    to build)."""

    inputs: dict[str, np.ndarray[Any, Any]]
    id: str | None = None
    outputs: tuple[str, ...] | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    binary_outputs: frozenset[str] = frozenset()
    binary_all: bool = False

    def wants_binary(self, name: str) -> bool:
        return self.binary_all or name in self.binary_outputs


class _Binary:
    """The binary part of a request, read in order (views of the body: each input is copied
    once, into its own array)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = memoryview(data), 0

    def take(self, name: str, size: int) -> memoryview:
        if size < 0 or self.pos + size > len(self.data):
            raise InvalidInputError(
                f"input {name!r}: binary_data_size {size} runs past the end of the body")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk


def _from_binary(name: str, datatype: str, dt: np.dtype[Any], raw: memoryview,
                 shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    if dt.kind == "O":
        items: list[str] = []
        pos, end, want_items = 0, len(raw), math.prod(shape)
        while pos < end:
            if len(items) >= want_items:
                raise InvalidInputError(f"input {name!r}: shape {list(shape)} needs "
                                        f"{want_items} BYTES elements, the data has more")
            if pos + 4 > end:
                raise InvalidInputError(f"input {name!r}: truncated BYTES element length")
            n = int.from_bytes(raw[pos:pos + 4], "little")
            if pos + 4 + n > end:
                raise InvalidInputError(f"input {name!r}: truncated BYTES element")
            items.append(bytes(raw[pos + 4:pos + 4 + n]).decode("utf-8", "replace"))
            pos += 4 + n
        return np.array(items, dtype=object)
    want = math.prod(shape) * dt.itemsize
    if len(raw) != want:
        raise InvalidInputError(f"input {name!r}: {datatype} shape {list(shape)} needs "
                                f"{want} bytes, binary_data_size gives {len(raw)}")
    if dt.kind == "b":
        return np.frombuffer(raw, dtype=np.uint8).astype(np.bool_)
    return np.frombuffer(raw, dtype=dt.newbyteorder("<")).astype(dt, copy=True)


_DATA_KEY = re.compile(rb'"data"\s*:\s*\[')
_NUMBER_BYTES = b"0123456789 \t\r\n,.eE+-"
_CHUNK = 1 << 20


class _Lifted:
    """Flat numeric ``data`` arrays cut out of a large body before orjson reads the rest: each
    is replaced by a string token (with a per-request nonce) and parsed by numpy once the
    tensor's datatype is known, so no Python object is made per element."""

    def __init__(self) -> None:
        self.prefix = f"\0lg{secrets.token_hex(8)}:"
        self.spans: dict[str, bytes] = {}

    def lift(self, body: bytes) -> bytes:
        pieces: list[bytes] = []
        pos = 0
        for m in _DATA_KEY.finditer(body):
            start = m.end()
            if start <= pos:
                continue
            end = body.find(b"]", start)
            if end < 0:
                break
            inner = body[start:end]
            if inner.translate(None, _NUMBER_BYTES):
                continue  # nested, booleans, strings, NaN: orjson reads it
            key = f"{self.prefix}{len(self.spans)}"
            self.spans[key] = inner
            pieces += (body[pos:start - 1], b'"\\u0000', key[1:].encode(), b'"')
            pos = end + 1
        if not self.spans:
            return body
        pieces.append(body[pos:])
        return b"".join(pieces)

    def take(self, data: object) -> bytes | None:
        """The lifted text of a tensor's data (once), or None when it was not lifted."""
        if type(data) is str and data.startswith(self.prefix):
            return self.spans.pop(data, None)
        return None


def _chunked(name: str, datatype: str, text: bytes, dt: np.dtype[Any],
             want: int) -> np.ndarray[Any, Any]:
    """Flat numeric data (the text between a ``data`` array's brackets) read a slice of about
    :data:`_CHUNK` bytes at a time into one preallocated array of the ``want`` elements the
    shape needs: the same checks as the plain way, but never more than a slice's elements as
    Python objects (and the GIL free between slices)."""
    if not text.strip():
        return np.empty(0, dtype=dt)
    found = text.count(b",") + 1
    if found != want:
        raise InvalidInputError(
            f"input {name!r}: the shape needs {want} elements, data has {found}")
    out = np.empty(found, dtype=dt)
    pos = filled = 0
    while pos < len(text):
        end = text.find(b",", pos + _CHUNK)
        if end < 0:
            end = len(text)
        part = _numeric(name, datatype, _loads(b"[" + text[pos:end] + b"]"), dt)
        if part.ndim != 1 or filled + part.size > out.size:
            raise InvalidInputError(f"input {name!r}: data is not a flat list of numbers")
        out[filled:filled + part.size] = part
        filled += part.size
        pos = end + 1
    if filled != out.size:
        raise InvalidInputError(f"input {name!r}: data is not a flat list of numbers")
    return out


def binary_bytes(arr: np.ndarray[Any, Any]) -> bytes:
    """One output's binary representation (see the module docstring)."""
    if arr.dtype.kind in "OSU":
        parts = []
        for x in arr.ravel().tolist():
            b = x if isinstance(x, bytes) else str(x).encode("utf-8")
            parts.append(len(b).to_bytes(4, "little") + b)
        return b"".join(parts)
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8).tobytes()
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def _shape(name: str, raw: object) -> tuple[int, ...]:
    if isinstance(raw, list):
        if len(raw) > MAX_DIMS:
            raise InvalidInputError(f"input {name!r}: shape has {len(raw)} dimensions, at most "
                                    f"{MAX_DIMS} are supported")
        for d in raw:
            if type(d) is not int or d < 0:  # type(d) is int: JSON true/false are not sizes
                break
        else:
            return tuple(raw)
    raise InvalidInputError(
        f"input {name!r}: shape must be a list of non-negative integers, got {raw!r:.200}"
    )


def _out_of_range(name: str, datatype: str, value: int, info: np.iinfo[Any]) -> InvalidInputError:
    return InvalidInputError(
        f"input {name!r}: value {value} is out of range for {datatype} [{info.min}, {info.max}]"
    )


def _check_ints(name: str, datatype: str, arr: np.ndarray[Any, Any], dt: np.dtype[Any]) -> None:
    info = np.iinfo(dt)
    lo, hi = arr.min(), arr.max()
    if lo < info.min:
        raise _out_of_range(name, datatype, int(lo), info)
    if hi > info.max:
        raise _out_of_range(name, datatype, int(hi), info)


def _numeric(name: str, datatype: str, data: Any, dt: np.dtype[Any]) -> np.ndarray[Any, Any]:
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, RuntimeError):  # RuntimeError: nested past numpy's dims
        raise InvalidInputError(
            f"input {name!r}: data is ragged; nested lists must be regular"
        ) from None
    if arr.ndim > MAX_DIMS:
        _too_deep(name, arr)
    if arr.size == 0:
        return arr.astype(dt)
    if dt.kind in "iu" and arr.dtype.kind in "fO":
        # numpy turns a mix of ints beyond int64 and other ints into float64 (or object):
        # check such data element by element rather than lose precision.
        return _exact_ints(name, datatype, data, dt)
    if arr.dtype.kind not in _ACCEPTED_KINDS[dt.kind]:
        want = {"b": "true/false", "i": "integers", "u": "integers", "f": "numbers"}[dt.kind]
        raise InvalidInputError(
            f"input {name!r}: {datatype} data must be JSON {want}, got elements of type "
            f"{_describe(arr)}"
        )
    if arr.dtype == dt:
        return arr
    if dt.kind in "iu":
        _check_ints(name, datatype, arr, dt)
    with np.errstate(over="ignore"):  # FP16/FP32 overflow becomes inf, as in any float cast
        return arr.astype(dt)


def _objects(name: str, data: Any) -> np.ndarray[Any, Any]:
    """JSON data as a regular numpy array of Python objects (a 400 when it is ragged or nested
    deeper than :data:`MAX_DIMS`)."""
    try:
        arr = np.asarray(data, dtype=object)
    except (ValueError, TypeError, RuntimeError):
        raise InvalidInputError(
            f"input {name!r}: data is ragged; nested lists must be regular"
        ) from None
    if arr.ndim > MAX_DIMS:
        _too_deep(name, arr)
    return arr


def _exact_ints(name: str, datatype: str, data: Any, dt: np.dtype[Any]) -> np.ndarray[Any, Any]:
    arr = _objects(name, data)
    for x in arr.flat:
        if type(x) is not int:
            if isinstance(x, list):
                raise InvalidInputError(
                    f"input {name!r}: data is ragged; nested lists must be regular"
                )
            raise InvalidInputError(
                f"input {name!r}: {datatype} data must be JSON integers, got elements of type "
                f"{_json_type(x)}"
            )
    info = np.iinfo(dt)
    for x in arr.flat:
        if not info.min <= x <= info.max:
            raise _out_of_range(name, datatype, x, info)
    return arr.astype(dt)


def _too_deep(name: str, arr: np.ndarray[Any, Any]) -> NoReturn:
    raise InvalidInputError(f"input {name!r}: data nests {arr.ndim} lists deep, at most "
                            f"{MAX_DIMS} are supported")


def _brief(x: object) -> str:
    """A value for an error message: scalars shown (cut short), containers only named (their
    repr could be huge, or nested too deep to write)."""
    if isinstance(x, (list, dict)):
        return f"a JSON {'array' if isinstance(x, list) else 'object'}"
    return f"{x!r:.80}"


def _json_type(x: object) -> str:
    if x is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "float", str: "string"}.get(
        type(x), type(x).__name__
    )


def _describe(arr: np.ndarray[Any, Any]) -> str:
    kinds = {"b": "boolean", "i": "integer", "u": "integer", "f": "float", "U": "string"}
    if arr.dtype.kind in kinds:
        return kinds[arr.dtype.kind]
    return "/".join(sorted({_json_type(x) for x in arr.flat}))


def _strings(name: str, data: Any) -> np.ndarray[Any, Any]:
    if isinstance(data, str):
        data = [data]
    arr = _objects(name, data)
    for x in arr.flat:
        if not isinstance(x, str):
            if isinstance(x, list):
                raise InvalidInputError(
                    f"input {name!r}: data is ragged; nested lists must be regular"
                )
            raise InvalidInputError(
                f"input {name!r}: BYTES data must be JSON strings, got {_json_type(x)}"
            )
    return arr


def decode_tensor(tensor: object, binary: _Binary | None = None, *,
                  max_elements: int = DEFAULT_MAX_ELEMENTS,
                  lifted: _Lifted | None = None) -> tuple[str, np.ndarray[Any, Any]]:
    """One request tensor ``{name, shape, datatype, data}`` as ``(name, array)``; its data
    come from ``binary`` when ``parameters.binary_data_size`` says so. A shape of more than
    ``max_elements`` elements is refused before any data is read."""
    if not isinstance(tensor, dict):
        raise InvalidInputError(f"each input must be a JSON object, got {_brief(tensor)}")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError("each input needs a non-empty string 'name'")
    if len(name) > 256:
        raise InvalidInputError(f"input name {name[:64]!r}... is longer than 256 characters")
    params = tensor.get("parameters")
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    for key in ("shape", "datatype") if size is not None else ("shape", "datatype", "data"):
        if key not in tensor:
            raise InvalidInputError(f"input {name!r} has no {key!r}")
    shape = _shape(name, tensor["shape"])
    datatype = tensor["datatype"]
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInputError(
            f"input {name!r}: unknown datatype {datatype!r:.40}",
            hint=f"use one of {', '.join(DATATYPES)}",
        )
    dt = DATATYPES[datatype]
    want = math.prod(shape)
    if want > max_elements or (not want and math.prod(d for d in shape if d) > max(
            max_elements, 1 << 31)):  # an empty tensor whose other dims numpy cannot index
        raise InvalidInputError(f"input {name!r}: shape {list(shape)} has more elements than "
                                f"the {max_elements} a request may carry")
    if size is not None:
        if binary is None:
            raise InvalidInputError(
                f"input {name!r}: binary_data_size needs the Inference-Header-Content-Length "
                "header")
        if not isinstance(size, int) or isinstance(size, bool):
            raise InvalidInputError(f"input {name!r}: binary_data_size must be an integer")
        arr = _from_binary(name, datatype, dt, binary.take(name, size), shape)
    else:
        data = tensor["data"]
        text = lifted.take(data) if lifted is not None else None
        if text is None:
            arr = _strings(name, data) if dt.kind == "O" else _numeric(name, datatype, data, dt)
        elif dt.kind == "O":  # lifted data are numbers, never strings
            raise InvalidInputError(f"input {name!r}: BYTES data must be JSON strings, got "
                                    "numbers")
        else:
            arr = _chunked(name, datatype, text, dt, want)
    if arr.size != want:
        raise InvalidInputError(
            f"input {name!r}: shape {list(shape)} needs {want} elements, data has {arr.size}"
        )
    if arr.shape != shape:
        try:
            arr = arr.reshape(shape)
        except ValueError as exc:  # e.g. dims numpy cannot index, around an empty one
            raise InvalidInputError(f"input {name!r}: shape {list(shape)}: {exc}") from None
    return name, arr


def _output_names(raw: object) -> tuple[tuple[str, ...] | None, frozenset[str]]:
    if raw is None:
        return None, frozenset()
    if not isinstance(raw, list):
        raise InvalidInputError("'outputs' must be a list of {\"name\": ...} objects")
    names: list[str] = []
    binary: set[str] = set()
    for item in raw:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidInputError(
                f"each requested output needs a non-empty string 'name', got {_brief(item)}"
            )
        params = item.get("parameters")
        if isinstance(params, dict) and params.get("binary_data"):
            binary.add(name)
        if name in names:
            raise InvalidInputError(f"output {name!r} is requested twice")
        names.append(name)
    return tuple(names) or None, frozenset(binary)


def _loads(body: bytes | str) -> Any:
    """JSON, by orjson; NaN and Infinity (which Triton's clients may send) by the stdlib.
    Nesting deeper than :data:`MAX_DEPTH` is refused."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower():
            raise InvalidInputError(f"request body nests deeper than {MAX_DEPTH} levels"
                                    ) from None
        try:
            doc = json.loads(body)
            # the stdlib, unlike orjson, reads lone surrogates ("\udfff"), which no answer
            # or error message could then carry
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
            return doc
        except UnicodeEncodeError:
            raise InvalidInputError("request body holds a string that is not valid Unicode "
                                    "(a lone surrogate)") from None
        except RecursionError:
            raise InvalidInputError(f"request body nests deeper than {MAX_DEPTH} levels"
                                    ) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"request body is not valid JSON: {exc}") from None


PLAIN_COST = 24
"""Bytes of memory per byte of JSON read the plain way (Python objects per element), at most."""
LEAN_COST = 4
"""Bytes of memory per byte of body read the lean way (flat numeric data, binary data)."""


def parse_infer_request(body: bytes | str, header_length: int | None = None, *,
                        max_elements: int = DEFAULT_MAX_ELEMENTS,
                        reserve: Callable[[int], None] | None = None) -> InferRequest:
    """Decode and check an infer request body: JSON text, or with ``header_length`` (the
    ``Inference-Header-Content-Length`` header) JSON followed by binary tensor data. The
    inputs together may carry at most ``max_elements`` elements.

    A caller that bounds memory has reserved :data:`LEAN_COST` bytes per body byte; when a
    large body's JSON must be read the plain way, ``reserve(n)`` is asked for the ``n`` bytes
    more that costs (it raises to refuse)."""
    binary = None
    if header_length is not None:
        raw = body.encode() if isinstance(body, str) else body
        if not 0 < header_length <= len(raw):
            raise InvalidInputError(
                f"Inference-Header-Content-Length {header_length} does not fit the "
                f"{len(raw)}-byte body")
        body, binary = raw[:header_length], _Binary(raw[header_length:])
    if isinstance(body, bytes) and len(body) >= LEAN_FROM:
        lifted = _Lifted()
        lean_body = lifted.lift(body)
        if lifted.spans:
            try:
                return _request(_loads(lean_body), binary, max_elements, lifted)
            except _Unclaimed:  # a "data" key elsewhere than in an input: read it plainly
                if binary is not None:
                    binary.pos = 0
    if reserve is not None:  # read the plain way: Python objects per element
        reserve(len(body) * (PLAIN_COST - LEAN_COST))
    return _request(_loads(body), binary, max_elements, None)


class _Unclaimed(Exception):
    """Data lifted out of a body that no input claimed."""


def _request(doc: Any, binary: _Binary | None, max_elements: int,
             lifted: _Lifted | None) -> InferRequest:
    if not isinstance(doc, dict):
        raise InvalidInputError("request body must be a JSON object")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InvalidInputError(f"'id' must be a string, got {_brief(rid)}")
    params = doc.get("parameters")
    if params is None:
        params = {}
    elif not isinstance(params, dict):
        raise InvalidInputError("'parameters' must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInputError("request needs 'inputs': a non-empty list of tensors")
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    left = max_elements
    for tensor in raw_inputs:
        name, arr = decode_tensor(tensor, binary, max_elements=left, lifted=lifted)
        if name in inputs:
            raise InvalidInputError(f"input {name!r} is given twice")
        inputs[name] = arr
        left -= arr.size
    if binary is not None and binary.pos != len(binary.data):
        raise InvalidInputError(f"{len(binary.data) - binary.pos} bytes of binary data are "
                                "not claimed by any input's binary_data_size")
    if lifted is not None and lifted.spans:
        raise _Unclaimed
    outputs, binary_outputs = _output_names(doc.get("outputs"))
    return InferRequest(
        inputs=inputs, id=rid, outputs=outputs, parameters=params,
        binary_outputs=binary_outputs, binary_all=bool(params.get("binary_data_output")),
    )


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


def _dumps(doc: Mapping[str, Any]) -> bytes:
    """Compact JSON; numpy arrays (finite) by orjson, anything non-finite by the stdlib, which
    writes NaN and Infinity as Python's and Triton's JSON do."""
    if not any(isinstance(t.get("data"), _NonFinite) for t in doc.get("outputs", ())):
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
    doc["outputs"] = [
        {
            "name": name,
            "datatype": oip_datatype(arr.dtype),
            "shape": list(arr.shape),
            "data": _data(arr),
        }
        for name, arr in outputs.items()
    ]
    return _dumps(doc)
