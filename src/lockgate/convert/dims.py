"""The dimensions a registration leaves free (``dynamic``), checked once for every converter.

A spec names axes of inputs: ``{"input_ids": {0: "batch", 1: "sequence"}}``. Axes with the same
name are the same size. :func:`resolve_dynamic` checks a spec against the model's inputs and the
sample's shapes and fills in the default for the inputs it leaves out (dim 0 as ``"batch"``);
:func:`name_dims` gives the exported graph's symbolic dims the spec's names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import onnx

from lockgate.convert._common import BATCH
from lockgate.convert.base import Dynamic
from lockgate.errors import ConversionError, InvalidInputError

__all__ = ["Axes", "describe", "dim_names", "name_dims", "name_output_dims", "resolve_dynamic"]

Axes = dict[int, str]
"""The free axes of one input and their names, axis numbers counted from 0."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPEC_HINT = ('dynamic maps input names to {axis: name}, e.g. {"input_ids": {0: "batch", '
              '1: "sequence"}}')


def resolve_dynamic(dynamic: Dynamic | None, names: Sequence[str],
                    shapes: Sequence[tuple[int, ...]]) -> list[Axes]:
    """The free axes of each input, in input order.

    Inputs the spec names get exactly the axes it gives; the others keep the default, dim 0
    as ``"batch"`` when their dim 0 has the batch's size. ``None`` is the default for every
    input. Raises InvalidInputError for an unknown input, an axis out of range, a name that is
    not an identifier, or one name given to axes of different sizes in the sample.
    """
    spec = _check_spec(dynamic, names, shapes) if dynamic is not None else {}
    sizes = _sizes(spec, names, shapes)
    resolved: list[Axes] = []
    for name, shape in zip(names, shapes, strict=True):
        if name in spec:
            resolved.append(spec[name])
        elif shape and sizes.setdefault(BATCH, shape[0]) == shape[0]:
            resolved.append({0: BATCH})
        else:
            resolved.append({})
    return resolved


def dim_names(resolved: Sequence[Axes]) -> list[str]:
    """Every name in ``resolved``, once, in the order they first appear."""
    return list(dict.fromkeys(n for axes in resolved for n in axes.values()))


def describe(names: Sequence[str], resolved: Sequence[Axes]) -> str:
    """``input_ids: 0=batch, 1=sequence; attention_mask: …`` for a converter's details."""
    return "; ".join(f"{n}: " + ", ".join(f"{a}={d}" for a, d in axes.items())
                     for n, axes in zip(names, resolved, strict=True) if axes)


def _check_spec(dynamic: object, names: Sequence[str], shapes: Sequence[tuple[int, ...]]
                ) -> dict[str, Axes]:
    if not isinstance(dynamic, Mapping):
        raise InvalidInputError(f"dynamic must be a mapping, got {type(dynamic).__name__}",
                                hint=_SPEC_HINT)
    ranks = {n: len(s) for n, s in zip(names, shapes, strict=True)}
    spec: dict[str, Axes] = {}
    for key, axes in dynamic.items():
        if key not in ranks:
            raise InvalidInputError(
                f"dynamic names the input {key!r}; the model's inputs are "
                f"{', '.join(repr(n) for n in names)}",
                hint="key dynamic by the model's input names")
        if not isinstance(axes, Mapping):
            raise InvalidInputError(f"dynamic[{key!r}] must map axes to names, got "
                                    f"{type(axes).__name__}", hint=_SPEC_HINT)
        spec[key] = _check_axes(key, axes, ranks[key])
    return spec


