"""Open ONNX Runtime sessions on the providers a deployment asks for, and say which ones they
really use.

ONNX Runtime quietly runs a model on the CPU when a requested provider cannot load (a missing
wheel, a missing CUDA library, no device). That is an unrecorded change of the environment a
version's parity was proven in, so here it is checked after every session is created: a
requested provider the session does not use refuses the load (:class:`ProviderUnavailableError`),
unless the set says ``fallback = "cpu"``, in which case the :class:`Placement` says it fell back
and callers warn, count and report it.

Plugin execution providers (ONNX Runtime 1.23 and later) are registered from their library once
per process and given the devices they list.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import contextlib
import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import onnxruntime as ort

from lockgate.config.providers import CPU, ProviderSet, ProviderSpec
from lockgate.errors import ServeError

__all__ = ["ORT_WHEELS", "Placement", "ProviderUnavailableError", "open_session",
           "provider_set", "wheel_clash"]

#: The wheels that install the ``onnxruntime`` module (one of them at a time).
ORT_WHEELS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
              "onnxruntime-rocm", "onnxruntime-migraphx", "onnxruntime-qnn", "onnxruntime-cann",
              "onnxruntime-trt-rtx", "onnxruntime-vitisai", "onnxruntime-training",
              "ort-nightly", "ort-nightly-gpu")

_registered: dict[str, str] = {}
_lock = threading.Lock()
_preloaded: list[bool] = []  # CUDA and cuDNN from pip loaded (once per process)
_CUDA_FAMILY = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})


class ProviderUnavailableError(ServeError):
    """A requested execution provider is not available, or the session did not use it."""


@dataclass(frozen=True)
class Placement:
    """What was asked for and what the session uses."""

    requested: tuple[str, ...]
    used: tuple[str, ...]
    fallback: str = "none"
    missing: tuple[str, ...] = ()
    reasons: tuple[str, ...] = field(default=())

    @property
    def fell_back(self) -> bool:
        return bool(self.missing)

    def to_dict(self) -> dict[str, Any]:
        return {"requested": list(self.requested), "used": list(self.used),
                "fallback": self.fallback, "fell_back": self.fell_back,
                "missing": list(self.missing), "reasons": list(self.reasons)}


def provider_set(providers: ProviderSet | Sequence[str] | None) -> ProviderSet:
    """A :class:`ProviderSet` from a set, a list of ONNX Runtime names, or None (the CPU)."""
    if providers is None:
        return ProviderSet()
    if isinstance(providers, ProviderSet):
        return providers
    names = list(providers)
    return ProviderSet(tuple(ProviderSpec(n) for n in names)) if names else ProviderSet()


def _register(spec: ProviderSpec) -> str | None:
    """Register a plugin's library (once per process); None when it loaded, else why not."""
    assert spec.library is not None
    with _lock:
        if _registered.get(spec.name) == spec.library:
            return None
        if spec.name in _registered:
            return (f"{spec.name} is already registered from {_registered[spec.name]}, "
                    f"not {spec.library}")
        if not Path(spec.library).is_file():
            return f"its library {spec.library} does not exist"
        register = getattr(ort, "register_execution_provider_library", None)
        if register is None:
            return f"onnxruntime {ort.__version__} cannot load plugin providers (1.23+ can)"
        try:
            register(spec.name, spec.library)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            return f"its library did not load: {exc}"
        _registered[spec.name] = spec.library
        return None


def _plugin_devices(spec: ProviderSpec) -> tuple[list[Any], str | None]:
    """The devices a registered plugin offers for this spec (``device_type`` filters)."""
    devices = [d for d in ort.get_ep_devices() if d.ep_name == spec.name]
    wanted = spec.options.get("device_type", "").upper()
    if wanted and devices and wanted in ("CPU", "GPU", "NPU"):
        devices = [d for d in devices if str(d.device.type).upper().endswith(wanted)]
    if not devices:
        what = f" of type {wanted}" if wanted else ""
        return [], f"it lists no device{what} on this machine"
    return devices, None


def _why_missing(spec: ProviderSpec, available: Sequence[str]) -> str | None:
    """Why a classic (built-in) provider cannot be used, before trying; None when it might."""
    if spec.name in available:
        return None
    info = spec.info
    wheel = info.wheel if info else "a wheel that carries it"
    return (f"this onnxruntime {ort.__version__} ({', '.join(available)}) does not carry it: "
            f"install {wheel}")


