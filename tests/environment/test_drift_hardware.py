"""Drift on the accelerator facts: the whole provider list, the wheel's CUDA/cuDNN, TensorRT, the
NVIDIA driver and the GPU model; the differences policy may ignore."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from lockgate.config.environment import ENVIRONMENT_DIFFERENCES
from lockgate.config.load import load_settings
from lockgate.environment.drift import (
    DIFFERENCES,
    Difference,
    compare,
    counted,
    reference_environment,
    serving_environment,
)
from lockgate.environment.fingerprint import capture_environment
from lockgate.errors import ConfigError
from lockgate.runtime.predictor import Predictor, available_providers
from onnx_models import linear_onnx

_CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _gpu_env(providers: list[str] | None = None) -> dict[str, Any]:
    """A fingerprint as a GPU machine records it, read back from a version record."""
    return {
        "onnxruntime": {"version": "1.22.1", "session_providers": providers or list(_CUDA),
                        "build": {"package": "onnxruntime-gpu", "cuda": "12.8",
                                  "cudnn": "9.10.2.21", "info": "ORT Build Info: ..."}},
        "tensorrt": {"version": "10.3.0", "source": "tensorrt-cu12 distribution"},
        "nvidia_driver": "570.86.15",
        "gpu": {"count": 1, "name": "NVIDIA H100 80GB HBM3", "driver": "570.86.15",
                "memory": "81559 MiB", "devices": ["NVIDIA H100 80GB HBM3 (81559 MiB)"],
                "source": "nvidia-smi"},
    }


def _whats(diffs: list[Difference]) -> dict[str, tuple[str, str]]:
    return {d.what: (d.registered, d.serving) for d in diffs}


@pytest.mark.skipif("AzureExecutionProvider" not in available_providers(),
                    reason="this ONNX Runtime build has no AzureExecutionProvider")
def test_a_changed_provider_set_is_a_difference() -> None:
    model = linear_onnx().SerializeToString()
    registered = capture_environment(providers=Predictor(model).providers)
    assert registered["onnxruntime"]["session_providers"] == ["CPUExecutionProvider"]
    on_azure = Predictor(model, providers=["AzureExecutionProvider", "CPUExecutionProvider"])
    diffs = compare(registered, serving_environment(on_azure.providers))
    assert [d.to_dict() for d in diffs] == [{
        "what": "execution providers", "registered": "CPUExecutionProvider",
        "serving": "AzureExecutionProvider, CPUExecutionProvider"}]
    assert compare(registered, serving_environment(Predictor(model).providers)) == []


def test_the_whole_provider_list_counts_not_just_the_first() -> None:
    reg = _gpu_env(["TensorrtExecutionProvider", "CUDAExecutionProvider",
                    "CPUExecutionProvider"])
    srv = _gpu_env(["TensorrtExecutionProvider", "CPUExecutionProvider"])
    assert _whats(compare(reg, srv)) == {"execution providers": (
        "TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider",
        "TensorrtExecutionProvider, CPUExecutionProvider")}
    assert compare(reg, copy.deepcopy(reg)) == []


def test_a_driver_change_counts_by_major() -> None:
    srv = _gpu_env()
    srv["nvidia_driver"] = "570.172.08"
    assert compare(_gpu_env(), srv) == []
    srv["nvidia_driver"] = "580.65.06"
    assert _whats(compare(_gpu_env(), srv)) == {"NVIDIA driver major": ("570", "580")}


def test_a_cuda_major_change_of_the_wheel_counts() -> None:
    srv = _gpu_env()
    srv["onnxruntime"]["build"]["cuda"] = "12.4"
    assert compare(_gpu_env(), srv) == []
    srv["onnxruntime"]["build"].update(cuda="13.0", cudnn="9.13.0.50")
    assert _whats(compare(_gpu_env(), srv)) == {"onnxruntime CUDA major": ("12", "13")}
    srv["onnxruntime"]["build"]["cudnn"] = "8.9.7.29"
    assert _whats(compare(_gpu_env(), srv))["onnxruntime cuDNN major"] == ("9", "8")


def test_tensorrt_counts_by_major_minor_and_gpu_by_model() -> None:
    srv = _gpu_env()
    srv["tensorrt"]["version"] = "10.3.1"
    assert compare(_gpu_env(), srv) == []
    srv["tensorrt"]["version"] = "10"  # only libnvinfer.so.10 was found: majors compared
    assert compare(_gpu_env(), srv) == []
    srv["tensorrt"]["version"] = "10.8.0"
    srv["gpu"]["name"] = "NVIDIA L4"
    assert _whats(compare(_gpu_env(), srv)) == {"TensorRT major.minor": ("10.3", "10.8"),
                                                "GPU model": ("NVIDIA H100 80GB HBM3",
                                                              "NVIDIA L4")}


def test_hardware_facts_do_not_count_for_a_cpu_session() -> None:
    cpu = ["CPUExecutionProvider"]
    reg, srv = _gpu_env(cpu), _gpu_env(cpu)
    srv.update(nvidia_driver="580.65.06", gpu={**srv["gpu"], "name": "NVIDIA L4"})
    srv["onnxruntime"]["build"]["cuda"] = "13.0"
    assert compare(reg, srv) == []
    srv["onnxruntime"]["session_providers"] = list(_CUDA)  # one side on CUDA: they count
    assert set(_whats(compare(reg, srv))) == {"execution providers", "NVIDIA driver major",
                                              "GPU model", "onnxruntime CUDA major"}


def test_unknown_facts_are_not_compared() -> None:
    srv = _gpu_env()
    srv.update(nvidia_driver="unavailable: nvidia-smi is not on PATH",
               gpu="unavailable: nvidia-smi is not on PATH",
               tensorrt={"version": "unavailable: no tensorrt module", "source": "x"})
    srv["onnxruntime"]["build"]["cudnn"] = "unavailable: the build names no cuDNN version"
    assert compare(_gpu_env(), srv) == []
    older = {"onnxruntime": {"version": "1.22.0", "session_providers": list(_CUDA)}}
    assert compare(older, _gpu_env()) == []  # recorded before these facts were


def test_every_difference_is_named_in_the_policy_list() -> None:
    srv = _gpu_env(["TensorrtExecutionProvider", "CPUExecutionProvider"])
    srv["onnxruntime"].update(version="1.23.0")
    srv["onnxruntime"]["build"].update(cuda="13.0", cudnn="10.0")
    srv.update(nvidia_driver="580.1", tensorrt={"version": "11.0.0", "source": "x"},
               gpu={"name": "NVIDIA B200"}, torch={"cuda": "13.0", "cudnn": "91000"})
    reg = {**_gpu_env(), "torch": {"cuda": "12.8", "cudnn": "8902"}}
    found = [d.what for d in compare(reg, srv)]
    assert sorted(found) == sorted(ENVIRONMENT_DIFFERENCES)
    assert DIFFERENCES == ENVIRONMENT_DIFFERENCES
    diffs = compare(reg, srv)
    kept = counted(diffs, ("GPU model", "NVIDIA driver major"))
    assert [d.what for d in kept] == [w for w in found
                                      if w not in ("GPU model", "NVIDIA driver major")]
    assert counted(diffs, ()) == diffs


def test_ignoring_differences_is_configured_by_name(tmp_path: Path) -> None:
    (tmp_path / "lockgate.toml").write_text(
        '[serve]\nenvironment_drift = "refuse"\n'
        'environment_drift_ignore = ["GPU model", "NVIDIA driver major"]\n')
    settings = load_settings(tmp_path, env={})
    assert settings.environment_drift_ignore == ("GPU model", "NVIDIA driver major")
    env = load_settings(tmp_path, env={"LOCKGATE_ENVIRONMENT_DRIFT_IGNORE": "TensorRT major.minor"})
    assert env.environment_drift_ignore == ("TensorRT major.minor",)
    (tmp_path / "lockgate.toml").write_text('[serve]\nenvironment_drift_ignore = ["GPU modle"]\n')
    with pytest.raises(ConfigError, match="did you mean 'GPU model'") as caught:
        load_settings(tmp_path, env={})
    assert "execution providers" in str(caught.value.hint)


def test_a_validated_set_is_a_reference_for_its_providers() -> None:
    reg = _gpu_env(["CPUExecutionProvider"])
    proven = {"cuda+cpu": {"provider_set": "cuda+cpu", "providers_used": list(_CUDA)}}
    held = reference_environment(reg, proven, _CUDA)
    assert held["onnxruntime"]["session_providers"] == _CUDA
    assert held["onnxruntime"]["version"] == reg["onnxruntime"]["version"]
    assert reg["onnxruntime"]["session_providers"] == ["CPUExecutionProvider"]  # not changed
    assert compare(held, _gpu_env()) == []
    trt = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert reference_environment(reg, proven, trt) is reg
    assert reference_environment(reg, {}, _CUDA) is reg
    assert "execution providers" in _whats(compare(reference_environment(reg, proven, trt),
                                                   _gpu_env(trt)))