def _check_axes(key: str, axes: Mapping[object, object], rank: int) -> Axes:
    checked: Axes = {}
    for axis, dim in axes.items():
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise InvalidInputError(f"dynamic[{key!r}]: axis {axis!r} is not an integer",
                                    hint=_SPEC_HINT)
        if not -rank <= axis < rank:
            raise InvalidInputError(
                f"dynamic[{key!r}]: axis {axis} is out of range; {key!r} has {rank} "
                f"axis/axes in the sample",
                hint=f"axes of {key!r} are 0 to {rank - 1}" if rank else
                f"{key!r} is a scalar: leave it out of dynamic")
        if not isinstance(dim, str) or not _NAME.match(dim):
            raise InvalidInputError(
                f"dynamic[{key!r}][{axis}]: {dim!r} is not a dimension name",
                hint="a dimension name is a letter or underscore, then letters, digits or "
                     "underscores (batch, sequence)")
        normal = axis % rank
        if normal in checked:
            raise InvalidInputError(f"dynamic[{key!r}] names axis {normal} twice",
                                    hint="a negative axis counts from the end: give each "
                                         "axis one name")
        checked[normal] = dim
    return dict(sorted(checked.items()))


def _sizes(spec: Mapping[str, Axes], names: Sequence[str], shapes: Sequence[tuple[int, ...]]
           ) -> dict[str, int]:
    """The sample's size of each named dim; one name must have one size."""
    shape_of = dict(zip(names, shapes, strict=True))
    sizes: dict[str, int] = {}
    where: dict[str, str] = {}
    for key, axes in spec.items():
        for axis, dim in axes.items():
            size = shape_of[key][axis]
            if sizes.setdefault(dim, size) != size:
                raise InvalidInputError(
                    f"dynamic names {where[dim]} and {key!r} axis {axis} {dim!r}, but the "
                    f"sample's sizes differ ({sizes[dim]} and {size})",
                    hint="axes with one name are the same size: give them different names, "
                         "or fix the sample")
            where.setdefault(dim, f"{key!r} axis {axis}")
    return sizes


def name_dims(proto: onnx.ModelProto, resolved: Sequence[Axes]) -> onnx.ModelProto:
    """Rename the exporter's symbols at the free axes of the inputs (``s0``, ``unk__3``) to the
    spec's names, everywhere they appear (outputs and intermediate values too).

    Raises ConversionError when the exported graph fixed a free axis: the model's code pins it.
    """
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    if len(inputs) != len(resolved):
        raise ConversionError(f"the exported graph has {len(inputs)} inputs; the sample has "
                              f"{len(resolved)}", hint="pass every input in the sample")
    mapping: dict[str, str] = {}
    for value, axes in zip(inputs, resolved, strict=True):
        dims = value.type.tensor_type.shape.dim
        for axis, name in axes.items():
            dim = dims[axis] if axis < len(dims) else None
            if dim is None or not dim.dim_param:
                fixed = f" at {dim.dim_value}" if dim is not None and dim.dim_value else ""
                raise ConversionError(
                    f"the exported graph fixes axis {axis} of {value.name!r}{fixed}: the "
                    f"model's code does not let {name!r} vary",
                    hint="leave that axis out of dynamic, or change the code that pins it")
            if mapping.setdefault(dim.dim_param, name) != name:
                raise ConversionError(
                    f"the exporter found {name!r} and {mapping[dim.dim_param]!r} to be one "
                    f"dimension (axis {axis} of {value.name!r})",
                    hint="give axes the model's code ties together one name")
    _rename(proto, mapping)
    return proto


def name_output_dims(proto: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """Name output dims the exporter left unnamed or named on their own (tf2onnx's ``unk__``)
    after the inputs' dims they follow, as ONNX shape inference traces them through the
    graph; dims inference cannot trace keep their names."""
    known = set(names)
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.value_info[:]
    for value in probe.graph.output:
        value.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        return proto
    traced = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    for value in proto.graph.output:
        found = traced.get(value.name)
        if found is None or not found.type.tensor_type.HasField("shape"):
            continue
        new = found.type.tensor_type.shape.dim
        dims = value.type.tensor_type.shape.dim
        if len(new) != len(dims):
            continue
        for dim, guess in zip(dims, new, strict=True):
            if guess.dim_param in known and dim.dim_param not in known and (
                    dim.dim_param or not dim.HasField("dim_value")):
                dim.dim_param = guess.dim_param
    return proto


def _rename(proto: onnx.ModelProto, mapping: Mapping[str, str]) -> None:
    if all(k == v for k, v in mapping.items()):
        return
    graph = proto.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = _TOKEN.sub(lambda m: mapping.get(m[0], m[0]), dim.dim_param)
