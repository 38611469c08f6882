from __future__ import annotations

from lockgate.environment.drift import compare, serving_environment

REG = {"onnxruntime": {"version": "1.32.0", "session_providers": ["CPUExecutionProvider"]},
       "torch": {"cuda": "12.8", "cudnn": "91000"}}


def test_same_minor_and_provider_is_no_drift() -> None:
    srv = {"onnxruntime": {"version": "1.32.4", "session_providers": ["CPUExecutionProvider"]},
           "torch": {"cuda": "12.6", "cudnn": "91002"}}
    assert compare(REG, srv) == []


def test_what_matters_is_reported() -> None:
    srv = {"onnxruntime": {"version": "1.33.0", "session_providers": ["CUDAExecutionProvider"]},
           "torch": {"cuda": "13.0", "cudnn": "unavailable: no GPU"}}
    found = {d.what: (d.registered, d.serving) for d in compare(REG, srv)}
    assert found == {"onnxruntime major.minor": ("1.32", "1.33"),
                     "execution providers": ("CPUExecutionProvider", "CUDAExecutionProvider"),
                     "CUDA major": ("12", "13")}


def test_unknown_fields_are_not_compared() -> None:
    assert compare({"onnxruntime": {"version": "unavailable: x"}}, REG) == []
    assert compare({}, REG) == []


def test_this_process_compares_clean_with_itself() -> None:
    env = serving_environment(["CPUExecutionProvider"])
    assert compare(env, env) == []
    assert env["onnxruntime"]["session_providers"] == ["CPUExecutionProvider"]
