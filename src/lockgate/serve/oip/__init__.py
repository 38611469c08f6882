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

Modules, by job: :mod:`~lockgate.serve.oip.datatypes` (OIP names and numpy dtypes, metadata
shapes, the limits), :mod:`~lockgate.serve.oip.decode` (a request body to an
:class:`InferRequest`), :mod:`~lockgate.serve.oip.elements` (JSON data to checked numpy
arrays), :mod:`~lockgate.serve.oip.lean` (the flat numeric data of large bodies, read without
lists) and :mod:`~lockgate.serve.oip.encode` (results to a response body).
"""

from lockgate.serve.oip.datatypes import (
    DATATYPES,
    DEFAULT_MAX_ELEMENTS,
    MAX_DEPTH,
    MAX_DIMS,
    numpy_dtype,
    oip_datatype,
    oip_shape,
)
from lockgate.serve.oip.decode import InferRequest, decode_tensor, parse_infer_request
from lockgate.serve.oip.encode import binary_bytes, encode_binary_response, encode_response
from lockgate.serve.oip.lean import LEAN_COST, LEAN_FROM, PLAIN_COST

__all__ = [
    "DATATYPES",
    "DEFAULT_MAX_ELEMENTS",
    "LEAN_COST",
    "LEAN_FROM",
    "MAX_DEPTH",
    "MAX_DIMS",
    "PLAIN_COST",
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
