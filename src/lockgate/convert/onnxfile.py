"""Models that arrive as ONNX already: a ``.onnx`` path or an ``onnx.ModelProto``.

The model is checked (``onnx.checker`` with ``full_check``) and shape-inferred. External data is
read only from files inside the model's folder, then embedded, so the result is self-contained.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import onnx
from onnx import external_data_helper

from lockgate.convert._common import first_line
from lockgate.convert.base import Converted, Dynamic
from lockgate.convert.dims import describe, name_dims, resolve_dynamic
from lockgate.errors import (
    ConversionError,
    NotFoundError,
    UnsafePathError,
    UnsupportedModelError,
)
from lockgate.progress import Progress
from lockgate.runtime.onnxmeta import default_opset, signature_of
from lockgate.types import Signature, TensorSpec

__all__ = ["OnnxFileConverter", "external_files", "not_onnx", "sample_for"]

_MAX_BYTES = 2**31 - 1
_SAVE_HINT = "register a binary ONNX file, as onnx.save or torch.onnx.export write it"
_NO_MODEL = "parses as protobuf but holds no ONNX ModelProto (no graph, no IR version)"
_FROM = "--from MODULE:FUNCTION (a function returning (model, sample_input))"
_FROM_HINT = f"register the model object with {_FROM}"
_SAMPLE_SEED = 0


class OnnxFileConverter:
    """Takes a path to a ``.onnx`` file or a ModelProto; ``reference`` is None."""

    framework = "onnx"

    def accepts(self, model: object) -> bool:
        if isinstance(model, onnx.ModelProto):
            return True
        if isinstance(model, str | os.PathLike):
            return os.fspath(model).lower().endswith(".onnx")
        return False

    def convert(
        self, model: object, sample: object, *, opset: int | None, progress: Progress,
        dynamic: Dynamic | None = None,
    ) -> Converted:
        progress.start("export")
        try:
            if isinstance(model, onnx.ModelProto):
                proto = onnx.ModelProto()
                proto.CopyFrom(model)
                if any(external_data_helper.uses_external_data(t) for t in _tensors(proto)):
                    raise ConversionError(
                        "the ModelProto refers to external data but has no folder to read it from",
                        hint="pass the path of the .onnx file instead",
                    )
                source = "<ModelProto>"
                proto = _checked(proto)
            elif isinstance(model, str | os.PathLike):
                path = Path(os.fspath(model))
                proto = _load(path)
                source = str(path)
            else:
                raise ConversionError(f"not an ONNX model or path: {type(model).__name__}")
            if opset is not None and default_opset(proto) != opset:
                proto = _checked(_to_opset(proto, opset))
        finally:
            progress.finish("export")
        signature = signature_of(proto)
        arrays = sample_for(signature, sample)
        details = {
            "source": source,
            "producer_name": proto.producer_name or "unknown",
            "producer_version": proto.producer_version or "unknown",
            "ir_version": str(proto.ir_version),
            "opset": str(default_opset(proto)),
        }
        if dynamic:
            details["dynamic"] = _name_free_axes(proto, signature, arrays, dynamic)
        return Converted(
            model=proto,
            framework=self.framework,
            framework_version=onnx.__version__,
            converter=f"onnx=={onnx.__version__} (checked, shapes inferred)",
            sample=arrays,
            reference=None,
            details=details,
        )


def _name_free_axes(proto: onnx.ModelProto, signature: Signature,
                    sample: Mapping[str, np.ndarray], dynamic: Dynamic) -> str:
    """Give the file's symbolic dims at the axes ``dynamic`` names those names (in place).

    A file's graph is what it is: an axis it fixes cannot be freed here (ConversionError from
    :func:`~lockgate.convert.dims.name_dims`); inputs ``dynamic`` leaves out keep their dims.
    """
    names = [spec.name for spec in signature.inputs]
    resolved = resolve_dynamic(dynamic, names, [sample[n].shape for n in names])
    named = [axes if name in dynamic else {} for name, axes in zip(names, resolved, strict=True)]
    name_dims(proto, named)
    return describe(names, named)


def _load(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise NotFoundError(f"no file at {path}", hint="give the path of an .onnx file")
    if not path.is_file():
        raise not_onnx(path)
    kind = _sniff(path)
    if kind is not None:
        raise ConversionError(f"{path} is not an ONNX model: it {kind[0]}", hint=kind[1])
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, OSError, ...
        raise ConversionError(f"{path} is not an ONNX model: it {_undecodable(exc)}",
                              hint=_SAVE_HINT) from exc
    if not proto.HasField("graph") or not proto.ir_version:
        raise ConversionError(f"{path} is not an ONNX model: it {_NO_MODEL}", hint=_SAVE_HINT)
    folder = path.parent
    external = [t for t in _tensors(proto) if external_data_helper.uses_external_data(t)]
    total = path.stat().st_size
    seen: set[Path] = set()
    for tensor in external:
        data = _safe_location(folder, tensor)
        if data not in seen:
            seen.add(data)
            total += data.stat().st_size
    if total > _MAX_BYTES:
        raise ConversionError(
            f"{path} and its external data are {total} bytes, over protobuf's 2 GiB limit",
            hint="lockgate stores self-contained models only",
        )
    if not external:
        del proto  # checked and inferred from the file: one copy of the weights at a time
        return _checked_file(path)
    for tensor in external:
        try:
            external_data_helper.load_external_data_for_tensor(tensor, str(folder))
        except Exception as exc:
            raise ConversionError(
                f"could not read external data of tensor {tensor.name!r}: {first_line(exc)}"
            ) from exc
    return _checked(proto)


def _checked_file(path: Path) -> onnx.ModelProto:
    """The self-contained model at ``path`` checked and shape-inferred by ONNX from the file,
    then read once: checking and inferring an in-memory model serializes it for each."""
    with tempfile.TemporaryDirectory(prefix="lockgate-onnx-") as tmp:
        inferred = Path(tmp) / "inferred.onnx"
        try:
            onnx.checker.check_model(str(path), full_check=True)
            onnx.shape_inference.infer_shapes_path(str(path), str(inferred), check_type=True,
                                                   strict_mode=True)
        except Exception as exc:  # ValidationError, InferenceError, ...
            raise ConversionError(
                f"not a valid ONNX model: {type(exc).__name__}: {first_line(exc)}",
                hint="onnx.checker.check_model(model, full_check=True) shows the full message",
            ) from exc
        return onnx.load(str(inferred))


def external_files(path: Path) -> list[str]:
    """The external-data files the ONNX file at ``path`` names, relative to its folder, each
    checked to stay inside it."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ConversionError(
            f"{path} is not a readable ONNX model: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    root = path.parent.resolve()
    found: list[str] = []
    for tensor in _tensors(proto):
        if external_data_helper.uses_external_data(tensor):
            rel = _safe_location(path.parent, tensor).relative_to(root).as_posix()
            if rel not in found:
                found.append(rel)
    return found


