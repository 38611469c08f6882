"""The fingerprint's accelerator facts: GPUs and driver from nvidia-smi, ONNX Runtime's build,
TensorRT; every probe bounded, and a missing one says why.

No GPU exists on the machines these tests run on, so the ``nvidia-smi`` they put first on PATH
is a stand-in script that answers the query as the real one does (or fails, or hangs).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from cli_in_process import run_cli
from lockgate.api.facade import Lockgate
from lockgate.environment import hardware
from lockgate.environment.drift import serving_environment
from lockgate.environment.fingerprint import capture_environment
from onnx_models import linear_onnx

_QUERY = "--query-gpu=name,driver_version,memory.total"
_POSIX = os.name == "posix"


def _fake_smi(folder: Path, body: str) -> Path:
    """An ``nvidia-smi`` in ``folder`` running the shell ``body``."""
    folder.mkdir(parents=True, exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return smi


def _first_on_path(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")


def _answering(rows: list[str]) -> str:
    """A stand-in that prints ``rows`` only when asked the query lockgate sends."""
    printed = "\n".join(f"echo '{row}'" for row in rows)
    return (f'if [ "$1" = "{_QUERY}" ] && [ "$2" = "--format=csv,noheader" ]; then\n'
            f"{printed}\nexit 0\nfi\necho \"unexpected arguments: $*\" >&2\nexit 2")


def _is_unavailable(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("unavailable: ")


@pytest.mark.skipif(not _POSIX, reason="the nvidia-smi stand-in is a POSIX shell script")
def test_gpu_name_and_driver_come_from_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_smi(tmp_path / "bin", _answering(["NVIDIA Stand-in X100 80GB, 570.86.15, 81559 MiB"]))
    _first_on_path(monkeypatch, tmp_path / "bin")
    env = capture_environment(providers=["CPUExecutionProvider"], cwd=tmp_path)
    assert env["gpu"] == {
        "count": 1, "name": "NVIDIA Stand-in X100 80GB", "driver": "570.86.15",
        "memory": "81559 MiB", "devices": ["NVIDIA Stand-in X100 80GB (81559 MiB)"],
        "source": "nvidia-smi",
    }  # fmt: skip
    assert env["nvidia_driver"] == "570.86.15"
    json.dumps(env)
    served = serving_environment(["CPUExecutionProvider"])
    assert served["gpu"]["name"] == "NVIDIA Stand-in X100 80GB"
    assert served["nvidia_driver"] == "570.86.15"


@pytest.mark.skipif(not _POSIX, reason="the nvidia-smi stand-in is a POSIX shell script")
def test_every_gpu_is_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_smi(tmp_path / "bin", _answering([
        "NVIDIA Stand-in A, with a comma, 575.51.03, 24564 MiB",
        "NVIDIA Stand-in B, 575.51.03, [N/A]",
    ]))
    _first_on_path(monkeypatch, tmp_path / "bin")
    gpu = hardware.gpu_facts()
    assert isinstance(gpu, dict)
    assert gpu["count"] == 2
    assert gpu["name"] == "NVIDIA Stand-in A, with a comma, NVIDIA Stand-in B"
    assert gpu["driver"] == "575.51.03"
    assert gpu["devices"][0] == "NVIDIA Stand-in A, with a comma (24564 MiB)"
    assert "unavailable: not reported" in gpu["devices"][1]
    gpu["name"] = "changed by a caller"
    assert hardware.gpu_facts()["name"] != "changed by a caller"  # type: ignore[index]


@pytest.mark.skipif(not _POSIX, reason="the nvidia-smi stand-in is a POSIX shell script")
def test_a_failing_nvidia_smi_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_smi(tmp_path / "bin", "echo 'NVIDIA-SMI has failed: no driver loaded' >&2\nexit 9")
    _first_on_path(monkeypatch, tmp_path / "bin")
    env = capture_environment(providers=None, cwd=tmp_path)
    assert _is_unavailable(env["gpu"])
    assert "exited 9: NVIDIA-SMI has failed: no driver loaded" in env["gpu"]
    assert env["nvidia_driver"] == env["gpu"]


def _state(pid: int) -> str | None:
    """The process state letter from /proc (None: no such process)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()[0]


@pytest.mark.skipif(not _POSIX or not Path("/proc/self/stat").exists(),
                    reason="needs a POSIX shell and /proc to see the stand-in's children")
