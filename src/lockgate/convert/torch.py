"""PyTorch → ONNX through the dynamo exporter (``torch.onnx.export(dynamo=True)``).

torch is imported only when a model that comes from torch is seen, so ``accepts`` stays cheap.
Dim 0 of every batched input becomes the symbolic dim ``"batch"``; a model whose code pins the
batch size is exported with static shapes instead (``details["dynamic_batch"] == "false"``).
A ``dynamic`` spec gives each named dim one shared ``torch.export.Dim``; inputs are named after
``forward``'s arguments, and a spec whose dims the model's code pins is refused.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from lockgate.convert._common import (
    BATCH,
    dist_version,
    first_line,
    from_package,
    rename_batch,
    strip_ansi,
)
from lockgate.convert.base import Converted, Dynamic
from lockgate.convert.dims import Axes, describe, dim_names, name_dims, resolve_dynamic
from lockgate.errors import ConversionError
from lockgate.progress import Progress
from lockgate.runtime.onnxmeta import signature_of

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_OPSET", "TorchConverter"]

DEFAULT_OPSET = 18
"""The opset torch's ONNX function library is written for; other opsets go through a converter."""

_MAX_PROTO_BYTES = 2**31 - 1
_QUIET_LOGGERS = ("torch", "onnxscript", "onnx_ir")
_STACK_TRACE = "pkg.torch.onnx.stack_trace"
# Deprecation notices torch raises about its own internals while exporting; they say nothing
# about the user's model, so they are dropped rather than reported in ``details``.
_INTERNAL_NOISE = (DeprecationWarning, FutureWarning)
_NOISE_MESSAGES = ("will not be used, since it shares the same shape constraints",)


class TorchConverter:
    """Exports a ``torch.nn.Module``; the sample is a tensor, a numpy array, or a tuple of them."""

    framework = "pytorch"

    def accepts(self, model: object) -> bool:
        if not from_package(model, "torch"):
            return False
        import torch

        return isinstance(model, torch.nn.Module)

    def convert(
        self, model: object, sample: object, *, opset: int | None, progress: Progress,
        dynamic: Dynamic | None = None,
    ) -> Converted:
        import torch

        if not isinstance(model, torch.nn.Module):
            raise ConversionError(f"not a torch.nn.Module: {type(model).__name__}")
        opset = opset or DEFAULT_OPSET
        args = _sample_tensors(sample, _device_of(model))
        name = type(model).__name__
        resolved = None if dynamic is None else resolve_dynamic(
            dynamic, _argument_names(model, len(args)), [tuple(a.shape) for a in args])
        progress.start("export")
        try:
            with _eval_mode(model), torch.no_grad():
                try:
                    n_outputs = len(_tensor_leaves(model(*args)))
                except Exception as exc:
                    raise ConversionError(
                        f"the {name} model failed on the sample: {first_line(exc)}",
                        hint="pass a sample the model accepts (right dtype, shape and device)",
                    ) from exc
            if n_outputs == 0:
                raise ConversionError(f"the {name} model returned no tensors")
            output_names = ["output"] if n_outputs == 1 else [
                f"output_{i}" for i in range(n_outputs)
            ]
            details: dict[str, str] = {"opset": str(opset)}
            proto = (_export(model, args, output_names, opset, details) if resolved is None
                     else _export_dynamic(model, args, resolved, output_names, opset, details))
        finally:
            progress.finish("export")
        signature = signature_of(proto)
        if len(signature.inputs) != len(args) or len(signature.outputs) != n_outputs:
            raise ConversionError(
                f"the exported {name} graph has {len(signature.inputs)} inputs and "
                f"{len(signature.outputs)} outputs; the model takes {len(args)} tensors and "
                f"returns {n_outputs}",
                hint="pass every tensor argument in the sample and return only tensors",
            )
        input_names = [spec.name for spec in signature.inputs]
        return Converted(
            model=proto,
            framework=self.framework,
            framework_version=torch.__version__,
            converter=(
                f"torch.onnx.export(dynamo=True) torch=={torch.__version__} "
                f"onnxscript=={dist_version('onnxscript')}"
            ),
            sample={n: a.detach().cpu().numpy() for n, a in zip(input_names, args, strict=True)},
            reference=_Reference(model, input_names),
            details=details,
        )


