"""ONNX files with proof: a source callable or recorded outputs give the version a real parity
report; files that are not ONNX, and models whose converter is missing, say what to do."""

from __future__ import annotations

import pickle
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from lockgate import Lockgate
from lockgate.convert import converter_for, missing_extra
from lockgate.errors import (
    ConversionError,
    InvalidInputError,
    NotFoundError,
    ParityError,
    UnsupportedModelError,
)
from lockgate.gates.parity import ParityGate
from lockgate.parity.expected import as_recorded, merge_reports
from lockgate.types import GateStatus, OutputParity, ParityReport
from onnx_models import linear_onnx

MODEL = linear_onnx()
W = numpy_helper.to_array(MODEL.graph.initializer[0])
B = numpy_helper.to_array(MODEL.graph.initializer[1])
X = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)


def source(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The function the ONNX file computes, in numpy."""
    return [inputs["input"].astype(np.float64) @ W + B]


@pytest.fixture
def lin(tmp_path: Path) -> Path:
    path = tmp_path / "lin.onnx"
    onnx.save(MODEL, path)
    return path


def _parity_gate(lg: Lockgate, ref: str) -> GateStatus:
    ctx = type("Ctx", (), {"version": lg.get(ref)})()
    return ParityGate().evaluate(ctx).status  # type: ignore[arg-type]


def test_source_callable_gives_a_parity_report_the_gate_accepts(mem_lg: Lockgate,
                                                                lin: Path) -> None:
    v = mem_lg.register(str(lin), X, name="lin", source=source)
    assert v.parity is not None
    assert v.parity.passed
    assert len(v.parity.batch_sizes) > 1  # the sample and random inputs
    assert v.parity.outputs[0].elements > X.size
    assert _parity_gate(mem_lg, "lin@1") is GateStatus.PASS


def test_source_may_answer_by_output_name(mem_lg: Lockgate, lin: Path) -> None:
    v = mem_lg.register(str(lin), name="lin",
                        source=lambda x: {"output": source(x)[0]})
    assert v.parity is not None
    assert v.parity.passed


def test_a_wrong_source_fails_parity_and_stores_nothing(mem_lg: Lockgate, lin: Path) -> None:
    with pytest.raises(ParityError, match="output 'output'"):
        mem_lg.register(str(lin), X, name="lin", source=lambda x: [x["input"] @ W])
    assert mem_lg.models() == []


def test_a_source_with_other_output_names_is_refused(mem_lg: Lockgate, lin: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"outputs are \['output'\]"):
        mem_lg.register(str(lin), X, name="lin", source=lambda x: {"y": source(x)[0]})


def test_expect_compares_recorded_outputs_on_recorded_inputs_alone(
        mem_lg: Lockgate, lin: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "in.npz", input=X)
    np.savez(tmp_path / "out.npz", output=source({"input": X})[0])
    v = mem_lg.register(str(lin), name="lin",
                        expect=(tmp_path / "in.npz", tmp_path / "out.npz"))
    assert v.parity is not None
    assert v.parity.passed
    assert v.parity.batch_sizes == (6,)  # the recording, no random inputs
    assert v.parity.inputs == {"input": "recorded: the 6 rows given with their outputs, no "
                                        "random inputs"}
    assert v.parity.outputs[0].elements == 6 * 3
    assert _parity_gate(mem_lg, "lin@1") is GateStatus.PASS


def test_expect_and_source_together_are_both_checked(mem_lg: Lockgate, lin: Path) -> None:
    recorded = ({"input": X}, {"output": source({"input": X})[0]})
    v = mem_lg.register(str(lin), name="lin", source=source, expect=recorded)
    assert v.parity is not None
    assert v.parity.passed
    assert v.parity.batch_sizes[-1] == 6
    assert len(v.parity.batch_sizes) > 2
    assert "; then recorded: the 6 rows" in v.parity.inputs["input"]
    out = source({"input": X})[0].copy()
    out[4] += 1
    wrong = ({"input": X}, {"output": out})
    with pytest.raises(ParityError) as info:
        mem_lg.register(str(lin), name="lin", source=source, expect=wrong)
    report = info.value.report
    assert report is not None
    assert report.batch_sizes == (6,)  # the recording fails on its own, naming its row
    assert report.outputs[0].mismatches == 3
    assert report.outputs[0].rows == (4,)
    assert "rows sample [4]" in str(info.value)
    assert [x.number for x in mem_lg.versions("lin")] == [1]


def test_wrong_recorded_outputs_fail_parity(mem_lg: Lockgate, lin: Path) -> None:
    out = source({"input": X})[0].copy()
    out[2, 1] += 0.5
    with pytest.raises(ParityError, match=r"1 of 18 elements.*index \[2, 1\]"):
        mem_lg.register(str(lin), name="lin", expect=({"input": X}, {"output": out}))
    assert mem_lg.models() == []


@pytest.mark.parametrize(
    ("inputs", "outputs", "fragment"),
    [({"x": X}, {"output": X[:, :3]}, r"missing \['input'\], unexpected \['x'\]"),
     ({"input": X}, {"y": X[:, :3]}, r"recorded outputs do not match.*unexpected \['y'\]"),
     ({"input": X[:, :2]}, {"output": X[:, :3]}, r"'input' has shape \[6, 2\]"),
     ({"input": X.astype(np.int64)}, {"output": X[:, :3]}, None),
     ({"input": X}, {"output": np.zeros((6, 3), dtype="U2")}, "is <U2, the model returns"),
     ({"input": X}, {"output": X[:4, :3]}, "has 4 rows, the recorded inputs 6"),
     ({"input": np.array(["a"] * 24).reshape(6, 4)}, {"output": X[:, :3]},
      "'input' is <U1, the model's is float32")],
)
def test_recorded_arrays_that_do_not_fit_are_refused(
        mem_lg: Lockgate, lin: Path, inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray], fragment: str | None) -> None:
    if fragment is None:  # integers where the model takes floats: cast, then compared
        with pytest.raises(ParityError):
            mem_lg.register(str(lin), name="lin", expect=(inputs, outputs))
        return
    with pytest.raises(InvalidInputError, match=fragment):
        mem_lg.register(str(lin), name="lin", expect=(inputs, outputs))


def test_missing_or_unreadable_recordings(mem_lg: Lockgate, lin: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="recorded inputs: no file at"):
        mem_lg.register(str(lin), name="lin", expect=(tmp_path / "no.npz", tmp_path / "o.npz"))
    (tmp_path / "bad.npz").write_text("not numpy")
    np.savez(tmp_path / "out.npz", output=X[:, :3])
    with pytest.raises(InvalidInputError, match=r"is not a \.npz file"):
        mem_lg.register(str(lin), name="lin", expect=(tmp_path / "bad.npz",
                                                      tmp_path / "out.npz"))
    np.savez(tmp_path / "obj.npz", input=np.array([{"a": 1}] * 6, dtype=object))
    with pytest.raises(InvalidInputError, match="Python objects"):
        mem_lg.register(str(lin), name="lin", expect=(tmp_path / "obj.npz",
                                                      tmp_path / "out.npz"))


def test_source_and_expect_are_refused_for_converted_models(mem_lg: Lockgate) -> None:
    net = torch.nn.Linear(4, 3)
    with pytest.raises(InvalidInputError, match="pytorch model is checked against pytorch"):
        mem_lg.register(net, torch.randn(2, 4), name="net", source=source)
    with pytest.raises(InvalidInputError, match="expect applies to ONNX files"):
        mem_lg.register(net, torch.randn(2, 4), name="net",
                        expect=({"input": X}, {"output": X}))


def test_a_source_string_is_imported(mem_lg: Lockgate, lin: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    np.savez(tmp_path / "weights.npz", W=W, B=B)
    (tmp_path / "lin_source.py").write_text(
        "import numpy as np\n"
        "from pathlib import Path\n"
        "_P = np.load(Path(__file__).with_name('weights.npz'))\n"
        "def predict(inputs):\n"
        "    return [inputs['input'] @ _P['W'] + _P['B']]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    v = mem_lg.register(str(lin), name="lin", source="lin_source:predict")
    assert v.parity is not None
    assert v.parity.passed
    with pytest.raises(InvalidInputError, match="cannot import 'no_such_mod'"):
        mem_lg.register(str(lin), name="lin", source="no_such_mod:predict")
    with pytest.raises(InvalidInputError, match="has no 'nope'"):
        mem_lg.register(str(lin), name="lin", source="lin_source:nope")
    with pytest.raises(InvalidInputError, match=r"not package\.module:function"):
        mem_lg.register(str(lin), name="lin", source="lin_source.predict")


# -- what a path that is not ONNX is --------------------------------------------------------
def test_a_missing_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no file at"):
        converter_for(str(tmp_path / "model.pkl"))
    with pytest.raises(NotFoundError, match="no file at"):
        converter_for(tmp_path / "model.onnx").convert(
            tmp_path / "model.onnx", None, opset=None, progress=_null())


def _null() -> object:
    from lockgate.progress import NullProgress

    return NullProgress()


def _torch_checkpoint(path: Path) -> None:
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)


@pytest.mark.parametrize(
    ("name", "write", "fragment"),
    [("model.pt", _torch_checkpoint, "looks like a PyTorch checkpoint (zip archive)"),
     ("model.pkl", lambda p: p.write_bytes(pickle.dumps({"w": [1, 2]})), "Python pickle"),
     ("notes.txt", lambda p: p.write_text("hello\n"), "is a text file"),
     ("weights.h5", lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64)), "HDF5"),
     ("model.keras", lambda p: _zip(p, ["config.json", "metadata.json", "model.weights.h5"]),
      "Keras archive"),
     ("data.zip", lambda p: _zip(p, ["a.csv"]), "is a zip archive"),
     ("graph.pb", lambda p: p.write_bytes(onnx.helper.make_graph([], "g", [], []).
                                          SerializeToString()), "holds no ONNX ModelProto"),
     ("tensor.pb", lambda p: p.write_bytes(onnx.TensorProto(name="t", dims=[1]).
                                           SerializeToString()), "neither an ONNX ModelProto"),
     ("model.bin", lambda p: onnx.save(MODEL, p), "rename it to model.onnx")],
)
def test_a_file_that_is_not_onnx_says_what_it_is(tmp_path: Path, name: str,
                                                 write: object, fragment: str) -> None:
    path = tmp_path / name
    write(path)  # type: ignore[operator]
    with pytest.raises(UnsupportedModelError) as info:
        converter_for(str(path))
    assert fragment in info.value.diagnostics()
    # named .onnx, the same content is refused by the ONNX converter with the same reason
    if name != "model.bin":
        renamed = path.rename(tmp_path / "renamed.onnx")
        with pytest.raises(ConversionError) as again:
            converter_for(renamed).convert(renamed, None, opset=None, progress=_null())
        assert fragment.split(" (")[0] in again.value.diagnostics()


def _zip(path: Path, names: list[str]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for n in names:
            z.writestr(n, "{}")


def test_a_folder_that_is_not_a_saved_model(tmp_path: Path) -> None:
    onnx.save(MODEL, tmp_path / "inner.onnx")
    with pytest.raises(UnsupportedModelError, match="is a folder") as info:
        converter_for(str(tmp_path))
    assert "inner.onnx" in (info.value.hint or "")


# -- a known framework whose converter is missing -------------------------------------------
def test_a_model_whose_extra_is_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    fake = type("XGBClassifier", (), {"__module__": "xgboost.sklearn"})()
    monkeypatch.setitem(sys.modules, "onnxmltools", None)  # not importable: not installed
    with pytest.raises(UnsupportedModelError) as info:
        converter_for(fake)
    assert "xgboost support is not installed (missing onnxmltools)" in info.value.message
    assert info.value.hint == "pip install 'lockgate[xgboost]'"


@pytest.mark.parametrize(("module", "extra"),
                         [("xgboost.sklearn", "xgboost"), ("lightgbm.sklearn", "lightgbm"),
                          ("catboost.core", "catboost"), ("torch.nn", "torch"),
                          ("keras.src.models", "tensorflow"), ("tensorflow.python", "tensorflow"),
                          ("jax._src", "jax"), ("flax.nnx", "jax"),
                          ("sklearn.linear_model", "sklearn")])
def test_every_known_framework_maps_to_its_extra(module: str, extra: str) -> None:
    base = type("Base", (), {"__module__": module})
    fake = type("Model", (base,), {"__module__": "my_project.models"})()  # a subclass counts
    found = missing_extra(fake, installed=lambda m: False)
    assert found is not None
    assert found[0] == extra
    assert missing_extra(fake, installed=lambda m: True) is None


def test_an_installed_framework_is_not_told_to_install_itself() -> None:
    fake = type("Thing", (), {"__module__": "torch.odd"})()  # torch is installed here
    with pytest.raises(UnsupportedModelError) as info:
        converter_for(fake)
    assert "pip install" not in info.value.diagnostics()
    assert "lockgate converts" in (info.value.hint or "")


def test_merged_reports_keep_every_mismatch_and_number_rows_across_both() -> None:
    def out(mismatches: int, rows: tuple[int, ...], err: float) -> OutputParity:
        return OutputParity("y", err, err, 1e-4, 1e-3, mismatches, 10, rows=rows)

    first = ParityReport((out(1, (3,), 0.5),), (4, 6), 0, inputs={"x": "normal"})
    second = as_recorded(ParityReport((out(2, (0, 1), 2.0),), (5,), 0, inputs={"x": "?"}))
    merged = merge_reports(first, second)
    assert merged.batch_sizes == (4, 6, 5)
    (y,) = merged.outputs
    assert (y.mismatches, y.elements, y.max_abs_error) == (3, 20, 2.0)
    assert y.rows == (3, 10, 11)
    assert merged.inputs == {"x": "normal; then recorded: the 5 rows given with their "
                                  "outputs, no random inputs"}


def test_a_remote_registration_refuses_proof_it_cannot_send(lin: Path) -> None:
    from lockgate import RemoteRegistry

    with RemoteRegistry("http://127.0.0.1:9") as remote:  # refused before anything is sent
        with pytest.raises(InvalidInputError, match="by running your code"):
            remote.register(str(lin), name="lin", source=source)
        with pytest.raises(InvalidInputError, match=r"two \.npz files"):
            remote.register(str(lin), name="lin", expect=({"input": X}, {"output": X}))
        with pytest.raises(NotFoundError, match="expect_inputs: no file at"):
            remote.register(str(lin), name="lin", expect=(lin.with_name("a.npz"),
                                                          lin.with_name("b.npz")))
        with pytest.raises(NotFoundError, match="no file at"):
            remote.register(str(lin.with_name("absent.onnx")), name="lin")