def open_session(model: bytes | Path, opts: ort.SessionOptions,
                 providers: ProviderSet) -> tuple[ort.InferenceSession, Placement]:
    """A session on ``providers``, checked against what it really uses.

    Raises :class:`ProviderUnavailableError` when a requested provider is missing and the set
    does not allow the CPU fallback; :class:`ServeError` when ONNX Runtime cannot load the model.
    """
    available = ort.get_available_providers()
    requested = tuple(s.name for s in providers.specs)
    if not providers.is_cpu_only:
        clash = wheel_clash()
        if clash:
            raise ProviderUnavailableError(
                clash, hint="uninstall every ONNX Runtime wheel, then install the one you want "
                            "(docs/serving.md, Hardware)")
    _preload_cuda(providers, available)
    chosen: list[tuple[ProviderSpec, list[Any] | None]] = []  # a plugin's devices, or None
    missing: list[str] = []
    reasons: list[str] = []
    for spec in providers.specs:
        why: str | None
        devices: list[Any] | None = None
        if spec.library:
            why = _register(spec)
            if why is None:
                devices, why = _plugin_devices(spec)
        else:
            why = _why_missing(spec, available)
        if why is None:
            chosen.append((spec, devices))
        else:
            missing.append(spec.name)
            reasons.append(f"{spec.short}: {why}")
    _refuse_missing(providers, missing, reasons)
    kwargs: dict[str, Any] = {}
    if any(devices is not None for _, devices in chosen):
        # ONNX Runtime ignores the providers a SessionOptions was given (the plugin's devices)
        # when providers= is passed too: every provider goes on the options, in order.
        for spec, why in _add_to_options(opts, chosen):
            missing.append(spec.name)
            reasons.append(f"{spec.short}: {why}")
        _refuse_missing(providers, missing, reasons)
    else:
        classic = [(spec.name, dict(spec.options)) for spec, _ in chosen]
        if not any(name == CPU.ort_name for name, _ in classic):
            classic.append((CPU.ort_name, {}))  # what a fallback runs on
        kwargs = {"providers": [n for n, _ in classic],
                  "provider_options": [o for _, o in classic]}
    source = model if isinstance(model, bytes) else str(model)
    try:
        session = ort.InferenceSession(source, sess_options=opts, **kwargs)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ServeError(f"ONNX Runtime could not load the model: {exc}") from exc
    used = tuple(session.get_providers())
    for name in requested:
        if name not in used and name not in missing:
            missing.append(name)
            reasons.append(f"{name}: requested, but the session does not use it (ONNX Runtime "
                           "could not initialise it: a missing library, driver or device)")
    _refuse_missing(providers, missing, reasons)
    return session, Placement(requested, used, providers.fallback, tuple(missing),
                              tuple(reasons))


def _preload_cuda(providers: ProviderSet, available: Sequence[str]) -> None:
    """onnxruntime-gpu finds the CUDA and cuDNN libraries installed from pip (the ``nvidia``
    packages of ``lockgate[gpu]``) only once they are loaded: load them, once per process,
    before the first CUDA or TensorRT session. Where they do not load, the session does not
    use CUDA and is refused or falls back as for any missing provider."""
    if (_preloaded or "CUDAExecutionProvider" not in available
            or not any(s.name in _CUDA_FAMILY for s in providers.specs)
            or importlib.util.find_spec("nvidia") is None):
        return
    with _lock:
        if not _preloaded:
            preload = getattr(ort, "preload_dlls", None)
            if preload is not None:
                with contextlib.suppress(Exception):  # what did not load shows as unused
                    preload()
            _preloaded.append(True)


def _add_to_options(opts: ort.SessionOptions,
                    chosen: Sequence[tuple[ProviderSpec, list[Any] | None]],
                    ) -> list[tuple[ProviderSpec, str]]:
    """Put every chosen provider on ``opts`` in order (a session with a plugin provider); the
    ones ONNX Runtime refused, with why. A built-in provider is given the devices ONNX Runtime
    lists for it, else added by name; the CPU is always there last."""
    refused: list[tuple[ProviderSpec, str]] = []
    listed = ort.get_ep_devices()
    for spec, devices in chosen:
        try:
            if devices is None:
                devices = [d for d in listed if d.ep_name == spec.name] or None
            if devices is not None:
                opts.add_provider_for_devices(devices, dict(spec.options))
            else:
                opts.add_provider(spec.name, dict(spec.options))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            refused.append((spec, f"ONNX Runtime cannot add it next to a plugin provider: {exc}"))
    return refused


def wheel_clash(path: Sequence[str] | None = None) -> str | None:
    """Why the ONNX Runtime install is ambiguous, or None: two ONNX Runtime wheels (``onnxruntime``
    and ``onnxruntime-gpu``, ``-openvino``, ...) installed into one directory. They all install
    the ``onnxruntime`` module, so the files of the last one installed overwrite the other's
    and neither wheel's providers can be relied on. ``path`` is where to look (``sys.path``)."""
    found: dict[str, list[str]] = {}
    dists = metadata.distributions() if path is None else metadata.distributions(path=list(path))
    for dist in dists:
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in ORT_WHEELS:
            where = str(dist.locate_file(""))
            label = f"{name} {dist.version}"
            if label not in found.setdefault(where, []):
                found[where].append(label)
    for where, wheels in found.items():
        if len(wheels) > 1:
            return (f"{' and '.join(sorted(wheels))} are installed side by side in {where}: "
                    "they share the onnxruntime module, whose files are those of the last "
                    "one installed")
    return None


def _refuse_missing(providers: ProviderSet, missing: Sequence[str],
                    reasons: Sequence[str]) -> None:
    if missing and providers.fallback != "cpu":
        raise ProviderUnavailableError(
            "execution provider not available: " + "; ".join(reasons),
            hint="install what it needs, ask for other providers, or allow "
                 "fallback = \"cpu\" (the model then runs on the CPU, reported as such)")
