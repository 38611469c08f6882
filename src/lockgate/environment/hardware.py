"""Accelerator facts: the GPUs and NVIDIA driver, ONNX Runtime's build (its CUDA and cuDNN), and
TensorRT.

Every probe is bounded and never raises: a fact that cannot be read is the string
``"unavailable: <reason>"``. ``nvidia-smi`` runs at most once per process for each ``PATH`` (it is
killed, with anything it started, after :data:`SMI_TIMEOUT_S`); NVML (``pynvml``) is asked when
``nvidia-smi`` gives nothing. TensorRT is read from its distribution metadata, from an already
imported ``tensorrt`` module, or from the file name of a ``libnvinfer`` library; it is imported
only when it is installed without metadata.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SMI_TIMEOUT_S",
    "gpu_facts",
    "onnxruntime_build",
    "tensorrt_facts",
    "unavailable",
]

SMI_TIMEOUT_S = 3.0
"""How long ``nvidia-smi`` may take before it is killed and the GPU facts are unavailable."""

_SMI_QUERY = ("--query-gpu=name,driver_version,memory.total", "--format=csv,noheader")
_TRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11",
                      "tensorrt-cu13-libs", "tensorrt-cu12-libs", "tensorrt-cu11-libs")
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
             "/usr/local/lib", "/usr/local/tensorrt/lib", "/usr/local/cuda/lib64")
_NVINFER = re.compile(r"^libnvinfer\.so\.(\d+(?:\.\d+)*)$")


def unavailable(reason: str) -> str:
    """The value of a field that could not be read."""
    return f"unavailable: {reason}"


# -- GPUs and driver ---------------------------------------------------------------------------
def gpu_facts() -> dict[str, Any] | str:
    """``{"count", "name", "driver", "memory", "devices", "source"}`` of this machine's NVIDIA
    GPUs, or an ``"unavailable: ..."`` text saying why there are none to report.

    ``name`` is the model of every GPU (distinct names joined by ``", "``), ``memory`` the first
    GPU's total memory, ``devices`` one ``"name (memory)"`` text per GPU."""
    return copy.deepcopy(_gpu_probe(os.environ.get("PATH")))


@functools.cache
def _gpu_probe(path: str | None) -> dict[str, Any] | str:
    reasons: list[str] = []
    smi = shutil.which("nvidia-smi", path=path)
    if smi is None:
        reasons.append("nvidia-smi is not on PATH")
    else:
        rows = _smi_rows(smi)
        if isinstance(rows, str):
            reasons.append(f"nvidia-smi: {rows}")
        else:
            return _section(rows, "nvidia-smi")
    rows = _nvml_rows()
    if isinstance(rows, str):
        reasons.append(rows)
        return unavailable("; ".join(reasons))
    return _section(rows, "nvml")


def _section(rows: Sequence[tuple[str, str, str]], source: str) -> dict[str, Any]:
    names = list(dict.fromkeys(name for name, _, _ in rows))
    drivers = list(dict.fromkeys(driver for _, driver, _ in rows))
    return {
        "count": len(rows),
        "name": ", ".join(names),
        "driver": ", ".join(drivers),
        "memory": rows[0][2],
        "devices": [f"{name} ({memory})" for name, _, memory in rows],
        "source": source,
    }


def _smi_rows(smi: str) -> list[tuple[str, str, str]] | str:
    """One (name, driver, memory) row per GPU, or why there is none."""
    done = _run_bounded([smi, *_SMI_QUERY], SMI_TIMEOUT_S)
    if isinstance(done, str):
        return done
    code, out, err = done
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if code != 0 or not lines:
        message = (err or out).strip().splitlines()
        return f"exited {code}: {message[0] if message else 'no output'}"
    rows: list[tuple[str, str, str]] = []
    for line in lines:
        parts = [p.strip() for p in line.rsplit(",", 2)]
        if len(parts) != 3 or not all(parts):
            return f"unexpected output {line[:120]!r}"
        name, driver, memory = (p if p not in ("[N/A]", "N/A") else unavailable("not reported")
                                for p in parts)
        rows.append((name, driver, memory))
    return rows


