"""Execution providers as configuration: which ONNX Runtime providers a deployment asks for, in
order, with their options, and what to do when one cannot load.

A provider is written by its short name (``cuda``, ``tensorrt``, ``openvino``, ...) or by ONNX
Runtime's own name (``CUDAExecutionProvider``), with options:

* in lockgate.toml or a policy file, a list whose items are names or tables::

      [serve]
      providers = [{name = "tensorrt", trt_fp16_enable = true,
                    trt_engine_cache_path = "/var/cache/trt"}, "cuda", "cpu"]
      provider_fallback = "none"     # or "cpu"

* on the command line and in ``LOCKGATE_SERVE_PROVIDERS``, providers separated by commas and each
  provider's options by colons: ``tensorrt:trt_fp16_enable=true:device_id=0,cuda,cpu``.

A plugin execution provider (ONNX Runtime 1.23 and later) names its shared library:
``{name = "OpenVINOExecutionProvider", library = "/path/libonnxruntime_providers_openvino.so",
device_type = "CPU"}`` (``library=PATH`` on the command line).

The options of the providers lockgate knows are checked by name and type; a plugin's options
are passed through as given. This module is pure: :mod:`lockgate.runtime.providers` opens the
sessions and checks which providers they really use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lockgate.errors import ConfigError

__all__ = [
    "CPU",
    "FALLBACKS",
    "KNOWN",
    "ProviderInfo",
    "ProviderSet",
    "ProviderSpec",
    "check_fallback",
    "parse_providers",
    "parse_providers_text",
    "precision",
]

FALLBACKS = ("none", "cpu")


@dataclass(frozen=True)
class ProviderInfo:
    """What lockgate knows of one provider: ONNX Runtime's name, the wheel that carries it,
    its options (name → type: ``bool``, ``int``, ``float``, ``str`` or a tuple of choices) and
    friendly aliases of those options."""

    ort_name: str
    short: str
    wheel: str
    options: Mapping[str, Any] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)


_CUDA_OPTS: dict[str, Any] = {
    "device_id": int, "gpu_mem_limit": int,
    "arena_extend_strategy": ("kNextPowerOfTwo", "kSameAsRequested"),
    "cudnn_conv_algo_search": ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"),
    "do_copy_in_default_stream": bool, "enable_cuda_graph": bool, "use_tf32": bool,
    "cudnn_conv_use_max_workspace": bool, "prefer_nhwc": bool,
}
_TRT_OPTS: dict[str, Any] = {
    "device_id": int, "trt_fp16_enable": bool, "trt_int8_enable": bool,
    "trt_int8_calibration_table_name": str, "trt_engine_cache_enable": bool,
    "trt_engine_cache_path": str, "trt_timing_cache_enable": bool, "trt_timing_cache_path": str,
    "trt_max_workspace_size": int, "trt_builder_optimization_level": int,
    "trt_max_partition_iterations": int, "trt_min_subgraph_size": int,
    "trt_dla_enable": bool, "trt_dla_core": int, "trt_build_heuristics_enable": bool,
    "trt_sparsity_enable": bool, "trt_layer_norm_fp32_fallback": bool,
}
_OPENVINO_OPTS: dict[str, Any] = {
    "device_type": str, "precision": ("FP32", "FP16", "ACCURACY"), "num_of_threads": int,
    "cache_dir": str, "num_streams": int, "enable_qdq_optimizer": bool,
    "disable_dynamic_shapes": bool, "load_config": str,
}

KNOWN: dict[str, ProviderInfo] = {info.short: info for info in (
    ProviderInfo("CPUExecutionProvider", "cpu", "onnxruntime",
                 {"arena_extend_strategy": ("kNextPowerOfTwo", "kSameAsRequested")}),
    ProviderInfo("CUDAExecutionProvider", "cuda", "onnxruntime-gpu", _CUDA_OPTS,
                 {"memory_limit": "gpu_mem_limit", "conv_search": "cudnn_conv_algo_search"}),
    ProviderInfo("TensorrtExecutionProvider", "tensorrt",
                 "onnxruntime-gpu and tensorrt (pip install tensorrt)", _TRT_OPTS,
                 {"fp16": "trt_fp16_enable", "int8": "trt_int8_enable",
                  "engine_cache_path": "trt_engine_cache_path"}),
    ProviderInfo("NvTensorRTRTXExecutionProvider", "tensorrt-rtx", "onnxruntime-trt-rtx",
                 {"device_id": int}),
    ProviderInfo("DmlExecutionProvider", "directml", "onnxruntime-directml (Windows)",
                 {"device_id": int}),
    ProviderInfo("OpenVINOExecutionProvider", "openvino",
                 "onnxruntime-openvino, or the plugin onnxruntime-ep-openvino with library=",
                 _OPENVINO_OPTS),
    ProviderInfo("CoreMLExecutionProvider", "coreml", "onnxruntime (the macOS wheel)",
                 {"ModelFormat": ("MLProgram", "NeuralNetwork"),
                  "MLComputeUnits": ("ALL", "CPUOnly", "CPUAndGPU", "CPUAndNeuralEngine"),
                  "RequireStaticInputShapes": bool, "EnableOnSubgraphs": bool}),
    ProviderInfo("ROCMExecutionProvider", "rocm", "onnxruntime-rocm",
                 {"device_id": int, "gpu_mem_limit": int}),
    ProviderInfo("MIGraphXExecutionProvider", "migraphx", "onnxruntime-migraphx",
                 {"device_id": int, "migraphx_fp16_enable": bool, "migraphx_int8_enable": bool},
                 {"fp16": "migraphx_fp16_enable"}),
    ProviderInfo("QNNExecutionProvider", "qnn", "onnxruntime-qnn",
                 {"backend_path": str, "backend_type": ("cpu", "gpu", "htp", "saver")}),
    ProviderInfo("CANNExecutionProvider", "cann", "onnxruntime-cann", {"device_id": int}),
    ProviderInfo("XnnpackExecutionProvider", "xnnpack", "an onnxruntime build with XNNPACK",
                 {"intra_op_num_threads": int}),
    ProviderInfo("DnnlExecutionProvider", "dnnl", "an onnxruntime build with oneDNN",
                 {"use_arena": bool}),
    ProviderInfo("VitisAIExecutionProvider", "vitisai", "onnxruntime-vitisai"),
    ProviderInfo("WebGpuExecutionProvider", "webgpu", "an onnxruntime build with WebGPU"),
    ProviderInfo("AzureExecutionProvider", "azure", "onnxruntime"),
)}
CPU = KNOWN["cpu"]
_BY_ORT = {info.ort_name.lower(): info for info in KNOWN.values()}
_SHORT_ALIASES = {"trt": "tensorrt", "dml": "directml", "ov": "openvino", "nv": "tensorrt-rtx"}


@dataclass(frozen=True)
class ProviderSpec:
    """One requested provider: ONNX Runtime's name, its options (as ONNX Runtime takes them,
    values as text), and for a plugin the path of its shared library."""

    name: str
    options: Mapping[str, str] = field(default_factory=dict)
    library: str | None = None

    @property
    def info(self) -> ProviderInfo | None:
        return _BY_ORT.get(self.name.lower())

    @property
    def short(self) -> str:
        info = self.info
        return info.short if info else self.name

    def __hash__(self) -> int:  # options is a mapping: equal specs hash alike
        return hash((self.name, tuple(sorted(self.options.items())), self.library))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.options:
            out["options"] = dict(self.options)
        if self.library:
            out["library"] = self.library
        return out

    def __str__(self) -> str:
        opts = "".join(f":{k}={v}" for k, v in self.options.items())
        lib = f":library={self.library}" if self.library else ""
        return f"{self.short}{opts}{lib}"


@dataclass(frozen=True)
class ProviderSet:
    """The ordered providers a deployment asks for, and its fallback rule (``none``: a
    provider that does not load refuses the version; ``cpu``: serve on the CPU, said loudly)."""

    specs: tuple[ProviderSpec, ...] = (ProviderSpec(CPU.ort_name),)
    fallback: str = "none"

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def is_cpu_only(self) -> bool:
        return all(s.name == CPU.ort_name for s in self.specs)

    @property
    def key(self) -> str:
        """A stable text naming the set and the options that change results (precision), the
        key validation results are stored under: ``cuda+cpu``, ``tensorrt[fp16]+cuda+cpu``."""
        parts = []
        for s in self.specs:
            p = precision(s)
            parts.append(s.short + (f"[{p}]" if p != "fp32" else ""))
        return "+".join(parts)

    @property
    def precision(self) -> str:
        """The loosest precision any requested provider may compute in."""
        order = ("fp32", "fp16", "int8")
        return max((precision(s) for s in self.specs), key=order.index)

    def to_dict(self) -> dict[str, Any]:
        return {"providers": [s.to_dict() for s in self.specs], "fallback": self.fallback}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ProviderSet:
        """The inverse of :meth:`to_dict` (records stored by this version of lockgate)."""
        if not data:
            return cls()
        return cls(parse_providers(data.get("providers") or ["cpu"], "providers"),
                   check_fallback(str(data.get("fallback", "none")), "fallback"))

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.specs)


def precision(spec: ProviderSpec) -> str:
    """``int8``, ``fp16`` or ``fp32``: the precision the provider's options let it use."""
    o = {k: v.lower() for k, v in spec.options.items()}
    if o.get("trt_int8_enable") in ("1", "true") or o.get("migraphx_int8_enable") in ("1",
                                                                                    "true"):
        return "int8"
    if (o.get("trt_fp16_enable") in ("1", "true") or o.get("migraphx_fp16_enable") in ("1",
                                                                                      "true")
            or o.get("precision") == "fp16"):
        return "fp16"
    return "fp32"