class _Reference:
    """Runs the torch model in eval mode under ``no_grad`` on numpy inputs."""

    def __init__(self, model: torch.nn.Module, input_names: Sequence[str]) -> None:
        self._model = model
        self._input_names = list(input_names)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        device = _device_of(self._model)
        args = [
            torch.as_tensor(np.ascontiguousarray(inputs[n]), device=device)
            for n in self._input_names
        ]
        with _eval_mode(self._model), torch.no_grad():
            out = self._model(*args)
        return [t.detach().cpu().numpy() for t in _tensor_leaves(out)]


def _export(
    model: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    output_names: list[str],
    opset: int,
    details: dict[str, str],
) -> onnx.ModelProto:
    """Export with a dynamic batch dim; fall back to static shapes if the model pins it."""
    import torch

    dynamic = _dynamic_shapes(args)
    if dynamic is not None:
        try:
            proto = _export_once(model, _widen_batch(args), dynamic, output_names, opset, details)
            proto = rename_batch(proto)
            details["dynamic_batch"] = str(_has_batch(proto)).lower()
            return proto
        except ConversionError as exc:
            if not isinstance(exc.__cause__, torch.onnx.errors.OnnxExporterError):
                raise
            details["dynamic_batch_error"] = exc.message[:500]
    proto = _export_once(model, args, None, output_names, opset, details)
    details["dynamic_batch"] = "false"
    return proto


def _export_dynamic(
    model: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    resolved: Sequence[Axes],
    output_names: list[str],
    opset: int,
    details: dict[str, str],
) -> onnx.ModelProto:
    """Export with one shared ``Dim`` per name of ``resolved``; no static fallback."""
    from torch.export import Dim

    dims = {n: Dim(n) for n in dim_names(resolved)}
    shapes = tuple({axis: dims[n] for axis, n in axes.items()} or None for axes in resolved)
    try:
        proto = _export_once(model, _widen(args, resolved), shapes, output_names, opset,
                             details)
    except ConversionError as exc:
        raise ConversionError(
            exc.message, hint="the model's code may pin a dimension dynamic names: leave it "
            "out of dynamic, or give dims the code ties together one name") from exc
    proto = name_dims(proto, resolved)
    details["dynamic"] = describe([v.name for v in proto.graph.input], resolved)
    details["dynamic_batch"] = str(_has_batch(proto)).lower()
    return proto


def _export_once(
    model: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    dynamic: tuple[dict[int, Any] | None, ...] | None,
    output_names: list[str],
    opset: int,
    details: dict[str, str],
) -> onnx.ModelProto:
    import torch

    with _quiet() as caught, _eval_mode(model):
        try:
            program = torch.onnx.export(
                model,
                args,
                dynamo=True,
                dynamic_shapes=dynamic,
                opset_version=opset,
                output_names=output_names,
                verbose=False,
                optimize=True,
            )
            if program is None:  # only the TorchScript path returns None
                raise ConversionError("torch.onnx.export returned no program")
            proto = _without_stack_traces(program.model_proto)
        except ConversionError:
            raise
        except Exception as exc:  # the exporter raises many unrelated types
            raise ConversionError(
                f"torch.onnx.export failed for {type(model).__name__}: {_summary(exc)}",
                hint="the model must be traceable by torch.export; torch.onnx.export(..., "
                "report=True) writes a full report",
            ) from exc
    notes = sorted(
        {
            first_line(w.message)
            for w in caught
            if not issubclass(w.category, _INTERNAL_NOISE)
            and not any(n in str(w.message) for n in _NOISE_MESSAGES)
        }
    )
    if notes:
        details["export_warnings"] = " | ".join(notes)[:2000]
    # From the weights' shapes: protobuf's ByteSize() encodes the whole model to count it.
    size = sum(v.const_value.nbytes for v in program.model.graph.initializers.values()
               if v.const_value is not None)
    if size > _MAX_PROTO_BYTES:
        raise ConversionError(
            f"the exported model is {size} bytes, over protobuf's 2 GiB limit",
            hint="models this large need external data, which lockgate does not store",
        )
    return proto


