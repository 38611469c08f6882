"""An infer request body — JSON, or JSON followed by binary tensor data — decoded and checked
into an :class:`InferRequest` (see :mod:`lockgate.serve.oip`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lockgate.errors import InvalidInputError
from lockgate.serve.oip.datatypes import DATATYPES, DEFAULT_MAX_ELEMENTS, MAX_DIMS
from lockgate.serve.oip.elements import loads, numeric, strings
from lockgate.serve.oip.lean import LEAN_COST, LEAN_FROM, PLAIN_COST, Lifted, chunked

__all__ = ["InferRequest", "decode_tensor", "parse_infer_request"]


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


def _brief(x: object) -> str:
    """A value for an error message: scalars shown (cut short), containers only named (their
    repr could be huge, or nested too deep to write)."""
    if isinstance(x, (list, dict)):
        return f"a JSON {'array' if isinstance(x, list) else 'object'}"
    return f"{x!r:.80}"


def decode_tensor(tensor: object, binary: _Binary | None = None, *,
                  max_elements: int = DEFAULT_MAX_ELEMENTS,
                  lifted: Lifted | None = None) -> tuple[str, np.ndarray[Any, Any]]:
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
            arr = strings(name, data) if dt.kind == "O" else numeric(name, datatype, data, dt)
        elif dt.kind == "O":  # lifted data are numbers, never strings
            raise InvalidInputError(f"input {name!r}: BYTES data must be JSON strings, got "
                                    "numbers")
        else:
            arr = chunked(name, datatype, text, dt, want)
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
        lifted = Lifted()
        lean_body = lifted.lift(body)
        if lifted.spans:
            try:
                return _request(loads(lean_body), binary, max_elements, lifted)
            except _Unclaimed:  # a "data" key elsewhere than in an input: read it plainly
                if binary is not None:
                    binary.pos = 0
    if reserve is not None:  # read the plain way: Python objects per element
        reserve(len(body) * (PLAIN_COST - LEAN_COST))
    return _request(loads(body), binary, max_elements, None)


class _Unclaimed(Exception):
    """Data lifted out of a body that no input claimed."""


def _request(doc: Any, binary: _Binary | None, max_elements: int,
             lifted: Lifted | None) -> InferRequest:
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