def check_fallback(value: str, where: str) -> str:
    if value not in FALLBACKS:
        raise ConfigError(f"{where}: expected one of {list(FALLBACKS)}, got {value!r}")
    return value


def _info(name: str, where: str) -> ProviderInfo | None:
    """The known provider a name means; None for a name that could be a plugin's."""
    low = name.strip().lower()
    low = _SHORT_ALIASES.get(low, low)
    if low in KNOWN:
        return KNOWN[low]
    if low in _BY_ORT:
        return _BY_ORT[low]
    if low.endswith("executionprovider") or low.endswith("_ep") or low.endswith("ep"):
        return None
    raise ConfigError(
        f"{where}: unknown execution provider {name!r}",
        hint=f"known: {', '.join(sorted(KNOWN))}; a plugin provider is named by its full "
             "name (…ExecutionProvider) with library=PATH")


def _option_text(value: Any, kind: Any, where: str) -> str:
    """An option's value as ONNX Runtime takes it (text), checked against its type."""
    if isinstance(kind, tuple):
        text = str(value)
        if text not in kind:
            raise ConfigError(f"{where}: expected one of {list(kind)}, got {text!r}")
        return text
    if kind is bool:
        if isinstance(value, bool):
            return "1" if value else "0"
        low = str(value).strip().lower()
        if low in ("1", "true", "yes", "on"):
            return "1"
        if low in ("0", "false", "no", "off"):
            return "0"
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind is int:
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            number = int(str(value), 0) if isinstance(value, str) else int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if number < 0:
            raise ConfigError(f"{where}: must not be negative, got {number}")
        return str(number)
    if isinstance(value, dict | list):
        raise ConfigError(f"{where}: expected a scalar value, got {type(value).__name__}")
    return str(value)


