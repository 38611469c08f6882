"""Environment drift: what in the serving environment differs, in ways that matter, from the
environment a version was registered (and its parity proven) in.

What matters (each a :class:`Difference` whose ``what`` is one of :data:`DIFFERENCES`):

- ``onnxruntime major.minor``; ``execution providers``: the session's whole provider list, in
  order; ``CUDA major`` and ``cuDNN major`` of torch, when torch is loaded on both sides;
- when either side's session runs on an NVIDIA provider (CUDA, TensorRT, TensorRT-RTX):
  ``onnxruntime CUDA major`` and ``onnxruntime cuDNN major`` (the versions the ONNX Runtime wheel
  was built for), ``TensorRT major.minor``, ``NVIDIA driver major`` and ``GPU model``. A
  CPU-only session does not depend on them, so they do not count for it.

Patch releases and unrelated packages do not count, and a fact unknown on either side (an
``"unavailable: ..."`` text, or a record from before it was captured) is not compared.

A version is held to the providers it was registered on, or to those of a provider set it
passed ``infra_validation`` on (:func:`reference_environment`): parity was proven there.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lockgate.config.environment import ENVIRONMENT_DIFFERENCES

__all__ = ["DIFFERENCES", "Difference", "compare", "counted", "reference_environment",
           "serving_environment"]

DIFFERENCES = ENVIRONMENT_DIFFERENCES
"""Every ``what`` a :class:`Difference` can have (``serve.environment_drift_ignore`` names
them)."""

_NVIDIA_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider",
                               "NvTensorRTRTXExecutionProvider"})


@dataclass(frozen=True)
class Difference:
    what: str
    registered: str
    serving: str

    def to_dict(self) -> dict[str, str]:
        return {"what": self.what, "registered": self.registered, "serving": self.serving}

    def __str__(self) -> str:
        return f"{self.what}: registered {self.registered}, serving {self.serving}"


def _get(env: Mapping[str, Any], *path: str) -> Any:
    cur: Any = env
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def _known(version: Any) -> str | None:
    if not isinstance(version, str | int) or isinstance(version, bool):
        return None
    text = str(version).strip()
    return None if not text or text.startswith("unavailable") else text


def _major_minor(version: Any) -> str | None:
    text = _known(version)
    if text is None:
        return None
    parts = text.split("+")[0].split(".")
    return ".".join(parts[:2])


def _major(version: Any) -> str | None:
    if isinstance(version, int | str) and str(version).isdigit():
        # torch reports cuDNN as one integer: 8902 is 8.9.2, 91000 is 9.10.0.
        n = int(version)
        if n >= 1000:
            return str(n // 10000 if n >= 10000 else n // 1000)
        return str(n)  # a bare major ("9")
    mm = _major_minor(version)
    return mm.split(".")[0] if mm else None


def _providers(env: Mapping[str, Any]) -> list[str] | None:
    value = _get(env, "onnxruntime", "session_providers")
    if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        return value
    return None


def serving_environment(providers: Sequence[str]) -> dict[str, Any]:
    """The parts of this process's environment that :func:`compare` looks at, ``providers``
    being the execution providers the serving session uses."""
    import sys

    from lockgate.environment.fingerprint import accelerator_environment

    env: dict[str, Any] = accelerator_environment(providers)
    env["onnxruntime"].pop("available_providers", None)
    torch = sys.modules.get("torch")
    if torch is not None:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        env["torch"] = {"cuda": torch.version.cuda, "cudnn": str(cudnn) if cudnn else None}
    return env


def reference_environment(registered: Mapping[str, Any],
                          proven: Mapping[str, Mapping[str, Any]],
                          providers: Sequence[str]) -> Mapping[str, Any]:
    """What a session on ``providers`` is compared with: the registered environment, with the
    session providers of a provider set in ``proven`` (the sets the version passed
    infra_validation on, as :func:`lockgate.api.validations.validated_sets` gives them) whose
    validation session used exactly ``providers``."""
    used = list(providers)
    if used == _providers(registered):
        return registered
    for record in proven.values():
        if list(record.get("providers_used") or ()) == used:
            ort = registered.get("onnxruntime")
            return {**registered,
                    "onnxruntime": {**(ort if isinstance(ort, Mapping) else {}),
                                    "session_providers": used}}
    return registered


def _trt(version: Any) -> str | None:
    """TensorRT major.minor (a bare major when only the library's major is known)."""
    return _major_minor(version)


def _same_trt(reg: str, srv: str) -> bool:
    """Equal, or equal majors when one side knows only the major (``libnvinfer.so.10``)."""
    if "." in reg and "." in srv:
        return reg == srv
    return reg.split(".")[0] == srv.split(".")[0]


def _plain_major(version: Any) -> str | None:
    mm = _major_minor(version)
    return mm.split(".")[0] if mm else None


_Read = Callable[[Any], str | None]
_HARDWARE: tuple[tuple[str, tuple[str, ...], _Read], ...] = (
    ("onnxruntime CUDA major", ("onnxruntime", "build", "cuda"), _plain_major),
    ("onnxruntime cuDNN major", ("onnxruntime", "build", "cudnn"), _plain_major),
    ("NVIDIA driver major", ("nvidia_driver",), _plain_major),
    ("GPU model", ("gpu", "name"), _known),
)


def compare(registered: Mapping[str, Any], serving: Mapping[str, Any]) -> list[Difference]:
    """The differences that matter; fields unknown on either side are not compared."""
    out: list[Difference] = []
    reg_ort = _major_minor(_get(registered, "onnxruntime", "version"))
    srv_ort = _major_minor(_get(serving, "onnxruntime", "version"))
    if reg_ort and srv_ort and reg_ort != srv_ort:
        out.append(Difference("onnxruntime major.minor", reg_ort, srv_ort))
    reg_prov, srv_prov = _providers(registered), _providers(serving)
    if reg_prov and srv_prov and reg_prov != srv_prov:
        out.append(Difference("execution providers", ", ".join(reg_prov), ", ".join(srv_prov)))
    for what, key in (("CUDA major", "cuda"), ("cuDNN major", "cudnn")):
        reg = _major(_get(registered, "torch", key))
        srv = _major(_get(serving, "torch", key))
        if reg and srv and reg != srv:
            out.append(Difference(what, reg, srv))
    if _NVIDIA_PROVIDERS & {*(reg_prov or ()), *(srv_prov or ())}:
        out.extend(_hardware(registered, serving))
    return out


def _hardware(registered: Mapping[str, Any], serving: Mapping[str, Any]) -> list[Difference]:
    out: list[Difference] = []
    for what, path, read in _HARDWARE:
        reg, srv = read(_get(registered, *path)), read(_get(serving, *path))
        if reg and srv and reg != srv:
            out.append(Difference(what, reg, srv))
    reg_trt = _trt(_get(registered, "tensorrt", "version"))
    srv_trt = _trt(_get(serving, "tensorrt", "version"))
    if reg_trt and srv_trt and not _same_trt(reg_trt, srv_trt):
        out.append(Difference("TensorRT major.minor", reg_trt, srv_trt))
    return out


def counted(differences: Sequence[Difference], ignore: Collection[str]) -> list[Difference]:
    """The differences that count under policy: those whose ``what`` is not in ``ignore``."""
    return [d for d in differences if d.what not in ignore]