def _safe_location(folder: Path, tensor: onnx.TensorProto) -> Path:
    """The file a tensor's external data lives in; it must resolve inside ``folder``."""
    location = next((e.value for e in tensor.external_data if e.key == "location"), "")
    hint = "external data must sit in the model's folder, named by a relative path"
    if not location:
        raise ConversionError(f"tensor {tensor.name!r} uses external data with no location")
    if (
        PurePosixPath(location).is_absolute()
        or PureWindowsPath(location).is_absolute()
        or PureWindowsPath(location).drive
        or location.startswith(("/", "\\"))
    ):
        raise UnsafePathError(
            f"tensor {tensor.name!r} reads external data from the absolute path {location!r}",
            hint=hint,
        )
    if ".." in location.replace("\\", "/").split("/"):
        raise UnsafePathError(
            f"tensor {tensor.name!r} reads external data from {location!r}, outside the "
            "model's folder",
            hint=hint,
        )
    root = folder.resolve()
    target = (folder / location).resolve()
    if not target.is_relative_to(root):
        raise UnsafePathError(
            f"tensor {tensor.name!r} reads external data from {location!r}, which resolves "
            f"to {target}, outside {root}",
            hint=hint,
        )
    if not target.is_file():
        raise ConversionError(
            f"tensor {tensor.name!r} reads external data from {location!r}, which is missing"
        )
    return target


def _checked(proto: onnx.ModelProto) -> onnx.ModelProto:
    try:
        onnx.checker.check_model(proto, full_check=True)
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except Exception as exc:  # ValidationError, InferenceError, ...
        raise ConversionError(
            f"not a valid ONNX model: {type(exc).__name__}: {first_line(exc)}",
            hint="onnx.checker.check_model(model, full_check=True) shows the full message",
        ) from exc


