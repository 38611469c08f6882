"""Optimized ONNX graphs made from a registered version's model: dynamic int8 quantization,
float16 conversion, and ONNX Runtime's offline graph optimizations.

Each transformation takes the parent's serialized model and returns the new one with what made
it (:class:`Transformation`: its kind, the tool and the tool's version). The served signature
stays the same: float16 conversion keeps float32 inputs and outputs (``keep_io_types``), and
dynamic quantization and graph optimization never change them.

ONNX Runtime's ``all`` level is refused: it adds layout optimizations (NCHWc kernels chosen for
this machine's instruction set) that tie the saved graph to the hardware it was made on, so a
version made with it would not be the same model everywhere it is served. ``extended`` (operator
fusions) is the most a stored version takes; ONNX Runtime still applies every level when it
loads a model for serving.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import external_data_helper

from lockgate.errors import ConversionError, InvalidInputError

__all__ = [
    "KINDS",
    "ORT_LEVELS",
    "QUANTIZE_MODES",
    "Transformation",
    "choose",
    "measure",
    "transform",
]

QUANTIZE_MODES = ("dynamic-int8",)
ORT_LEVELS = ("basic", "extended", "all")
KINDS = ("dynamic-int8", "fp16", "ort-basic", "ort-extended")
"""Every transformation :func:`transform` makes; ``ort-all`` is refused (module docstring)."""

_MAX_BYTES = 2**31 - 1
_FLAGS = "--quantize dynamic-int8, --fp16 or --ort-level basic|extended"


@dataclass(frozen=True)
class Transformation:
    """What made an optimized model from its parent."""

    kind: str
    tool: str
    tool_version: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tool": self.tool, "tool_version": self.tool_version,
                "options": dict(self.options)}


def choose(quantize: str | None = None, fp16: bool = False, ort_level: str | None = None) -> str:
    """The one transformation asked for, as a :data:`KINDS` entry; InvalidInputError when none,
    more than one or an unknown one is asked for."""
    given = [f for f, on in (("--quantize", quantize is not None), ("--fp16", fp16),
                             ("--ort-level", ort_level is not None)) if on]
    if not given:
        raise InvalidInputError("no optimization asked for", hint=f"give one of {_FLAGS}")
    if len(given) > 1:
        raise InvalidInputError(f"{' and '.join(given)} given: one optimization at a time",
                                hint="optimize the new version again for a second one")
    if quantize is not None:
        if quantize not in QUANTIZE_MODES:
            raise InvalidInputError(f"unknown quantization {quantize!r}",
                                    hint=f"--quantize takes {', '.join(QUANTIZE_MODES)}")
        return quantize
    if fp16:
        return "fp16"
    assert ort_level is not None
    if ort_level == "all":
        raise InvalidInputError(
            "--ort-level all is refused: its layout optimizations tie the saved graph to this "
            "machine's CPU",
            hint="use --ort-level extended; ONNX Runtime applies the layout optimizations "
                 "itself when it loads the model for serving")
    if ort_level not in ORT_LEVELS:
        raise InvalidInputError(f"unknown ONNX Runtime optimization level {ort_level!r}",
                                hint="--ort-level takes basic or extended")
    return f"ort-{ort_level}"


def transform(model: bytes, kind: str) -> tuple[bytes, Transformation]:
    """The model made by ``kind`` from ``model`` (the parent's ONNX bytes), and how it was made.
    ConversionError when the tool fails or the model cannot take the transformation."""
    if kind not in KINDS:
        raise InvalidInputError(f"unknown optimization {kind!r}", hint=f"one of {list(KINDS)}")
    proto = onnx.load_model_from_string(model)
    _check_one_file(proto, len(model), kind)
    try:
        if kind == "dynamic-int8":
            data, made = _quantize_dynamic(proto)
        elif kind == "fp16":
            data, made = _float16(proto)
        else:
            data, made = _ort_level(model, kind.removeprefix("ort-"))
    except (ConversionError, InvalidInputError):
        raise
    except Exception as exc:  # the tools raise anything from ValueError to RuntimeError
        raise ConversionError(f"{kind} failed: {type(exc).__name__}: {exc}",
                              hint="the parent stays as it is; try another optimization"
                              ) from exc
    if len(data) > _MAX_BYTES:
        raise ConversionError(f"the {kind} model is over 2 GB; lockgate stores one-file models")
    return data, made


def _check_one_file(proto: onnx.ModelProto, size: int, kind: str) -> None:
    external = [t.name for t in proto.graph.initializer
                if external_data_helper.uses_external_data(t)]
    if external or size > _MAX_BYTES:
        raise InvalidInputError(
            f"{kind} is refused for a model with external data or over 2 GiB "
            f"({'external: ' + ', '.join(external[:3]) if external else f'{size} bytes'})",
            hint="optimize such a model with its own tools and register the result")


def _quantize_dynamic(proto: onnx.ModelProto) -> tuple[bytes, Transformation]:
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "consider pre-processing" is advice, not a problem
    try:
        with tempfile.TemporaryDirectory(prefix="lockgate-int8-") as tmp:
            out = Path(tmp) / "model.int8.onnx"
            quantize_dynamic(proto, out, weight_type=QuantType.QInt8)
            data = out.read_bytes()
    finally:
        quiet.setLevel(level)
    return data, Transformation("dynamic-int8", "onnxruntime.quantization",
                                onnxruntime.__version__, {"weight_type": "QInt8",
                                                          "per_channel": False})


def _float16(proto: onnx.ModelProto) -> tuple[bytes, Transformation]:
    import onnxconverter_common  # type: ignore[import-untyped]
    from onnxconverter_common import float16

    converted = float16.convert_float_to_float16(proto, keep_io_types=True)
    return converted.SerializeToString(), Transformation(
        "fp16", "onnxconverter_common.float16", onnxconverter_common.__version__,
        {"keep_io_types": True})


def _ort_level(model: bytes, level: str) -> tuple[bytes, Transformation]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[level]
    with tempfile.TemporaryDirectory(prefix="lockgate-ort-") as tmp:
        out = Path(tmp) / "model.opt.onnx"
        opts.optimized_model_filepath = str(out)
        ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        data = out.read_bytes()
    return data, Transformation(f"ort-{level}", "onnxruntime.graph_optimization",
                                ort.__version__, {"level": level,
                                                  "providers": ["CPUExecutionProvider"]})


def measure(parent: bytes, child: bytes, feeds: Mapping[str, np.ndarray], *,
            runs: int = 300) -> dict[str, Any]:
    """Latency of ``parent`` and ``child`` on ``feeds`` (one row: the caller slices it) in
    this process on one thread, one run of each in turn, the order swapped every round
    (``runs`` of each after a warm-up), and their sizes: medians in milliseconds, the speed-up
    (parent median over child median) and the size ratio (child over parent)."""
    import onnxruntime as ort

    sessions = []
    for data in (parent, child):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = 1
        sessions.append(ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"]))
    times: list[list[float]] = [[], []]
    for i in range(runs + 10):
        for which, session in enumerate(sessions if i % 2 == 0 else sessions[::-1]):
            start = time.perf_counter()
            session.run(None, dict(feeds))
            if i >= 10:
                times[which if i % 2 == 0 else 1 - which].append(time.perf_counter() - start)
    parent_ms, child_ms = (statistics.median(t) * 1e3 for t in times)
    return {
        "batch": 1, "runs": runs, "threads": 1,
        "parent_latency_ms": _figure(parent_ms), "child_latency_ms": _figure(child_ms),
        "speedup": round(parent_ms / child_ms, 3) if child_ms > 0 else None,
        "parent_bytes": len(parent), "child_bytes": len(child),
        "size_ratio": round(len(child) / len(parent), 4) if parent else None,
    }


def _figure(x: float) -> float:
    """``x`` to five significant digits."""
    return float(f"{x:.5g}")
