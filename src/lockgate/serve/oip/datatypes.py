"""OIP datatype names and their numpy dtypes, the shapes metadata shows, and the limits on a
request's tensors (see :mod:`lockgate.serve.oip`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lockgate.errors import InvalidInputError, ServeError
from lockgate.types import Dim

__all__ = [
    "DATATYPES",
    "DEFAULT_MAX_ELEMENTS",
    "MAX_DEPTH",
    "MAX_DIMS",
    "numpy_dtype",
    "oip_datatype",
    "oip_shape",
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