def _spec(name: str, raw: Mapping[str, Any], where: str) -> ProviderSpec:
    info = _info(name, where)
    library = raw.get("library")
    options: dict[str, str] = {}
    for key, value in raw.items():
        if key in ("name", "library"):
            continue
        if info is None:
            options[key] = _option_text(value, str, f"{where}.{key}")
            continue
        real = info.aliases.get(key, key)
        if real not in info.options:
            known = sorted(set(info.options) | set(info.aliases))
            raise ConfigError(f"{where}: {info.short} has no option {key!r}",
                              hint=f"its options: {', '.join(known) or 'none'}")
        options[real] = _option_text(value, info.options[real], f"{where}.{key}")
    if info is None and not library:
        raise ConfigError(f"{where}: {name!r} is not a provider lockgate knows",
                          hint="a plugin execution provider needs library=PATH (its shared "
                               "library)")
    if library is not None and (not isinstance(library, str) or not library.strip()):
        raise ConfigError(f"{where}.library: expected the path of a shared library")
    ort_name = info.ort_name if info else name.strip()
    return ProviderSpec(ort_name, options, library)


def parse_providers(value: Any, where: str) -> tuple[ProviderSpec, ...]:
    """Providers from a TOML value (a list of names and tables) or a stored record."""
    if isinstance(value, str):
        return parse_providers_text(value, where)
    if not isinstance(value, Sequence) or not value:
        raise ConfigError(f"{where}: expected a non-empty list of providers")
    specs: list[ProviderSpec] = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if isinstance(item, str):
            specs.append(_spec(item, {}, at))
        elif isinstance(item, Mapping):
            name = item.get("name")
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{at}: a provider table needs name = \"...\"")
            opts = dict(item.get("options") or {}) if isinstance(item.get("options"),
                                                                  Mapping) else {}
            raw = {k: v for k, v in item.items() if k != "options"} | opts
            specs.append(_spec(name, raw, at))
        else:
            raise ConfigError(f"{at}: expected a name or a table, got {type(item).__name__}")
    return _checked(specs, where)


def parse_providers_text(text: str, where: str) -> tuple[ProviderSpec, ...]:
    """Providers from ``name:key=value:...,name,...`` (the command line, the environment)."""
    specs: list[ProviderSpec] = []
    for i, part in enumerate(p.strip() for p in text.split(",")):
        if not part:
            raise ConfigError(f"{where}: empty provider in {text!r}",
                              hint="separate providers with commas: cuda,cpu")
        name, *opts = part.split(":")
        raw: dict[str, str] = {}
        for opt in opts:
            key, sep, value = opt.partition("=")
            if not sep or not key:
                raise ConfigError(f"{where}: option {opt!r} of {name!r} is not key=value",
                                  hint="tensorrt:trt_fp16_enable=true:device_id=0")
            raw[key.strip()] = value.strip()
        specs.append(_spec(name, raw, f"{where}[{i}]"))
    return _checked(specs, where)


def _checked(specs: Sequence[ProviderSpec], where: str) -> tuple[ProviderSpec, ...]:
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}: {', '.join(dupes)} listed twice")
    if CPU.ort_name in names and names[-1] != CPU.ort_name:
        raise ConfigError(f"{where}: cpu must come last: ONNX Runtime gives each node to the "
                          "first provider that takes it")
    return tuple(specs)