def _run_bounded(argv: list[str], timeout: float) -> tuple[int, str, str] | str:
    """Run ``argv``; after ``timeout`` seconds kill it and everything it started."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace",
                                start_new_session=True)
    except (OSError, ValueError) as exc:
        return f"cannot run: {exc}"
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        return f"no answer within {timeout:g} s (killed)"
    return proc.returncode, out, err


def _kill(proc: subprocess.Popen[str]) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            proc.kill()
    except OSError:
        proc.kill()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    proc.wait()


def _nvml_rows() -> list[tuple[str, str, str]] | str:
    """The same rows from NVML (``pynvml``), or why not."""
    if importlib.util.find_spec("pynvml") is None:
        return "pynvml is not installed"
    try:
        nvml: Any = importlib.import_module("pynvml")
        nvml.nvmlInit()
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
            rows = []
            for i in range(int(nvml.nvmlDeviceGetCount())):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                total = int(nvml.nvmlDeviceGetMemoryInfo(handle).total)
                rows.append((_text(nvml.nvmlDeviceGetName(handle)), driver,
                             f"{total // (1 << 20)} MiB"))
        finally:
            nvml.nvmlShutdown()
    except Exception as exc:  # NVMLError when no driver is loaded
        return f"pynvml: {exc}"
    return rows or "pynvml: no GPU found"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- ONNX Runtime's build ----------------------------------------------------------------------
def onnxruntime_build(installed: dict[str, str]) -> dict[str, str]:
    """The installed ONNX Runtime wheel: ``package``, the ``cuda`` and ``cudnn`` versions it was
    built for (``cudnn`` from the build facts, else from the ``nvidia-cudnn-cu*`` wheel in
    ``installed``) and ``info`` (``onnxruntime.get_build_info()``)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        ort: Any = importlib.import_module("onnxruntime")
        info: Any = importlib.import_module("onnxruntime.capi.build_and_package_info")
    except Exception as exc:  # missing or broken install
        reason = unavailable(f"onnxruntime cannot be imported: {exc}")
        return {"package": reason, "cuda": reason, "cudnn": reason, "info": reason}
    package = str(getattr(info, "package_name", "onnxruntime"))
    cuda = getattr(info, "cuda_version", None)
    get_info = getattr(ort, "get_build_info", None)
    try:
        text = str(get_info()) if callable(get_info) else unavailable("no get_build_info()")
    except Exception as exc:  # a build without the call
        text = unavailable(f"get_build_info() failed: {exc}")
    if not cuda:
        no = unavailable(f"{package} is not built with CUDA")
        return {"package": package, "cuda": no, "cudnn": no, "info": text}
    return {"package": package, "cuda": str(cuda),
            "cudnn": _cudnn(info, str(cuda), installed), "info": text}


def _cudnn(info: Any, cuda: str, installed: dict[str, str]) -> str:
    built = getattr(info, "cudnn_version", None)
    if built:
        return str(built)
    major = cuda.split(".")[0]
    lowered = {name.lower().replace("_", "-"): v for name, v in installed.items()}
    for dist in (f"nvidia-cudnn-cu{major}", "nvidia-cudnn"):
        if dist in lowered:
            return lowered[dist]
    return unavailable(f"the build names no cuDNN version and nvidia-cudnn-cu{major} is not "
                       "installed (a system cuDNN is not read)")


# -- TensorRT ----------------------------------------------------------------------------------
def tensorrt_facts() -> dict[str, str]:
    """``{"version", "source"}`` of TensorRT: the ``tensorrt`` module's distribution (or the
    module itself), else the newest ``libnvinfer.so.*`` on ``LD_LIBRARY_PATH``, in the usual
    library folders or in the ``tensorrt_libs`` wheel."""
    return dict(_tensorrt(os.environ.get("LD_LIBRARY_PATH", "")))


@functools.cache
def _tensorrt(ld_path: str) -> tuple[tuple[str, str], ...]:
    module = sys.modules.get("tensorrt")
    if module is not None:
        return (("version", str(getattr(module, "__version__", "unknown"))),
                ("source", "tensorrt module"))
    if _find_spec("tensorrt") is not None:
        for dist in _TRT_DISTRIBUTIONS:
            try:
                return (("version", importlib.metadata.version(dist)),
                        ("source", f"{dist} distribution"))
            except importlib.metadata.PackageNotFoundError:
                continue
        try:
            module = importlib.import_module("tensorrt")
            return (("version", str(module.__version__)), ("source", "tensorrt module"))
        except Exception as exc:  # a broken install
            return (("version", unavailable(f"tensorrt cannot be imported: {exc}")),
                    ("source", "tensorrt module"))
    found = _libnvinfer([*ld_path.split(os.pathsep), *_LIB_DIRS, *_wheel_lib_dirs()])
    if found is not None:
        return (("version", found[0]), ("source", found[1]))
    reason = unavailable("no tensorrt module and no libnvinfer library found")
    return (("version", reason), ("source", reason))


def _find_spec(name: str) -> Any:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _wheel_lib_dirs() -> list[str]:
    spec = _find_spec("tensorrt_libs")
    return list(spec.submodule_search_locations or ()) if spec is not None else []


def _libnvinfer(folders: Sequence[str]) -> tuple[str, str] | None:
    """The highest version a ``libnvinfer.so.X[.Y[.Z]]`` in ``folders`` names, and its path."""
    best: tuple[tuple[int, ...], str, str] | None = None
    for folder in dict.fromkeys(f for f in folders if f):
        try:
            entries = list(Path(folder).glob("libnvinfer.so.*"))
        except OSError:
            continue
        for entry in entries:
            match = _NVINFER.match(entry.name)
            if match is None:
                continue
            version = match.group(1)
            key = tuple(int(p) for p in version.split("."))
            if best is None or key > best[0]:  # (10,) > (8, 6, 1); (10, 8) > (10,)
                best = (key, version, str(entry))
    return (best[1], best[2]) if best is not None else None
