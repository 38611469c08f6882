"""`lockgate compare`: the source framework against ONNX Runtime, figures present (no timing is
judged), stored with the version and shown in the report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lockgate.api.facade import Lockgate
from lockgate.cli.main import main

RECIPES = Path(__file__).parent / "compare_models"
ORT_RUNTIMES = {"onnxruntime 1 thread, all optimisations",
                "onnxruntime default threads, all optimisations",
                "onnxruntime 1 thread, basic optimisations",
                "onnxruntime 1 thread, no optimisation"}


def _figures(result: dict, runtime: str) -> list[dict]:  # type: ignore[type-arg]
    rows = [r for r in result["results"] if r["runtime"] == runtime]
    assert [r["batch"] for r in rows] == result["batch_sizes"], runtime
    for r in rows:
        assert r["p50_ms"] > 0
        assert r["rows_per_s"] > 0
        assert r["runs"] >= 5
    return rows


@pytest.mark.torch
@pytest.mark.slow
def test_compare_torch_from_the_recorded_recipe(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    monkeypatch.chdir(RECIPES)
    main(["--home", str(home), "register", "--from", "torch_mlp:build", "--name", "t"])
    capsys.readouterr()
    main(["--home", str(home), "compare", "t@1", "--batch", "16", "--seconds", "0.2",
          "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["framework"] == "pytorch"
    assert result["batch_sizes"] == [1, 16]
    assert set(result["parity"]) == {"output"}
    assert result["parity"]["output"] < 1e-4
    runtimes = {r["runtime"] for r in result["results"]}
    assert runtimes >= ORT_RUNTIMES | {"pytorch eager", "torch.compile"}
    for name in ORT_RUNTIMES | {"pytorch eager"}:
        _figures(result, name)
    compiled = [r for r in result["results"] if r["runtime"] == "torch.compile"]
    assert all("p50_ms" in r or r["error"] for r in compiled)  # measured, or says why not
    main(["--home", str(home), "compare", "t@1", "--seconds", "0.1", "--no-compile"])
    table = capsys.readouterr().out
    assert "vs ONNX Runtime on this machine" in table
    assert "parity: output max |Δ|" in table
    with Lockgate.open(home) as lg:
        stored = lg.comparisons("t@1")
        assert stored[0]["batch_sizes"] == [1, 32]
        assert "torch.compile" not in {r["runtime"] for r in stored[0]["results"]}
        from lockgate.web.report import render_report

        page = render_report(lg, "t@1")
    assert "Runtime comparison" in page
    assert "onnxruntime 1 thread, all optimisations" in page


@pytest.mark.tensorflow
def test_compare_keras_with_the_model_given(mem_lg: Lockgate) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keras = pytest.importorskip("keras")
    inp = keras.Input((8,))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Dense(8)(inp)))
    x = np.random.default_rng(0).random((2, 8)).astype(np.float32)
    mem_lg.register(model, x, name="k")
    result = mem_lg.compare("k@1", model, batch=8, seconds=0.1)
    assert result["framework"] == "keras"
    for name in ORT_RUNTIMES | {"keras eager", "tf.function"}:
        _figures(result, name)
    assert result["parity"]["output"] < 1e-4


def test_compare_refuses_what_it_cannot_measure(home: Path, tmp_path: Path) -> None:
    import onnx

    from onnx_models import linear_onnx

    onnx.save(linear_onnx(), tmp_path / "m.onnx")
    with Lockgate.open(home) as lg:
        lg.register(str(tmp_path / "m.onnx"), name="m")
    with pytest.raises(SystemExit) as exc:
        main(["--home", str(home), "compare", "m@1"])
    assert exc.value.code == 2
    with Lockgate.open(home) as lg:
        assert lg.comparisons("m@1") == []
