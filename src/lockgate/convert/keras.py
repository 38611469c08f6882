"""Keras 3 and TensorFlow → ONNX.

* Keras models (functional, Sequential, subclassed) on the TensorFlow backend, and
  ``tf.Module`` objects: a ``tf.function`` over the model with a ``None`` batch dimension, through
  ``tf2onnx.convert.from_function`` (``from_keras`` fails on Sequential models).
* A SavedModel directory (a path holding ``saved_model.pb``): its ``serving_default`` signature.
* Keras models on the torch or jax backend: ``model.export(format="onnx")``, after one call with
  the sample (a model must have been built).

Inputs are named ``input`` (``input_0``, ``input_1`` … for several) and outputs ``output``
(``output_0`` …); the symbolic batch dimension is ``batch``. A ``dynamic`` spec leaves its axes
``None`` in the input signature (the tf.function's, or ``model.export``'s on torch and jax); output
dims that ONNX shape inference traces to them take the same names. TensorFlow and Keras are
imported only when a model that comes from them is seen.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from lockgate.convert._common import (
    BATCH,
    dist_version,
    first_line,
    from_package,
    io_names,
    rename_batch,
    rename_io,
    sample_arrays,
)
from lockgate.convert.base import Converted, Dynamic
from lockgate.convert.dims import (
    Axes,
    describe,
    dim_names,
    name_dims,
    name_output_dims,
    resolve_dynamic,
)
from lockgate.errors import ConversionError
from lockgate.progress import Progress
from lockgate.runtime.onnxmeta import signature_of

__all__ = ["DEFAULT_OPSET", "KerasConverter"]

DEFAULT_OPSET = 17


def _leaves(value: Any) -> list[np.ndarray]:
    if isinstance(value, Mapping):
        return [x for k in sorted(value) for x in _leaves(value[k])]
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _leaves(v)]
    if hasattr(value, "detach"):  # a torch tensor from Keras on the torch backend
        return [value.detach().cpu().numpy()]
    if hasattr(value, "numpy"):
        return [np.asarray(value.numpy())]
    return [np.asarray(value)]


def _saved_model_dir(model: object) -> Path | None:
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.is_dir() and (path / "saved_model.pb").is_file():
            return path
    return None


class KerasConverter:
    """Keras 3 models, ``tf.Module`` objects and SavedModel directories."""

    framework = "keras"

    def accepts(self, model: object) -> bool:
        if _saved_model_dir(model) is not None:
            return True
        if from_package(model, "keras"):
            import keras

            return isinstance(model, keras.Model)
        if from_package(model, "tensorflow"):
            import tensorflow as tf

            return isinstance(model, tf.Module)
        return False

    def convert(
        self, model: object, sample: object, *, opset: int | None, progress: Progress,
        dynamic: Dynamic | None = None,
    ) -> Converted:
        opset = opset or DEFAULT_OPSET
        progress.start("export")
        try:
            saved = _saved_model_dir(model)
            if saved is not None:
                return self._saved_model(saved, sample, opset, dynamic)
            if from_package(model, "keras"):
                import keras

                backend = keras.backend.backend()
                if backend == "tensorflow":
                    return self._tf_function(model, sample, opset, "keras", dynamic)
                return self._keras_export(model, sample, opset, backend, dynamic)
            return self._tf_function(model, sample, opset, "tensorflow", dynamic)
        finally:
            progress.finish("export")

    # -- TensorFlow graphs through tf2onnx ----------------------------------------------------
    def _tf_function(self, model: Any, sample: object, opset: int, framework: str,
                     dynamic: Dynamic | None) -> Converted:
        import tensorflow as tf

        arrays = sample_arrays(sample, "Keras or TensorFlow")
        name = type(model).__name__
        try:
            n_out = len(_leaves(_call(model, arrays)))
        except Exception as exc:
            raise ConversionError(f"the {name} model failed on the sample: {first_line(exc)}",
                                  hint="pass a sample the model accepts (dtype, shape)") from exc
        in_names = io_names("input", len(arrays))
        spec, resolved = _signature(arrays, in_names, dynamic)

        def run(*xs: Any) -> Any:
            out = _call(model, list(xs))
            return tuple(_tf_leaves(out))

        fn = tf.function(run, input_signature=spec)
        proto = _tf2onnx(fn, spec, opset, name)
        return self._finish(proto, arrays, in_names, n_out, framework,
                            _Reference(lambda xs: _call(model, xs), in_names),
                            f"tf2onnx.convert.from_function tf2onnx=={dist_version('tf2onnx')} "
                            f"tensorflow=={tf.__version__}", {"backend": "tensorflow",
                                                             "opset": str(opset)}, resolved)

    def _saved_model(self, path: Path, sample: object, opset: int, dynamic: Dynamic | None
                     ) -> Converted:
        import tensorflow as tf

        arrays = sample_arrays(sample, "Keras or TensorFlow")
        try:
            loaded = tf.saved_model.load(str(path))
            sig = loaded.signatures["serving_default"]
        except (KeyError, OSError, ValueError) as exc:
            raise ConversionError(f"{path}: not a usable SavedModel: {first_line(exc)}",
                                  hint="it needs a serving_default signature") from exc
        keys = sorted(sig.structured_input_signature[1])
        if len(keys) != len(arrays):
            raise ConversionError(f"{path}: the signature takes {keys}; the sample has "
                                  f"{len(arrays)} array(s)")
        in_names = io_names("input", len(arrays))
        spec, resolved = _signature(arrays, in_names, dynamic)

        def call(xs: Sequence[Any]) -> Any:
            return sig(**{k: tf.convert_to_tensor(x) for k, x in zip(keys, xs, strict=True)})

        n_out = len(_leaves(call(arrays)))
        fn = tf.function(lambda *xs: tuple(_tf_leaves(call(xs))), input_signature=spec)
        proto = _tf2onnx(fn, spec, opset, path.name)
        return self._finish(proto, arrays, in_names, n_out, "tensorflow",
                            _Reference(call, in_names),
                            f"tf2onnx.convert.from_function (SavedModel serving_default) "
                            f"tf2onnx=={dist_version('tf2onnx')} tensorflow=={tf.__version__}",
                            {"backend": "tensorflow", "opset": str(opset)}, resolved)

    # -- Keras 3 on torch or jax: model.export -------------------------------------------------
    def _keras_export(self, model: Any, sample: object, opset: int, backend: str,
                      dynamic: Dynamic | None) -> Converted:
        import keras

        arrays = sample_arrays(sample, "Keras or TensorFlow")
        name = type(model).__name__
        try:
            n_out = len(_leaves(_call(model, arrays)))  # builds the model
        except Exception as exc:
            raise ConversionError(f"the {name} model failed on the sample: {first_line(exc)}",
                                  hint="pass a sample the model accepts (dtype, shape)") from exc
        in_names = io_names("input", len(arrays))
        kwargs: dict[str, Any] = {}
        resolved = None
        if dynamic is not None:
            resolved = resolve_dynamic(dynamic, in_names, [a.shape for a in arrays])
            specs = [keras.InputSpec(shape=tuple(None if i in axes else s
                                                 for i, s in enumerate(a.shape)),
                                     dtype=str(a.dtype))
                     for a, axes in zip(arrays, resolved, strict=True)]
            kwargs["input_signature"] = specs if len(specs) == 1 else [specs]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            try:
                model.export(str(path), format="onnx", verbose=False, **kwargs)
            except Exception as exc:
                raise ConversionError(f"Keras could not export the {name} model to ONNX on the "
                                      f"{backend} backend: {first_line(exc)}") from exc
            proto = onnx.load(str(path))
        return self._finish(proto, arrays, in_names, n_out, "keras",
                            _Reference(lambda xs: _call(model, xs), in_names),
                            f"keras.Model.export(format='onnx') keras=={keras.__version__} "
                            f"backend={backend}", {"backend": backend, "opset":
                                                   str(proto.opset_import[0].version)}, resolved)

    def _finish(self, proto: onnx.ModelProto, arrays: list[np.ndarray], in_names: list[str],
                n_out: int, framework: str, reference: _Reference, converter: str,
                details: dict[str, str], resolved: list[Axes] | None = None) -> Converted:
        sig = signature_of(proto)
        if len(sig.inputs) != len(arrays) or len(sig.outputs) != n_out:
            raise ConversionError(
                f"the exported graph has {len(sig.inputs)} inputs and {len(sig.outputs)} "
                f"outputs; the model takes {len(arrays)} and returns {n_out}")
        proto = rename_io(proto, in_names, io_names("output", n_out))
        if resolved is None:
            proto = rename_batch(proto)
        else:
            proto = name_output_dims(name_dims(proto, resolved), dim_names(resolved))
            details["dynamic"] = describe(in_names, resolved)
        batched = resolved is None or BATCH in dim_names(resolved)
        for value in proto.graph.output if batched else ():  # tf2onnx names unknown dims apart
            dims = value.type.tensor_type.shape.dim
            if dims and (dims[0].dim_param.startswith("unk__") or not (
                    dims[0].dim_param or dims[0].HasField("dim_value"))):
                dims[0].dim_param = BATCH
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as exc:
            raise ConversionError(f"the exported ONNX graph is invalid: {first_line(exc)}"
                                  ) from exc
        version = (dist_version("keras") if framework == "keras"
                   else dist_version("tensorflow-cpu") if dist_version("tensorflow") == "unknown"
                   else dist_version("tensorflow"))
        return Converted(model=proto, framework=framework, framework_version=version,
                         converter=converter,
                         sample={n: a for n, a in zip(in_names, arrays, strict=True)},
                         reference=reference, details=details)


def _signature(arrays: Sequence[np.ndarray], names: Sequence[str], dynamic: Dynamic | None
               ) -> tuple[list[Any], list[Axes] | None]:
    """The tf.function input signature: ``None`` at dim 0 by default, else at the free axes."""
    import tensorflow as tf

    if dynamic is None:
        return [tf.TensorSpec([None, *a.shape[1:]], tf.as_dtype(a.dtype), name=n)
                for a, n in zip(arrays, names, strict=True)], None
    resolved = resolve_dynamic(dynamic, names, [a.shape for a in arrays])
    return [tf.TensorSpec([None if i in axes else s for i, s in enumerate(a.shape)],
                          tf.as_dtype(a.dtype), name=n)
            for a, n, axes in zip(arrays, names, resolved, strict=True)], resolved


def _call(model: Any, xs: Sequence[Any]) -> Any:
    """Call a Keras model in inference mode, or a tf.Module."""
    args = list(xs)
    try:
        return model(*args, training=False) if len(args) > 1 else model(args[0], training=False)
    except TypeError as exc:
        if "training" not in str(exc):
            raise
    return model(*args)


def _tf_leaves(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [x for k in sorted(value) for x in _tf_leaves(value[k])]
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _tf_leaves(v)]
    return [value]


def _tf2onnx(fn: Any, spec: list[Any], opset: int, name: str) -> onnx.ModelProto:
    import tf2onnx

    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
    except Exception as exc:
        raise ConversionError(f"tf2onnx could not convert the {name} model: {first_line(exc)}",
                              hint="an op without an ONNX mapping, or a Python side effect in "
                                   "the model's call") from exc
    return proto  # type: ignore[no-any-return]


class _Reference:
    """Runs the source model on numpy inputs, in inference mode."""

    def __init__(self, call: Any, input_names: Sequence[str]) -> None:
        self._call, self._names = call, list(input_names)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return _leaves(self._call([inputs[n] for n in self._names]))
