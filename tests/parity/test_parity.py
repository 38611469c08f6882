"""Parity: reference vs ONNX Runtime over the sample plus random inputs."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lockgate.convert import Converted
from lockgate.errors import InvalidInputError, ParityError
from lockgate.parity.check import (
    assert_parity,
    check_parity,
    default_tolerance,
    parity_if_reference,
    random_inputs,
)
from lockgate.runtime.predictor import Predictor
from lockgate.types import ParityReport, TensorSpec

RNG = np.random.default_rng(0)
W = RNG.normal(size=(4, 3)).astype(np.float32)
B = RNG.normal(size=(3,)).astype(np.float32)


def _model(batch: int | str = "batch", dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """``scores = x @ W + B`` and ``label = argmax(scores)`` (int64)."""
    np_dtype = np.float64 if dtype == TensorProto.DOUBLE else np.float32
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["scores"]),
            helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
        ],
        "scored",
        [helper.make_tensor_value_info("x", dtype, [batch, 4])],
        [
            helper.make_tensor_value_info("scores", dtype, [batch, 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, [batch]),
        ],
        [
            numpy_helper.from_array(W.astype(np_dtype), "W"),
            numpy_helper.from_array(B.astype(np_dtype), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _reference(shift: float = 0.0, flip_label: bool = False):  # type: ignore[no-untyped-def]
    def run(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        x = inputs["x"]
        scores = x @ W.astype(x.dtype) + B.astype(x.dtype) + shift
        label = scores.argmax(axis=1).astype(np.int64)
        if flip_label:
            label[0] += 1
        return [scores, label]

    return run


def _converted(
    model: onnx.ModelProto, reference: object, sample: np.ndarray | None = None
) -> tuple[Converted, Predictor]:
    if sample is None:
        sample = np.random.default_rng(1).normal(size=(4, 4)).astype(np.float32)
    converted = Converted(
        model=model,
        framework="numpy",
        framework_version=np.__version__,
        converter="hand-built",
        sample={"x": sample},
        reference=reference,  # type: ignore[arg-type]
    )
    return converted, Predictor(model.SerializeToString())


def test_agreement_passes_with_varied_batches() -> None:
    converted, predictor = _converted(_model(), _reference())
    report = check_parity(converted, predictor, n_random=8)
    assert_parity(report)
    assert report.batch_sizes == (4, 1, 2, 3, 5, 8, 1, 2, 3)
    scores, label = report.outputs
    assert scores.elements == 3 * sum(report.batch_sizes)
    assert label.elements == sum(report.batch_sizes)
    assert (scores.atol, scores.rtol) == (1e-4, 1e-3)
    assert (label.atol, label.rtol) == (0.0, 0.0)
    assert scores.max_abs_error < 1e-5
    round_trip = ParityReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert round_trip == report


def test_forced_mismatch_names_output_and_worst_element() -> None:
    converted, predictor = _converted(_model(), _reference(shift=1.0))
    report = check_parity(converted, predictor, n_random=2)
    assert not report.passed
    scores, label = report.outputs
    assert scores.mismatches == scores.elements
    assert label.passed
    assert scores.max_abs_error == pytest.approx(1.0, abs=1e-5)
    assert len(scores.worst_index) == 2
    with pytest.raises(ParityError) as info:
        assert_parity(report)
    message = str(info.value)
    assert "'scores'" in message
    assert f"index {list(scores.worst_index)}" in message
    assert repr(scores.worst_expected) in message
    assert repr(scores.worst_actual) in message
    assert "atol=0.0001" in message
    assert info.value.report is report
    assert scores.worst_expected - scores.worst_actual == pytest.approx(1.0, abs=1e-5)


def test_integer_outputs_are_compared_exactly() -> None:
    converted, predictor = _converted(_model(), _reference(flip_label=True))
    report = check_parity(converted, predictor, n_random=3, atol=10.0, rtol=10.0)
    scores, label = report.outputs
    assert scores.passed
    assert label.mismatches == 4  # one flipped label per input, exact comparison
    assert label.max_abs_error == 1.0
    assert label.worst_index == (0,)
    with pytest.raises(ParityError, match="'label'"):
        assert_parity(report)


def test_float64_has_tighter_default_and_per_output_override() -> None:
    assert default_tolerance("float64") == (1e-7, 1e-6)
    assert default_tolerance("float16") == (1e-2, 1e-2)
    assert default_tolerance("float32", atol=1e-3, rtol=0.0) == (1e-3, 0.0)
    assert default_tolerance("int64") == (0.0, 0.0)
    sample = np.random.default_rng(2).normal(size=(3, 4))
    converted, predictor = _converted(_model(dtype=TensorProto.DOUBLE), _reference(), sample)
    report = check_parity(converted, predictor, n_random=2)
    assert (report.outputs[0].atol, report.outputs[0].rtol) == (1e-7, 1e-6)
    assert_parity(report)

    shifted, predictor = _converted(_model(), _reference(shift=0.5))
    loose = check_parity(shifted, predictor, n_random=2, tolerances={"scores": (1.0, 0.0)})
    assert loose.outputs[0].atol == 1.0
    assert_parity(loose)


def test_fixed_batch_is_kept() -> None:
    sample = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
    converted, predictor = _converted(_model(batch=2), _reference(), sample)
    report = check_parity(converted, predictor, n_random=4)
    assert report.batch_sizes == (2, 2, 2, 2, 2)


def test_random_inputs_follow_the_sample() -> None:
    rng = np.random.default_rng(0)
    sample = {
        "f": np.stack([rng.normal(100.0, 1.0, 64), rng.normal(-50.0, 5.0, 64)], axis=1),
        "i": np.array([[3, 7], [5, 4]], dtype=np.int32),
        "b": np.array([True, False]),
    }
    specs = [
        TensorSpec("f", "float64", ("batch", 2)),
        TensorSpec("i", "int32", ("batch", 2)),
        TensorSpec("b", "bool", ("batch",)),
    ]
    drawn = random_inputs(sample, specs, 500, np.random.default_rng(1))
    f = drawn["f"]
    assert f.shape == (500, 2)
    assert f.dtype == np.float64
    assert abs(f[:, 0].mean() - 100.0) < 0.5
    assert abs(f[:, 1].mean() + 50.0) < 1.5
    assert 0.5 < f[:, 0].std() < 2.0
    assert 3.0 < f[:, 1].std() < 7.0
    i = drawn["i"]
    assert i.dtype == np.int32
    assert i.min() >= 3
    assert i.max() <= 7
    assert set(np.unique(i)) == {3, 4, 5, 6, 7}
    assert drawn["b"].dtype == np.bool_
    assert drawn["b"].shape == (500,)


def test_batch_of_one_sample_still_varies() -> None:
    sample = {"x": np.full((1, 4), 2.0, dtype=np.float32)}
    spec = TensorSpec("x", "float32", ("batch", 4))
    drawn = random_inputs(sample, [spec], 6, np.random.default_rng(0))
    assert drawn["x"].shape == (6, 4)
    assert drawn["x"].std() > 0.1


def test_nan_matches_nan_only() -> None:
    nan_model = _model()

    def with_nan(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        scores, label = _reference()(inputs)
        scores[0, 0] = np.nan
        return [scores, label]

    converted, predictor = _converted(nan_model, with_nan)
    report = check_parity(converted, predictor, n_random=1)
    scores = report.outputs[0]
    assert scores.mismatches == 2  # one per input
    assert scores.worst_index == (0, 0)
    assert np.isinf(scores.max_abs_error)


def test_structural_disagreements_raise() -> None:
    def one_output(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return _reference()(inputs)[:1]

    converted, predictor = _converted(_model(), one_output)
    with pytest.raises(ParityError, match="returned 1 outputs"):
        check_parity(converted, predictor, n_random=1)

    def wrong_shape(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        scores, label = _reference()(inputs)
        return [scores[:, :2], label]

    converted, predictor = _converted(_model(), wrong_shape)
    with pytest.raises(ParityError, match="shape"):
        check_parity(converted, predictor, n_random=1)

    def broken(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        raise RuntimeError("boom")

    converted, predictor = _converted(_model(), broken)
    with pytest.raises(ParityError, match=r"failed on the sample.*boom"):
        check_parity(converted, predictor, n_random=1)


def test_progress_is_reported() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.events: list[tuple[str, str, int | None]] = []

        def start(self, task: str, total: int | None = None) -> None:
            self.events.append(("start", task, total))

        def advance(self, task: str, steps: int = 1) -> None:
            self.events.append(("advance", task, steps))

        def finish(self, task: str) -> None:
            self.events.append(("finish", task, None))

    recorder = Recorder()
    converted, predictor = _converted(_model(), _reference())
    check_parity(converted, predictor, n_random=3, progress=recorder)
    assert recorder.events[0] == ("start", "parity", 4)
    assert [e[0] for e in recorder.events].count("advance") == 4
    assert recorder.events[-1] == ("finish", "parity", None)


def test_no_reference() -> None:
    converted, predictor = _converted(_model(), None)
    assert parity_if_reference(converted, predictor, n_random=2) is None
    with pytest.raises(InvalidInputError):
        check_parity(converted, predictor)
    with_ref, predictor = _converted(_model(), _reference())
    report = parity_if_reference(with_ref, predictor, n_random=2)
    assert report is not None
    assert report.passed


def test_empty_report_fails() -> None:
    with pytest.raises(ParityError, match="no outputs"):
        assert_parity(ParityReport(outputs=(), batch_sizes=(), seed=0))


def _graph_model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
                 outputs: list[onnx.ValueInfoProto], inits: list[onnx.TensorProto] | None = None,
                 ml: bool = False) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("ai.onnx.ml", 2)] if ml else [])
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits or []),
                              opset_imports=opsets)
    model.ir_version = 8
    return model


def _converted_with(model: onnx.ModelProto, reference: object,
                    sample: Mapping[str, np.ndarray],
                    categories: Mapping[str, tuple[object, ...]] | None = None,
                    ) -> tuple[Converted, Predictor]:
    converted = Converted(model=model, framework="numpy", framework_version=np.__version__,
                          converter="hand-built", sample=sample,
                          reference=reference,  # type: ignore[arg-type]
                          categories=categories or {})
    return converted, Predictor(model.SerializeToString())


def _tie_model() -> onnx.ModelProto:
    """``probabilities = x`` and ``label = argmax(x)``, the last index winning a tie."""
    return _graph_model(
        [helper.make_node("Identity", ["x"], ["probabilities"]),
         helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0, select_last_index=1)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
    )


def _tie_reference(shift: float = 0.0):  # type: ignore[no-untyped-def]
    def run(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        x = inputs["x"]
        return [x.argmax(axis=1).astype(np.int64), x + shift]  # the first index wins a tie

    return run


TIE_SAMPLE = {"x": np.array([[0, 1], [1, 0], [1, 1], [0, 0], [1, 0], [0, 1]], np.float32)}


def test_label_flips_on_exact_ties_are_borderline_when_probabilities_pass() -> None:
    converted, predictor = _converted_with(_tie_model(), _tie_reference(), TIE_SAMPLE)
    report = check_parity(converted, predictor, n_random=8)
    label, probabilities = report.outputs
    assert probabilities.passed
    assert label.passed
    assert label.borderline > 0
    assert 2 in label.borderline_rows  # the sample's third row: [1, 1]
    assert label.rows == ()
    assert report.passed
    assert_parity(report)
    assert ParityReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_ties_do_not_excuse_labels_when_probabilities_fail() -> None:
    converted, predictor = _converted_with(_tie_model(), _tie_reference(shift=1.0), TIE_SAMPLE)
    report = check_parity(converted, predictor, n_random=4)
    label, probabilities = report.outputs
    assert not probabilities.passed
    assert not label.passed
    assert label.borderline == 0
    assert 2 in label.rows


def test_label_mismatch_lists_rows_and_says_a_tolerance_cannot_help() -> None:
    converted, predictor = _converted(_model(), _reference(flip_label=True))
    report = check_parity(converted, predictor, n_random=2)
    label = report.outputs[1]
    assert label.exact
    assert label.rows == (0, 4, 5)  # row 0 of the sample (4 rows), random inputs 1 and 2
    assert report.where(5) == "random input 2 row 0"
    with pytest.raises(ParityError) as info:
        assert_parity(report)
    message = str(info.value)
    assert "compared exactly" in message
    assert "rows sample [0], random input 1 [0], random input 2 [0]" in message
    hint = info.value.hint or ""
    assert "decides differently" in hint
    assert "loosen" not in hint


def test_float_mismatch_lists_rows_too() -> None:
    converted, predictor = _converted(_model(), _reference(shift=1.0))
    report = check_parity(converted, predictor, n_random=1)
    scores = report.outputs[0]
    assert not scores.exact
    assert scores.rows == (0, 1, 2, 3, 4)
    with pytest.raises(ParityError, match=r"rows sample \[0, 1, 2, 3\], random input 1 \[0\]"):
        assert_parity(report)


def _sequence_model() -> onnx.ModelProto:
    """``total = sum(input_ids * attention_mask)`` over the sequence."""
    ints = TensorProto.INT64
    return _graph_model(
        [helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"]),
         helper.make_node("ReduceSum", ["masked", "axes"], ["total"], keepdims=0)],
        [helper.make_tensor_value_info("input_ids", ints, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", ints, ["batch", "sequence"])],
        [helper.make_tensor_value_info("total", ints, ["batch"])],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )


SEQUENCE_SAMPLE = {"input_ids": np.array([[101, 7, 9, 102], [101, 3, 3, 102]], dtype=np.int64),
                   "attention_mask": np.ones((2, 4), dtype=np.int64)}


def test_every_free_dimension_varies_and_is_reported() -> None:
    def reference(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return [(inputs["input_ids"] * inputs["attention_mask"]).sum(axis=1)]

    converted, predictor = _converted_with(_sequence_model(), reference, SEQUENCE_SAMPLE)
    report = check_parity(converted, predictor, n_random=8)
    assert_parity(report)
    assert report.dims["batch"] == report.batch_sizes
    assert report.dims["sequence"][0] == 4
    assert set(report.dims["sequence"]) == {1, 2, 4, 8}
    assert report.skipped == ()
    assert report.inputs == {"input_ids": "ints in [3, 102]", "attention_mask": "constant 1"}


def test_lengths_the_source_model_refuses_are_skipped_and_named() -> None:
    def short_only(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if inputs["input_ids"].shape[1] > 4:
            raise IndexError("index 4 is out of bounds for the position table")
        return [(inputs["input_ids"] * inputs["attention_mask"]).sum(axis=1)]

    converted, predictor = _converted_with(_sequence_model(), short_only, SEQUENCE_SAMPLE)
    report = check_parity(converted, predictor, n_random=8)
    assert report.passed
    assert len(report.skipped) == 2  # random inputs 2 and 6 are 8 long
    assert report.skipped[0].startswith("random input 2 (batch 2, sequence 8)")
    assert "IndexError: index 4 is out of bounds" in report.skipped[0]
    total = report.outputs[0]
    assert total.elements == sum(report.batch_sizes) - 2 - 1  # their batches: 2 and 1

    def broken(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        raise IndexError("broken everywhere")

    converted, predictor = _converted_with(_sequence_model(), broken, SEQUENCE_SAMPLE)
    with pytest.raises(ParityError, match="failed on the sample"):
        check_parity(converted, predictor, n_random=2)


def _encoder_model() -> onnx.ModelProto:
    return _graph_model(
        [helper.make_node("LabelEncoder", ["color"], ["code"], domain="ai.onnx.ml",
                          keys_strings=["red", "blue", "green"], values_int64s=[0, 1, 2],
                          default_int64=-1)],
        [helper.make_tensor_value_info("color", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("code", TensorProto.INT64, ["N"])],
        ml=True,
    )


def _recording_encoder(seen: set[object]):  # type: ignore[no-untyped-def]
    codes = {"red": 0, "blue": 1, "green": 2}

    def run(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        seen.update(inputs["color"].tolist())
        return [np.array([codes.get(c, -1) for c in inputs["color"]], dtype=np.int64)]

    return run


def _colors(*names: str) -> np.ndarray:
    out = np.empty(len(names), dtype=object)
    out[:] = list(names)
    return out


def test_categories_and_the_pool_reach_the_source_model() -> None:
    seen: set[object] = set()
    sample = {"color": _colors("red", "red", "blue")}
    converted, predictor = _converted_with(
        _encoder_model(), _recording_encoder(seen), sample,
        categories={"color": ("red", "blue", "green")})
    report = check_parity(converted, predictor, n_random=8)
    assert_parity(report)
    assert seen == {"red", "blue", "green"}
    assert report.inputs["color"] == "categories (3 values)"

    seen.clear()
    converted, predictor = _converted_with(_encoder_model(), _recording_encoder(seen), sample)
    report = check_parity(converted, predictor, n_random=8, pool={"color": _colors("green")})
    assert_parity(report)
    assert seen == {"red", "blue", "green"}
    assert report.inputs["color"] == "strings from 3 values (2 seen, 1 more from the pool)"


def test_missing_values_reach_both_models() -> None:
    model = _graph_model(
        [helper.make_node("IsNaN", ["x"], ["missing"]),
         helper.make_node("Where", ["missing", "zero", "x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")],
    )
    nan_seen: list[int] = []

    def reference(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        x = inputs["x"]
        nan_seen.append(int(np.isnan(x).sum()))
        return [np.where(np.isnan(x), 0.0, x).astype(np.float32)]

    sample = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    sample[2, 0] = np.nan
    converted, predictor = _converted_with(model, reference, {"x": sample})
    report = check_parity(converted, predictor, n_random=4)
    assert_parity(report)
    assert sum(nan_seen[1:]) >= 1  # the random inputs carry NaN too
    assert report.inputs["x"] == "normal per feature, NaN 10% in 1 of 2 features"


def test_reports_stored_before_the_new_fields_still_load() -> None:
    converted, predictor = _converted(_model(), _reference())
    report = check_parity(converted, predictor, n_random=2)
    old = report.to_dict()
    for key in ("inputs", "dims", "skipped"):
        del old[key]
    for out in old["outputs"]:
        for key in ("exact", "rows", "borderline", "borderline_rows"):
            del out[key]
    loaded = ParityReport.from_dict(old)
    assert loaded.passed
    assert loaded.inputs == {}
    assert loaded.dims == {}
    assert loaded.outputs[1].rows == ()
    assert not loaded.outputs[1].exact


def test_a_graph_that_fixed_a_free_length_fails_naming_it() -> None:
    ints = TensorProto.INT64
    fixed = _graph_model(  # the export froze the sequence at the sample's 4
        [helper.make_node("Reshape", ["input_ids", "shape"], ["kept"]),
         helper.make_node("Mul", ["kept", "attention_mask"], ["masked"]),
         helper.make_node("ReduceSum", ["masked", "axes"], ["total"], keepdims=0)],
        [helper.make_tensor_value_info("input_ids", ints, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", ints, ["batch", "sequence"])],
        [helper.make_tensor_value_info("total", ints, ["batch"])],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
         numpy_helper.from_array(np.array([0, 4], dtype=np.int64), "shape")],
    )

    def reference(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return [(inputs["input_ids"] * inputs["attention_mask"]).sum(axis=1)]

    converted, predictor = _converted_with(fixed, reference, SEQUENCE_SAMPLE)
    with pytest.raises(ParityError, match=r"random input 1 \(batch 1, sequence 2\)") as info:
        check_parity(converted, predictor, n_random=3)
    assert "fixed a shape" in (info.value.hint or "")
