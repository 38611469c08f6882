"""The environment a version was registered in, as a JSON-ready dict.

Every field is present. One that cannot be read holds the string ``"unavailable: <reason>"``.
Reading is quick and bounded: the installed-distribution list, CPU model, GPUs and TensorRT are
read once per process (see :mod:`lockgate.environment.hardware`); torch is never imported here
just to read its version.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lockgate.environment.hardware import (
    gpu_facts,
    onnxruntime_build,
    tensorrt_facts,
    unavailable,
)

__all__ = [
    "accelerator_environment",
    "capture_environment",
    "installed_distributions",
    "unavailable",
]

_GIT_TIMEOUT_S = 5.0


def capture_environment(
    *,
    seeds: Mapping[str, int] | None = None,
    providers: Sequence[str] | None = None,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Python, OS, libc, CPU, packages, torch, ONNX Runtime (with its build's CUDA and cuDNN),
    TensorRT, the NVIDIA driver and GPUs, git state and seeds.

    ``providers`` are the execution providers a real ORT session used, the whole list in the
    session's order; ``cwd`` is where the git state is read (default: the current directory).
    """
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "compiler": platform.python_compiler() or unavailable("not reported"),
        },
        "os": {
            "system": platform.system() or unavailable("not reported"),
            "release": platform.release() or unavailable("not reported"),
            "platform": platform.platform(),
        },
        "libc": _libc(),
        "cpu": _cpu(),
        "packages": installed_distributions(),
        "torch": _torch(),
        **accelerator_environment(providers),
        "git": _git(cwd or Path.cwd()),
        "seeds": (
            {str(k): int(v) for k, v in seeds.items()}
            if seeds is not None
            else unavailable("no seeds were given")
        ),
    }


def accelerator_environment(providers: Sequence[str] | None) -> dict[str, Any]:
    """The ``onnxruntime``, ``tensorrt``, ``nvidia_driver`` and ``gpu`` fields: what the
    registration fingerprint and the serving environment both record."""
    gpu = gpu_facts()
    return {
        "onnxruntime": _onnxruntime(providers),
        "tensorrt": tensorrt_facts(),
        "nvidia_driver": gpu["driver"] if isinstance(gpu, dict) else gpu,
        "gpu": gpu,
    }


@functools.cache
def _installed() -> tuple[tuple[str, str], ...]:
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.setdefault(str(name), str(dist.version))
    return tuple(sorted(found.items(), key=lambda kv: kv[0].lower()))


def installed_distributions() -> dict[str, str]:
    """Every installed distribution and its version, sorted by name (read once per process)."""
    return dict(_installed())


def _libc() -> str:
    name, version = platform.libc_ver()
    if not name:
        return unavailable(f"no C library version found on {platform.system() or 'this OS'}")
    return f"{name} {version}"


def _cpu() -> dict[str, Any]:
    return {
        "machine": platform.machine() or unavailable("not reported"),
        "processor": platform.processor() or unavailable("not reported"),
        "count": os.cpu_count() or unavailable("os.cpu_count() returned None"),
        "model": _cpu_model(),
    }


@functools.cache
def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return unavailable("/proc/cpuinfo does not exist on this OS")
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError as exc:
        return unavailable(f"cannot read /proc/cpuinfo: {exc}")
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("model name", "Model", "Hardware", "cpu model"):
            return value.strip()
    return unavailable("/proc/cpuinfo names no CPU model")


def _torch() -> dict[str, Any]:
    """torch's version, CUDA and cuDNN; cuDNN only when torch is already imported."""
    torch = sys.modules.get("torch")
    if torch is not None:
        version = getattr(torch, "version", None)
        cudnn = unavailable("torch.backends.cudnn is not loaded")
        try:
            value = torch.backends.cudnn.version()
            cudnn = str(value) if value is not None else unavailable("torch has no cuDNN")
        except Exception as exc:  # a broken CUDA install raises from here
            cudnn = unavailable(f"torch.backends.cudnn.version() failed: {exc}")
        return {
            "version": str(torch.__version__),
            "cuda": str(getattr(version, "cuda", None) or unavailable("CPU-only torch build")),
            "cudnn": cudnn,
        }
    spec = importlib.util.find_spec("torch")
    if spec is None:
        reason = unavailable("torch is not installed")
        return {"version": reason, "cuda": reason, "cudnn": reason}
    facts = _torch_version_file(spec.submodule_search_locations)
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        version = facts.get("__version__") or unavailable("torch has no distribution metadata")
    cuda = facts.get("cuda", unavailable("torch/version.py could not be read"))
    return {
        "version": version,
        "cuda": cuda or unavailable("CPU-only torch build"),
        "cudnn": unavailable("torch is not imported in this process"),
    }


def _torch_version_file(locations: Sequence[str] | None) -> dict[str, str | None]:
    """Top-level constants of ``torch/version.py``, read without importing torch."""
    for folder in locations or ():
        path = Path(folder) / "version.py"
        try:
            tree = ast.parse(path.read_text())
        except (OSError, SyntaxError, ValueError):
            continue
        facts: dict[str, str | None] = {}
        for node in tree.body:
            target: ast.expr | None = None
            if isinstance(node, ast.AnnAssign):
                target = node.target
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
            value = getattr(node, "value", None)
            if (
                isinstance(target, ast.Name)
                and isinstance(value, ast.Constant)
                and (value.value is None or isinstance(value.value, str))
            ):
                facts[target.id] = value.value
        return facts
    return {}


def _onnxruntime(providers: Sequence[str] | None) -> dict[str, Any]:
    try:
        from lockgate.runtime import predictor as runtime  # sets ORT_DISABLE_TELEMETRY first
    except Exception as exc:  # missing or broken install
        reason = unavailable(f"onnxruntime cannot be imported: {exc}")
        return {"version": reason, "available_providers": reason, "session_providers": reason,
                "build": onnxruntime_build({})}
    return {
        "version": str(getattr(sys.modules.get("onnxruntime"), "__version__", "unknown")),
        "available_providers": runtime.available_providers(),
        "session_providers": (
            list(providers)
            if providers is not None
            else unavailable("no ONNX Runtime session was opened")
        ),
        "build": onnxruntime_build(installed_distributions()),
    }


def _git(cwd: Path) -> dict[str, Any]:
    git = shutil.which("git")
    if git is None:
        reason = unavailable("git is not on PATH")
        return {"commit": reason, "dirty": reason}
    head = _run_git(git, cwd, "rev-parse", "--verify", "HEAD")
    if head.startswith("unavailable:"):
        return {"commit": head, "dirty": head}
    status = _run_git(git, cwd, "status", "--porcelain")
    dirty: bool | str = status if status.startswith("unavailable:") else bool(status)
    return {"commit": head, "dirty": dirty}


def _run_git(git: str, cwd: Path, *args: str) -> str:
    if not cwd.is_dir():
        return unavailable(f"{cwd} is not a directory")
    try:
        done = subprocess.run(
            [git, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return unavailable(f"git {args[0]} failed: {exc}")
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
        return unavailable(f"git {args[0]} in {cwd}: {first}")
    return done.stdout.strip()