def _without_stack_traces(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the exporter's per-node stack traces (``pkg.torch.onnx.stack_trace``): they hold
    the paths of torch's source files in the exporting environment, so the same model exported
    from another venv would differ byte for byte, and a shipped model would carry local paths."""
    def strip(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            kept = [p for p in node.metadata_props if p.key != _STACK_TRACE]
            if len(kept) != len(node.metadata_props):
                del node.metadata_props[:]
                node.metadata_props.extend(kept)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    strip(attr.g)
                for sub in attr.graphs:
                    strip(sub)

    strip(proto.graph)
    for function in proto.functions:
        for node in function.node:
            kept = [p for p in node.metadata_props if p.key != _STACK_TRACE]
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
    return proto


def _sample_tensors(sample: object, device: torch.device) -> tuple[torch.Tensor, ...]:
    import torch

    items = sample if isinstance(sample, tuple | list) else (sample,)
    tensors: list[torch.Tensor] = []
    for i, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            tensors.append(item.detach().to(device))
        elif isinstance(item, np.ndarray):
            tensors.append(torch.as_tensor(np.ascontiguousarray(item), device=device))
        else:
            raise ConversionError(
                f"sample item {i} is a {type(item).__name__}",
                hint="a torch sample is a tensor, a numpy array, or a tuple of them",
            )
    if not tensors:
        raise ConversionError("the sample is empty", hint="pass one tensor per model input")
    return tuple(tensors)


def _dynamic_shapes(args: Sequence[torch.Tensor]) -> tuple[dict[int, Any] | None, ...] | None:
    """One shared ``Dim("batch")`` on dim 0 of inputs whose dim 0 matches the first's."""
    from torch.export import Dim

    batched = [a for a in args if a.dim() > 0]
    if not batched:
        return None
    first = int(batched[0].shape[0])
    batch = Dim(BATCH)
    return tuple(
        {0: batch} if a.dim() > 0 and int(a.shape[0]) == first else None for a in args
    )


def _widen_batch(args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A batch of 1 makes torch.export specialise the dim; trace with the sample twice."""
    import torch

    batched = [a for a in args if a.dim() > 0]
    if not batched or int(batched[0].shape[0]) != 1:
        return args
    return tuple(torch.cat([a, a]) if a.dim() > 0 and a.shape[0] == 1 else a for a in args)


def _widen(args: tuple[torch.Tensor, ...], resolved: Sequence[Axes]
           ) -> tuple[torch.Tensor, ...]:
    """torch.export specialises a dim of size 1: double such free axes (one name, one size)."""
    import torch

    out = []
    for a, axes in zip(args, resolved, strict=True):
        for axis in axes:
            if a.shape[axis] == 1:
                a = torch.cat([a, a], dim=axis)
        out.append(a)
    return tuple(out)


def _argument_names(model: torch.nn.Module, n: int) -> list[str]:
    """The names the exporter gives the inputs: ``forward``'s positional arguments."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:n]
    return names if len(names) == n else [f"input_{i}" for i in range(n)]


def _has_batch(proto: onnx.ModelProto) -> bool:
    return any(
        v.type.tensor_type.shape.dim and v.type.tensor_type.shape.dim[0].dim_param == BATCH
        for v in proto.graph.input
    )


def _tensor_leaves(out: object) -> list[torch.Tensor]:
    import torch
    from torch.utils import _pytree

    return [x for x in _pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]


def _device_of(model: torch.nn.Module) -> torch.device:
    import torch

    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _quiet() -> Iterator[list[warnings.WarningMessage]]:
    """Keep the exporter's warnings and log lines off the console while it runs.

    Warnings are recorded (and those about the model reported in ``details``); log records
    below ERROR from torch/onnxscript and anything printed are dropped. All is restored after.
    """
    loggers = [logging.getLogger(n) for n in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    sink = io.StringIO()  # torch.export prints partial graphs of failed traces to stderr
    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stderr(sink),
        contextlib.redirect_stdout(sink),
    ):
        warnings.simplefilter("always")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield caught
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def _summary(exc: BaseException) -> str:
    """The exporter's own summary line, or the root cause's first line."""
    text = strip_ansi(str(exc))
    marker = "## Exception summary"
    if marker in text:
        tail = text.split(marker, 1)[1].strip()
        return tail.split("\n\n", 1)[0].strip()
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {first_line(cause)}"
