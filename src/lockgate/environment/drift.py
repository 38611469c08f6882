"""Environment drift: what in the serving environment differs, in ways that matter, from the
environment a version was registered (and its parity proven) in.

What matters: ONNX Runtime major.minor, the execution provider the session uses, and the CUDA and
cuDNN major versions. Patch releases and unrelated packages do not count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Difference", "compare", "serving_environment"]


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


def _major_minor(version: Any) -> str | None:
    if not isinstance(version, str) or version.startswith("unavailable"):
        return None
    parts = version.split("+")[0].split(".")
    return ".".join(parts[:2])


def _major(version: Any) -> str | None:
    if isinstance(version, int | str) and str(version).isdigit():
        # torch reports cuDNN as one integer: 8902 is 8.9.2, 91000 is 9.10.0.
        n = int(version)
        return str(n // 10000 if n >= 10000 else n // 1000)
    mm = _major_minor(version)
    return mm.split(".")[0] if mm else None


def serving_environment(providers: Sequence[str]) -> dict[str, Any]:
    """The parts of this process's environment that :func:`compare` looks at."""
    import onnxruntime

    env: dict[str, Any] = {
        "onnxruntime": {"version": onnxruntime.__version__, "session_providers": list(providers)},
    }
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        env["torch"] = {"cuda": torch.version.cuda, "cudnn": str(cudnn) if cudnn else None}
    return env


def compare(registered: Mapping[str, Any], serving: Mapping[str, Any]) -> list[Difference]:
    """The differences that matter; fields unknown on either side are not compared."""
    out: list[Difference] = []
    reg_ort = _major_minor(_get(registered, "onnxruntime", "version"))
    srv_ort = _major_minor(_get(serving, "onnxruntime", "version"))
    if reg_ort and srv_ort and reg_ort != srv_ort:
        out.append(Difference("onnxruntime major.minor", reg_ort, srv_ort))
    reg_prov = _get(registered, "onnxruntime", "session_providers")
    srv_prov = _get(serving, "onnxruntime", "session_providers")
    if isinstance(reg_prov, list) and isinstance(srv_prov, list) and reg_prov and srv_prov \
            and reg_prov[0] != srv_prov[0]:
        out.append(Difference("execution provider", str(reg_prov[0]), str(srv_prov[0])))
    for what, key in (("CUDA major", "cuda"), ("cuDNN major", "cudnn")):
        reg = _major(_get(registered, "torch", key))
        srv = _major(_get(serving, "torch", key))
        if reg and srv and reg != srv:
            out.append(Difference(what, reg, srv))
    return out
