"""Environment drift policy: the differences between the registered and the serving environment
that serving knows (:mod:`lockgate.environment.drift` reports them), and the check of
``serve.environment_drift_ignore``, the ones that never count.
"""

from __future__ import annotations

from typing import Any

from lockgate.config.names import unknown_name
from lockgate.config.values import Settings

__all__ = ["ENVIRONMENT_DIFFERENCES", "check_drift_ignore"]

ENVIRONMENT_DIFFERENCES: tuple[str, ...] = (
    "onnxruntime major.minor",
    "execution providers",
    "CUDA major",
    "cuDNN major",
    "onnxruntime CUDA major",
    "onnxruntime cuDNN major",
    "TensorRT major.minor",
    "NVIDIA driver major",
    "GPU model",
)
"""Every kind of environment difference, as its ``what`` is written."""


def check_drift_ignore(value: Any, s: Settings) -> None:
    """Each ignored difference is one serving knows."""
    for what in value:
        if what not in ENVIRONMENT_DIFFERENCES:
            raise unknown_name(f"serve.environment_drift_ignore: unknown difference {what!r}",
                               what, ENVIRONMENT_DIFFERENCES)