def test_a_hanging_nvidia_smi_is_killed_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = tmp_path / "child.pid"
    _fake_smi(tmp_path / "bin", f"sleep 300 &\necho $! > '{pid_file}'\nwait")
    _first_on_path(monkeypatch, tmp_path / "bin")
    monkeypatch.setattr(hardware, "SMI_TIMEOUT_S", 0.5)
    env = capture_environment(providers=None, cwd=tmp_path)
    assert _is_unavailable(env["gpu"])
    assert "no answer within 0.5 s (killed)" in env["gpu"]
    assert "nvidia-smi" in env["gpu"]
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 30  # a wait for the kernel to finish the kill, not a timing
    while _state(child) not in (None, "Z", "X") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(child) in (None, "Z", "X"), "the stand-in's child was left running"


@pytest.mark.skipif(not _POSIX, reason="the nvidia-smi stand-in is a POSIX shell script")
def test_show_json_has_the_registered_hardware(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _fake_smi(tmp_path / "bin", _answering(["NVIDIA Stand-in L9, 580.65.06, 23034 MiB"]))
    _first_on_path(monkeypatch, tmp_path / "bin")
    with Lockgate.open(home) as lg:
        lg.register(linear_onnx(), name="m")
    code, out, err = run_cli(capsys, "show", "m@1", "--json")
    assert code == 0, err
    env = json.loads(out)["environment"]
    assert env["gpu"]["name"] == "NVIDIA Stand-in L9"
    assert env["gpu"]["memory"] == "23034 MiB"
    assert env["nvidia_driver"] == "580.65.06"
    assert env["onnxruntime"]["session_providers"] == ["CPUExecutionProvider"]
    assert set(env["onnxruntime"]["build"]) == {"package", "cuda", "cudnn", "info"}
    assert set(env["tensorrt"]) == {"version", "source"}


def test_no_gpu_is_unavailable_with_reasons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    gpu = hardware.gpu_facts()
    if importlib.util.find_spec("pynvml") is None:
        assert gpu == ("unavailable: nvidia-smi is not on PATH; pynvml is not installed")
    else:
        assert isinstance(gpu, dict) or "nvidia-smi is not on PATH" in gpu


def test_onnxruntime_build_facts_are_the_wheels() -> None:
    info = importlib.import_module("onnxruntime.capi.build_and_package_info")
    ort = importlib.import_module("onnxruntime")
    build = capture_environment(providers=None)["onnxruntime"]["build"]
    assert set(build) == {"package", "cuda", "cudnn", "info"}
    assert build["package"] == info.package_name
    assert build["info"] == ort.get_build_info()
    cuda = getattr(info, "cuda_version", None)
    if cuda:
        assert build["cuda"] == cuda
        assert build["cudnn"][0].isdigit() or _is_unavailable(build["cudnn"])
    else:
        assert build["cuda"] == f"unavailable: {info.package_name} is not built with CUDA"
        assert build["cudnn"] == build["cuda"]
    assert serving_environment(["CPUExecutionProvider"])["onnxruntime"]["build"] == build


def test_cudnn_falls_back_to_the_cudnn_wheel() -> None:
    class Built:
        cuda_version = "12.8"

    assert hardware._cudnn(Built(), "12.8", {"nvidia_cudnn_cu12": "9.10.2.21"}) == "9.10.2.21"
    missing = hardware._cudnn(Built(), "12.8", {"numpy": "2.0"})
    assert _is_unavailable(missing)
    assert "nvidia-cudnn-cu12" in missing


_NO_TENSORRT = (importlib.util.find_spec("tensorrt") is not None
                or not _is_unavailable(hardware.tensorrt_facts()["version"]))


@pytest.mark.skipif(_NO_TENSORRT, reason="TensorRT is installed here, so no stand-in is read")
def test_tensorrt_version_from_libnvinfer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _is_unavailable(capture_environment(providers=None)["tensorrt"]["version"])
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("libnvinfer.so", "libnvinfer.so.10", "libnvinfer.so.10.3.0",
                 "libnvinfer.so.8.6.1", "libnvinfer.so.10.3.0.bak"):
        (lib / name).write_bytes(b"")  # a name is all that is read
    monkeypatch.setenv("LD_LIBRARY_PATH", f"{tmp_path / 'absent'}{os.pathsep}{lib}")
    trt = capture_environment(providers=None)["tensorrt"]
    assert trt == {"version": "10.3.0", "source": str(lib / "libnvinfer.so.10.3.0")}
    assert serving_environment(["CPUExecutionProvider"])["tensorrt"] == trt