def _to_opset(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """The model moved to ``opset`` by ``onnx.version_converter``."""
    try:
        return onnx.version_converter.convert_version(proto, opset)
    except Exception as exc:
        raise ConversionError(
            f"could not move the model from opset {default_opset(proto)} to {opset}: "
            f"{first_line(exc)}",
            hint="leave the opset unset to keep the file's own",
        ) from exc


def _tensors(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor that may hold data: initializers and attribute tensors, in all subgraphs."""
    yield from _graph_tensors(proto.graph)
    for function in proto.functions:
        for node in function.node:
            yield from _attribute_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _attribute_tensors(node)


def _attribute_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for sub in attr.graphs:
            yield from _graph_tensors(sub)


def sample_for(signature: Signature, sample: object) -> dict[str, np.ndarray]:
    """The sample keyed by input name, cast to the signature's dtypes.

    ``sample`` may be a mapping by name, one array (for a one-input model), a tuple/list in input
    order, or None: then a random sample of batch 1 is drawn (symbolic dims become 1).
    """
    specs = signature.inputs
    if sample is None:
        rng = np.random.default_rng(_SAMPLE_SEED)
        return {spec.name: _random_input(spec, rng) for spec in specs}
    if isinstance(sample, Mapping):
        unknown = sorted(set(sample) - {s.name for s in specs})
        missing = [s.name for s in specs if s.name not in sample]
        if unknown or missing:
            raise ConversionError(
                f"the sample does not match the model's inputs: missing {missing}, "
                f"unexpected {unknown}",
                hint=f"the model takes {[s.name for s in specs]}",
            )
        values = [sample[s.name] for s in specs]
    else:
        values = list(sample) if isinstance(sample, tuple | list) else [sample]
        if len(values) != len(specs):
            raise ConversionError(
                f"the sample has {len(values)} arrays, the model takes {len(specs)} inputs",
                hint=f"pass a mapping keyed by {[s.name for s in specs]}",
            )
    return {spec.name: _conform(spec, value) for spec, value in zip(specs, values, strict=True)}


def _conform(spec: TensorSpec, value: object) -> np.ndarray:
    arr = np.asarray(value)
    try:
        want = np.dtype(spec.dtype)
    except TypeError as exc:
        raise ConversionError(f"input {spec.name!r} has unsupported dtype {spec.dtype}") from exc
    if arr.dtype != want:
        if not np.can_cast(arr.dtype, want, casting="same_kind"):
            raise ConversionError(
                f"sample input {spec.name!r} is {arr.dtype}, the model wants {spec.dtype}"
            )
        arr = arr.astype(want)
    if arr.ndim != len(spec.shape) or any(
        isinstance(d, int) and d != n for d, n in zip(spec.shape, arr.shape, strict=False)
    ):
        raise ConversionError(
            f"sample input {spec.name!r} has shape {list(arr.shape)}, the model wants "
            f"{list(spec.shape)}"
        )
    return arr


def _random_input(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
    kind = spec.dtype
    if kind in ("float16", "float32", "float64"):
        return rng.standard_normal(shape).astype(kind)
    if kind == "bool":
        return rng.random(shape) < 0.5
    if kind.startswith(("int", "uint")):
        return rng.integers(0, 2, size=shape).astype(kind)
    if kind == "object":
        return np.full(shape, "", dtype=object)
    raise ConversionError(
        f"cannot draw a random value for input {spec.name!r} of dtype {kind}",
        hint="pass a sample",
    )


def not_onnx(path: Path) -> ConversionError:
    """The error for a file or folder that exists and is not an ONNX model: what it looks like
    and what to register instead."""
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.onnx"))[:3]
        return UnsupportedModelError(
            f"{path} is a folder, not an ONNX file or a SavedModel (no saved_model.pb in it)",
            hint=(f"register one of its ONNX files: {', '.join(found)}" if found else
                  "register an .onnx file, a SavedModel folder, or --from MODULE:FUNCTION"))
    kind = _sniff(path)
    if kind is None:
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # any parse failure means "not ONNX"
            kind = (_undecodable(exc), _SAVE_HINT)
        else:
            kind = (("holds an ONNX model, but its name does not end in .onnx",
                     f"rename it to {path.with_suffix('.onnx').name}")
                    if proto.HasField("graph") and proto.ir_version else (_NO_MODEL, _SAVE_HINT))
    return UnsupportedModelError(f"{path} is not an ONNX model: it {kind[0]}", hint=kind[1])


def _undecodable(exc: Exception) -> str:
    return ("is neither an ONNX ModelProto nor a zip, pickle, HDF5 or text file "
            f"({type(exc).__name__}: {first_line(exc)})")


def _sniff(path: Path) -> tuple[str, str] | None:
    """What the file at ``path`` looks like when that is plainly not ONNX's protobuf: a phrase
    ("looks like ...") and a hint; None when it may be protobuf."""
    with path.open("rb") as f:
        head = f.read(4096)
    if not head:
        return "is empty", _SAVE_HINT
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(path)
    if head[0] == 0x80 and 2 <= head[1] <= 5:
        return ("looks like a Python pickle (pickle or joblib), which lockgate does not load",
                f"unpickle it in your code and register the model object with {_FROM}")
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return ("looks like an HDF5 file (Keras .h5 weights)",
                f"load it with keras.saving.load_model and register the model with {_FROM}")
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 2**27:
        return ("looks like safetensors weights: tensors without the graph that uses them",
                f"load them into the model in your code and register it with {_FROM}")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(c.isprintable() or c in "\t\n\r" for c in text):
        first = text.strip().splitlines()[0][:60] if text.strip() else ""
        return f"is a text file (starting {first!r})", _SAVE_HINT
    return None


def _zip_kind(path: Path) -> tuple[str, str]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        names = []
    leaves = {n.rsplit("/", 1)[-1] for n in names}
    if "constants.pkl" in leaves or any("/code/" in f"/{n}" for n in names):
        kind = "looks like a TorchScript archive (zip archive)"
    elif "data.pkl" in leaves:
        kind = "looks like a PyTorch checkpoint (zip archive)"
    elif "model.weights.h5" in leaves or ("config.json" in leaves and "metadata.json" in leaves):
        return ("looks like a Keras archive (.keras, a zip archive)",
                f"load it with keras.saving.load_model and register the model with {_FROM}")
    else:
        kind = "is a zip archive"
    return kind, _FROM_HINT
