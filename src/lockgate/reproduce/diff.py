"""Where two ONNX models first differ: the model's header (IR version, producer, opsets,
metadata), the graph's inputs and outputs, then node by node and initializer by initializer in
file order, so a rebuild that is not bit-identical says exactly what changed first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

__all__ = ["first_difference", "metadata_only"]


def first_difference(a: onnx.ModelProto, b: onnx.ModelProto) -> dict[str, Any]:
    """The first difference between the registered ``a`` and the rebuilt ``b``: ``where``
    (``model``, ``graph``, ``node``, ``initializer``), ``name`` and ``detail``; ``where`` is
    ``serialization`` when every part compares equal (only the bytes' layout differs)."""
    header = (("ir_version", a.ir_version, b.ir_version),
              ("producer", f"{a.producer_name} {a.producer_version}",
               f"{b.producer_name} {b.producer_version}"),
              ("opset_import", sorted((o.domain, o.version) for o in a.opset_import),
               sorted((o.domain, o.version) for o in b.opset_import)),
              ("metadata_props", sorted((p.key, p.value) for p in a.metadata_props),
               sorted((p.key, p.value) for p in b.metadata_props)),
              ("doc_string", a.doc_string, b.doc_string))
    for field, x, y in header:
        if x != y:
            return _found("model", field, f"{x!r} != {y!r}")
    ga, gb = a.graph, b.graph
    for field in ("input", "output"):
        xs, ys = list(getattr(ga, field)), list(getattr(gb, field))
        for i in range(max(len(xs), len(ys))):
            vx = xs[i] if i < len(xs) else None
            vy = ys[i] if i < len(ys) else None
            if vx != vy:
                name = (vx if vx is not None else ys[i]).name
                return _found("graph", f"{field} {name}", f"{_short(vx)} != {_short(vy)}")
    for i in range(max(len(ga.node), len(gb.node))):
        if i >= len(ga.node) or i >= len(gb.node):
            extra = (ga.node if i < len(ga.node) else gb.node)[i]
            return _found("node", extra.name or f"#{i}",
                          f"node #{i} ({extra.op_type}) only in the "
                          f"{'registered' if i < len(ga.node) else 'rebuilt'} model")
        na, nb = ga.node[i], gb.node[i]
        if na != nb:
            return _found("node", na.name or nb.name or f"#{i}", _node_detail(i, na, nb))
    init_b = {t.name: t for t in gb.initializer}
    for i, ta in enumerate(ga.initializer):
        tb = init_b.get(ta.name)
        if tb is None:
            return _found("initializer", ta.name, "only in the registered model")
        if ta != tb:
            return _found("initializer", ta.name, _tensor_detail(ta, tb))
        if i < len(gb.initializer) and gb.initializer[i].name != ta.name:
            return _found("initializer", ta.name,
                          f"at position {i} in the registered model, a different one "
                          f"({gb.initializer[i].name}) in the rebuilt model")
    names_a = {t.name for t in ga.initializer}
    for tb in gb.initializer:
        if tb.name not in names_a:
            return _found("initializer", tb.name, "only in the rebuilt model")
    if ga != gb:
        return _found("graph", ga.name or "graph", "graph fields other than nodes, "
                      "initializers, inputs and outputs differ (value_info, names, docs)")
    if a != b:
        return _found("model", "fields", "model fields other than the graph differ "
                      "(functions, training info)")
    return _found("serialization", "bytes", "every part is equal: only the byte layout differs")


def _found(where: str, name: str, detail: str) -> dict[str, Any]:
    return {"where": where, "name": name, "detail": detail}


def _short(x: object) -> str:
    text = " ".join(str(x).split()) if x is not None else "absent"
    return text if len(text) <= 120 else text[:117] + "..."


def _node_detail(i: int, na: onnx.NodeProto, nb: onnx.NodeProto) -> str:
    for field in ("op_type", "domain", "input", "output", "name"):
        x, y = getattr(na, field), getattr(nb, field)
        if x != y:
            if field in ("input", "output"):
                x, y = list(x), list(y)
            return f"node #{i} ({na.op_type}) {field}: {x!r} != {y!r}"
    attrs_a = {x.name: x for x in na.attribute}
    attrs_b = {x.name: x for x in nb.attribute}
    for name in sorted(set(attrs_a) | set(attrs_b)):
        if attrs_a.get(name) != attrs_b.get(name):
            return (f"node #{i} ({na.op_type}) attribute {name}: "
                    f"{_short(attrs_a.get(name))} != {_short(attrs_b.get(name))}")
    meta_a = {p.key: p.value for p in na.metadata_props}
    meta_b = {p.key: p.value for p in nb.metadata_props}
    for key in sorted(set(meta_a) | set(meta_b)):
        if meta_a.get(key) != meta_b.get(key):
            return (f"node #{i} ({na.op_type}) metadata {key}: "
                    f"{_short(meta_a.get(key))} != {_short(meta_b.get(key))}")
    return f"node #{i} ({na.op_type}) doc_string differs"


def metadata_only(a: onnx.ModelProto, b: onnx.ModelProto) -> list[str]:
    """The node metadata keys that differ when they are all that differs (the graph, weights
    and header equal once node metadata is set aside); empty otherwise. The torch exporter's
    ``pkg.torch.onnx.stack_trace`` names the source files of the environment that exported,
    so a rebuild in another venv differs there alone."""
    import onnx

    ca, cb = onnx.ModelProto(), onnx.ModelProto()
    ca.CopyFrom(a)
    cb.CopyFrom(b)
    keys: set[str] = set()
    for na, nb in zip(ca.graph.node, cb.graph.node, strict=False):
        ma = {p.key: p.value for p in na.metadata_props}
        mb = {p.key: p.value for p in nb.metadata_props}
        keys |= {k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k)}
        del na.metadata_props[:]
        del nb.metadata_props[:]
    return sorted(keys) if keys and ca == cb else []


def _tensor_detail(ta: onnx.TensorProto, tb: onnx.TensorProto) -> str:
    from onnx import numpy_helper

    x, y = numpy_helper.to_array(ta), numpy_helper.to_array(tb)
    if x.dtype != y.dtype or x.shape != y.shape:
        return f"{x.dtype}{list(x.shape)} != {y.dtype}{list(y.shape)}"
    if np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
        return "equal values, different encoding (raw_data, data location or doc_string)"
    same = np.asarray(x == y)
    if x.dtype.kind in "fc":
        same = same | (np.isnan(x) & np.isnan(y))
    where = np.argwhere(~same.reshape(-1))
    count = len(where)
    first: tuple[int, ...] = (
        tuple(int(v) for v in np.unravel_index(int(where[0][0]), x.shape)) if x.ndim else ())
    xv, yv = x[first], y[first]
    worst = ""
    if x.dtype.kind in "fc":
        err = np.abs(x.astype(np.float64) - y.astype(np.float64))
        worst = f", max abs difference {float(np.nanmax(err)):.3g}"
    return (f"{count} of {x.size} values differ; first at {list(first)}: {xv!r} != {yv!r}"
            f"{worst}")
