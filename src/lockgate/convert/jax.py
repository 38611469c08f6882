"""JAX → ONNX through jax2onnx, with a symbolic batch dimension (or the symbolic dims a
``dynamic`` spec names: jax2onnx traces with ``jax.export`` symbolic shapes of those names).

Accepted models:

* :class:`JaxFunction` — a plain JAX function and its parameters, ``fn(params, *inputs)``;
* a ``jax.jit``-wrapped function of the inputs alone (parameters closed over);
* a flax ``nnx.Module``;
* a bound flax ``linen`` module (``module.bind(variables)``).

jax2tf → tf2onnx does not work with current JAX and is not offered. Some graphs jax2onnx emits
are refused by ONNX Runtime only when they run (a ``MaxPool`` from an NHWC ``reduce_window``);
registration then fails on the parity check with ONNX Runtime's message, which names the op, and
stores nothing.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
from lockgate.convert.dims import describe, name_dims, resolve_dynamic
from lockgate.errors import ConversionError
from lockgate.progress import Progress
from lockgate.runtime.onnxmeta import signature_of

__all__ = ["JaxConverter", "JaxFunction"]


@dataclass(frozen=True)
class JaxFunction:
    """A plain JAX function with its parameters: lockgate exports ``fn(params, *inputs)`` with
    the parameters baked in as constants."""

    fn: Callable[..., Any]
    params: Any

    def __call__(self, *inputs: Any) -> Any:
        return self.fn(self.params, *inputs)


def _leaves(value: Any) -> list[np.ndarray]:
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(value)]


def _kind(model: object) -> str | None:
    if isinstance(model, JaxFunction):
        return "function"
    if from_package(model, "flax"):
        from flax import linen, nnx

        if isinstance(model, nnx.Module):
            return "flax.nnx"
        if isinstance(model, linen.Module):
            return "flax.linen" if model.scope is not None else None
    if from_package(model, "jax") or from_package(model, "jaxlib"):
        return "jit" if callable(model) else None
    if isinstance(model, functools.partial) and from_package(model.func, "jax"):
        return "jit"
    return None


class JaxConverter:
    framework = "jax"

    def accepts(self, model: object) -> bool:
        return _kind(model) is not None

    def convert(
        self, model: object, sample: object, *, opset: int | None, progress: Progress,
        dynamic: Dynamic | None = None,
    ) -> Converted:
        import jax
        from jax2onnx import to_onnx

        kind = _kind(model)
        if kind is None:
            raise ConversionError(f"not a JAX model: {type(model).__name__}")
        if kind == "flax.linen" and hasattr(model, "unbind"):
            module, variables = model.unbind()

            def fn(*xs: Any) -> Any:
                return module.apply(variables, *xs)
        else:
            fn = model  # type: ignore[assignment]
        arrays = sample_arrays(sample, "JAX")
        name = type(model).__name__
        try:
            n_out = len(_leaves(fn(*arrays)))
        except Exception as exc:
            raise ConversionError(f"the {name} model failed on the sample: {first_line(exc)}",
                                  hint="pass a sample the model accepts (dtype, shape)") from exc
        in_names = io_names("input", len(arrays))
        out_names = io_names("output", n_out)
        resolved = None if dynamic is None else resolve_dynamic(
            dynamic, in_names, [a.shape for a in arrays])
        shapes = [(BATCH, *a.shape[1:]) for a in arrays] if resolved is None else [
            tuple(axes.get(i, s) for i, s in enumerate(a.shape))
            for a, axes in zip(arrays, resolved, strict=True)]
        progress.start("export")
        try:
            kwargs: dict[str, Any] = {"input_names": in_names, "output_names": out_names}
            if opset:
                kwargs["opset"] = opset
            try:
                with warnings.catch_warnings():
                    # jax2onnx and flax warn about each other's internals while tracing;
                    # nothing there is about the user's model
                    warnings.simplefilter("ignore", DeprecationWarning)
                    warnings.simplefilter("ignore", FutureWarning)
                    proto = to_onnx(fn, shapes, **kwargs)
            except Exception as exc:
                raise ConversionError(f"jax2onnx could not convert the {name} model: "
                                      f"{first_line(exc)}",
                                      hint="a JAX primitive without a jax2onnx plugin" + (
                                          "" if resolved is None else ", or code that pins "
                                          "a dimension dynamic names (leave it out)")) from exc
        finally:
            progress.finish("export")
        if not isinstance(proto, onnx.ModelProto):
            raise ConversionError("jax2onnx returned no ONNX model")
        sig = signature_of(proto)
        if len(sig.inputs) != len(arrays) or len(sig.outputs) != n_out:
            raise ConversionError(
                f"the exported graph has {len(sig.inputs)} inputs and {len(sig.outputs)} "
                f"outputs; the model takes {len(arrays)} and returns {n_out}")
        proto = rename_io(proto, in_names, out_names)
        details = {"kind": kind, "opset": str(proto.opset_import[0].version)}
        if resolved is None:
            proto = rename_batch(proto)
        else:
            proto = name_dims(proto, resolved)
            details["dynamic"] = describe(in_names, resolved)
        libraries = f"jax=={jax.__version__} jax2onnx=={dist_version('jax2onnx')}"
        if kind.startswith("flax"):
            libraries += f" flax=={dist_version('flax')}"
        return Converted(
            model=proto, framework=self.framework, framework_version=jax.__version__,
            converter=f"jax2onnx.to_onnx ({kind}) {libraries}",
            sample={n: a for n, a in zip(in_names, arrays, strict=True)},
            reference=_Reference(fn, in_names),
            details=details)


class _Reference:
    def __init__(self, fn: Callable[..., Any], names: Sequence[str]) -> None:
        self._fn, self._names = fn, list(names)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return _leaves(self._fn(*[inputs[n] for n in self._names]))
