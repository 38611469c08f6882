"""`lockgate register` of an ONNX file with proof (--reference MODULE:FUNCTION, --expect), the
older --reference DATA kept, and registrations that fail with one readable line and the
README's exit code."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from lockgate.cli.main import main
from onnx_models import linear_onnx
from registry_server import Registry
from registry_server import registry as registry  # the fixture

MODEL = linear_onnx()
W = numpy_helper.to_array(MODEL.graph.initializer[0])
B = numpy_helper.to_array(MODEL.graph.initializer[1])
X = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)

SOURCE = """\
import numpy as np
from pathlib import Path

_P = np.load(Path(__file__).with_name("weights.npz"))


def predict(inputs):
    return [inputs["input"] @ _P["W"] + _P["B"]]


def forgets_the_bias(inputs):
    return [inputs["input"] @ _P["W"]]
"""


@pytest.fixture
def work(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding lin.onnx and, as module ``MOD``, the numpy code it computes; the
    command runs there."""
    folder = tmp_path / "work"
    folder.mkdir()
    onnx.save(MODEL, folder / "lin.onnx")
    np.savez(folder / "weights.npz", W=W, B=B)
    monkeypatch.chdir(folder)
    return folder


def _module(work: Path, request: pytest.FixtureRequest) -> str:
    """The source module under a name of this test's own (imports are cached per process)."""
    name = "lin_source_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")
    (work / f"{name}.py").write_text(SOURCE)
    return name


def cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``lockgate ARGS`` in this process: its exit code, stdout and stderr."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run(*args: str, cwd: Path) -> tuple[int, str, str]:
    """``lockgate ARGS`` as its own process."""
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "lockgate", *args], capture_output=True,
                       text=True, env=env, timeout=300, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def _one_line(err: str, fragment: str) -> None:
    assert fragment in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_reference_callable_proves_parity_and_the_gate_passes(
        work: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    mod = _module(work, request)
    code, out, err = cli("register", "lin.onnx", "--name", "lin", "--reference",
                         f"{mod}:predict", "--json", capsys=capsys)
    assert code == 0, err
    parity = json.loads(out)["parity"]
    assert parity["passed"] is True
    assert len(parity["batch_sizes"]) > 1  # the sample and random inputs
    code, out, err = cli("gates", "lin@1", "--to", "stabilized", "--json", capsys=capsys)
    assert code == 0, err + out
    report = json.loads(out)
    assert report["passed"] is True
    assert {r["gate"]: r["status"] for r in report["gates"]} == {"parity": "pass"}
    code, _, err = cli("promote", "lin@1", "--to", "stabilized", capsys=capsys)
    assert code == 0, err


def test_a_wrong_reference_fails_with_exit_6_and_stores_nothing(
        work: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    mod = _module(work, request)
    code, _, err = cli("register", "lin.onnx", "--name", "lin", "--reference",
                       f"{mod}:forgets_the_bias", capsys=capsys)
    assert code == 6
    _one_line(err, "output 'output'")
    code, _, err = cli("versions", "lin", capsys=capsys)
    assert code == 3
    assert "no model named 'lin'" in err


def test_without_proof_the_parity_gate_refuses(work: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("register", "lin.onnx", "--name", "lin", capsys=capsys)[0] == 0
    code, out, _ = cli("gates", "lin@1", "--to", "stabilized", "--json", capsys=capsys)
    assert code == 1
    assert json.loads(out)["gates"][0]["message"].startswith("no parity report")


def test_expect_compares_recorded_outputs(work: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(work / "in.npz", input=X)
    np.savez(work / "out.npz", output=X @ W + B)
    code, out, err = cli("register", "lin.onnx", "--name", "lin", "--expect", "in.npz",
                         "out.npz", "--json", capsys=capsys)
    assert code == 0, err
    parity = json.loads(out)["parity"]
    assert parity["passed"] is True
    assert parity["batch_sizes"] == [5]
    np.savez(work / "bad.npz", output=X @ W)
    code, _, err = cli("register", "lin.onnx", "--name", "lin", "--expect", "in.npz",
                       "bad.npz", capsys=capsys)
    assert code == 6
    _one_line(err, "output 'output'")
    np.savez(work / "named.npz", y=X @ W + B)
    code, _, err = cli("register", "lin.onnx", "--name", "lin", "--expect", "in.npz",
                       "named.npz", capsys=capsys)
    assert code == 2
    _one_line(err, "unexpected ['y']")


def test_sample_file_is_the_sample_of_an_onnx_file(
        work: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    mod = _module(work, request)
    np.save(work / "sample.npy", X)
    code, out, err = cli("register", "lin.onnx", "--name", "lin", "--sample", "sample.npy",
                         "--reference", f"{mod}:predict", "--json", capsys=capsys)
    assert code == 0, err
    assert json.loads(out)["parity"]["batch_sizes"][0] == 5  # the sample's rows come first
    np.savez(work / "sample.npz", x=X)
    code, _, err = cli("register", "lin.onnx", "--name", "lin", "--sample", "sample.npz",
                       capsys=capsys)
    assert code == 5
    _one_line(err, "unexpected ['x']")


def test_reference_data_keeps_its_meaning(work: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    np.save(work / "ref.npy", np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32))
    for flag, number in (("--reference", 1), ("--reference-data", 2)):
        code, _, err = cli("register", "lin.onnx", "--name", "lin", flag, "ref.npy",
                           capsys=capsys)
        assert code == 0, err
        code, out, err = cli("reference", "show", f"lin@{number}", "--json", capsys=capsys)
        assert code == 0, err
        assert json.loads(out)["rows"] == 64
    code, _, err = cli("register", "lin.onnx", "--name", "lin", "--reference", "ref.npy",
                       "--reference-data", "ref.npy", capsys=capsys)
    assert code == 2
    _one_line(err, "both give reference data")


def test_help_names_both_meanings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli("register", "--help", capsys=capsys)
    assert code == 0
    for fragment in ("--reference MODULE:FUNCTION", "--reference-data", "--expect",
                     "--sample"):
        assert fragment in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--reference", "no_such_source_module:predict"], "cannot import 'no_such_source_module'"),
     (["--reference", "json:no_such_function"], "json has no 'no_such_function'"),
     (["--expect", "absent_in.npz", "absent_out.npz"], "recorded inputs: no file at"),
     (["--sample", "absent.npy"], "--sample: no file at")],
)
def test_unusable_proof_is_one_line(work: Path, capsys: pytest.CaptureFixture[str],
                                    args: list[str], fragment: str) -> None:
    code, _, err = cli("register", "lin.onnx", "--name", "lin", *args, capsys=capsys)
    assert code == (3 if "no file" in fragment else 2)
    _one_line(err, fragment)


def test_proof_is_refused_for_a_converted_model(work: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (work / "net_factory.py").write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Linear(4, 3), torch.randn(2, 4)\n")
    np.savez(work / "in.npz", input=X)
    code, _, err = cli("register", "--from", "net_factory:make", "--name", "net", "--expect",
                       "in.npz", "in.npz", capsys=capsys)
    assert code == 2
    _one_line(err, "checked against pytorch itself")


# -- files that are not ONNX, and missing ones: the real process -------------------------------
@pytest.mark.slow
def test_files_that_are_not_onnx(work: Path) -> None:
    torch.save(torch.nn.Linear(2, 2).state_dict(), work / "model.pt")
    (work / "model.pkl").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    (work / "notes.onnx").write_text("a model, one day\n")
    cases = [("missing.onnx", 3, "no file at missing.onnx"),
             ("missing.pt", 3, "no file at missing.pt"),
             ("model.pt", 5, "looks like a PyTorch checkpoint (zip archive)"),
             ("model.pkl", 5, "looks like a Python pickle"),
             ("notes.onnx", 5, "is a text file")]
    for path, code, fragment in cases:
        rc, _, err = run("register", path, "--name", "m", cwd=work)
        assert rc == code, (path, err)
        _one_line(err, fragment)
    assert "--from MODULE:FUNCTION" in run("register", "model.pt", "--name", "m", cwd=work)[2]


def test_a_model_whose_extra_is_missing_names_it(work: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (work / "boosted_factory.py").write_text(
        "XGBClassifier = type('XGBClassifier', (), {'__module__': 'xgboost.sklearn'})\n"
        "def make():\n"
        "    return XGBClassifier(), [[0.0, 1.0]]\n")
    monkeypatch.setitem(sys.modules, "onnxmltools", None)  # as without lockgate[xgboost]
    code, _, err = cli("register", "--from", "boosted_factory:make", "--name", "xgb",
                       capsys=capsys)
    assert code == 5
    _one_line(err, "pip install 'lockgate[xgboost]'")


@pytest.mark.slow
def test_recorded_outputs_travel_to_a_registry_server(
        registry: Registry, work: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOCKGATE_SERVER", registry.url)
    monkeypatch.setenv("LOCKGATE_TOKEN", registry.tokens["dev"])
    np.savez(work / "in.npz", input=X)
    np.savez(work / "out.npz", output=X @ W + B)
    code, out, err = cli("register", "lin.onnx", "--name", "remote-proof", "--expect",
                         "in.npz", "out.npz", "--json", capsys=capsys)
    assert code == 0, err + "".join(registry.log[-30:])
    parity = json.loads(out)["parity"]
    assert parity["passed"] is True
    assert parity["batch_sizes"] == [5]
    np.savez(work / "bad.npz", output=X @ W)
    code, _, err = cli("register", "lin.onnx", "--name", "remote-proof", "--expect",
                       "in.npz", "bad.npz", capsys=capsys)
    assert code == 6
    _one_line(err, "output 'output'")
    code, _, err = cli("register", "lin.onnx", "--name", "remote-proof", "--reference",
                       "json:loads", capsys=capsys)
    assert code == 2
    _one_line(err, "by running your code")
    code, out, _ = cli("versions", "remote-proof", "--json", capsys=capsys)
    assert [v["version"] for v in json.loads(out)] == [1]
