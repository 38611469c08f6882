"""Facts read off an ONNX model: signature, opset, IR version, producer."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from lockgate.types import Dim, Signature, TensorSpec

__all__ = ["default_opset", "numpy_dtype_name", "signature_of"]

_ELEM_TO_NUMPY: dict[int, str] = {
    TensorProto.FLOAT: "float32",
    TensorProto.DOUBLE: "float64",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.INT8: "int8",
    TensorProto.INT16: "int16",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
    TensorProto.UINT8: "uint8",
    TensorProto.UINT16: "uint16",
    TensorProto.UINT32: "uint32",
    TensorProto.UINT64: "uint64",
    TensorProto.BOOL: "bool",
    TensorProto.STRING: "object",
}


def numpy_dtype_name(elem_type: int) -> str:
    return _ELEM_TO_NUMPY.get(elem_type, f"onnx:{elem_type}")


def _spec(value: onnx.ValueInfoProto, index: int) -> TensorSpec:
    tt = value.type.tensor_type
    dims: list[Dim] = []
    for axis, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(str(d.dim_param))
        else:
            dims.append(f"{value.name or index}_d{axis}")
    return TensorSpec(value.name, numpy_dtype_name(tt.elem_type), tuple(dims))


def signature_of(model: onnx.ModelProto) -> Signature:
    """Graph inputs (less initializers) and outputs, with symbolic dims kept as names."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    return Signature(
        inputs=tuple(_spec(v, i) for i, v in enumerate(inputs)),
        outputs=tuple(_spec(v, i) for i, v in enumerate(model.graph.output)),
    )


def default_opset(model: onnx.ModelProto) -> int:
    """The opset of the default ("" or "ai.onnx") domain."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0
