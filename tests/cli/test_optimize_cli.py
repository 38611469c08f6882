"""`lockgate optimize`: one flag, a new version naming its parent, one line for a refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_in_process import run_cli
from lockgate.api.facade import Lockgate
from onnx_models import linear_onnx


@pytest.fixture
def registered(home: Path) -> Path:
    with Lockgate.open(home) as lg:
        lg.register(linear_onnx(8, 3), name="lin", metrics={"accuracy": 0.9})
    return home


def _numbers(home: Path) -> list[int]:
    with Lockgate.open(home) as lg:
        return [v.number for v in lg.versions("lin")]


def test_quantize_registers_a_version_and_show_names_its_parent(
        registered: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "--home", str(registered), "optimize", "lin@1",
                             "--quantize", "dynamic-int8", "--runs", "20",
                             "--metric", "accuracy=0.89")
    assert code == 0, err
    assert "registered lin@2" in out
    assert "lineage: dynamic-int8 of lin@1 (onnxruntime.quantization" in out
    assert "measured: batch-1 latency" in out
    assert "20 alternating runs each" in out
    assert "against parent lin@1" in out
    assert _numbers(registered) == [1, 2]

    code, out, _ = run_cli(capsys, "--home", str(registered), "show", "lin@2")
    assert code == 0
    assert "lineage: dynamic-int8 of lin@1" in out
    assert "measured: batch-1 latency" in out
    code, out, _ = run_cli(capsys, "--home", str(registered), "show", "lin@1")
    assert "lineage:" not in out

    code, out, _ = run_cli(capsys, "--home", str(registered), "show", "lin@2", "--json")
    data = json.loads(out)
    lineage = data["environment"]["lineage"]
    assert lineage["parent"] == "lin@1"
    assert lineage["measured"]["child_bytes"] > 0
    assert data["metrics"] == {"accuracy": 0.89}


def test_fp16_json_output_is_the_new_version(registered: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "--home", str(registered), "optimize", "lin@1", "--fp16",
                             "--runs", "20", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["version"], data["environment"]["lineage"]["transformation"]["kind"]) == (
        2, "fp16")


@pytest.mark.parametrize(("flags", "words"), [
    ((), "no optimization asked for"),
    (("--quantize", "dynamic-int8", "--fp16"), "--quantize and --fp16 given"),
    (("--fp16", "--ort-level", "basic"), "--fp16 and --ort-level given"),
    (("--quantize", "int4"), "unknown quantization 'int4'"),
    (("--ort-level", "all"), "--ort-level all is refused"),
])
def test_bad_flags_are_one_line_and_exit_2(registered: Path, capsys: pytest.CaptureFixture[str],
                                           flags: tuple[str, ...], words: str) -> None:
    code, out, err = run_cli(capsys, "--home", str(registered), "optimize", "lin@1", *flags)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert words in lines[0]
    assert "Traceback" not in err
    assert out == ""
    assert _numbers(registered) == [1]


def test_out_of_tolerance_exits_6_and_stores_nothing(registered: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = registered / "lockgate.toml"
    config.write_text(config.read_text() + "\n[optimize_tolerances.dynamic-int8]\natol = 0\n"
                      "rtol = 0\n")
    code, _, err = run_cli(capsys, "--home", str(registered), "optimize", "lin@1",
                           "--quantize", "dynamic-int8", "--runs", "20")
    assert code == 6
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "dynamic-int8 of lin@1 refused" in lines[0]
    assert "max abs error" in lines[0]
    assert _numbers(registered) == [1]


def test_an_unknown_version_exits_3(registered: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "--home", str(registered), "optimize", "lin@9", "--fp16")
    assert code == 3
    assert err.startswith("error: ")
