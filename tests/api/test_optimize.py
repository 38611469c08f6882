"""Optimized versions: `Lockgate.optimize` makes a new, signed version of the same model that
names its parent, proves parity against it and the recorded samples, and measures itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from lockgate.api.facade import Lockgate
from lockgate.convert.optimize import transform
from lockgate.errors import ConfigError, InvalidInputError, ParityError
from lockgate.gates.base import GateContext
from lockgate.gates.champion import MetricsGate
from lockgate.types import GateStatus
from onnx_models import linear_onnx

RUNS = 20


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 3)).eval()


def _blobs(lg: Lockgate) -> int:
    return sum(1 for _ in lg.artifacts.entries())


def test_int8_of_a_torch_mlp_is_a_new_signed_version_naming_its_parent(lg: Lockgate) -> None:
    parent = lg.register(_mlp(), torch.randn(8, 16), name="mlp", seed=3,
                         metrics={"accuracy": 0.9}, tags={"task": "classification"})
    child = lg.optimize("mlp@1", quantize="dynamic-int8", runs=RUNS)

    assert (child.name, child.number) == ("mlp", 2)
    assert [v.number for v in lg.versions("mlp")] == [1, 2]
    lineage = child.environment["lineage"]
    assert lineage["parent"] == "mlp@1"
    assert lineage["parent_digest"] == str(parent.digest)
    assert lineage["root"] == "mlp@1"
    assert lineage["transformation"]["kind"] == "dynamic-int8"
    assert lineage["transformation"]["tool"] == "onnxruntime.quantization"
    assert lineage["transformation"]["tool_version"] == onnxruntime.__version__
    assert lineage["parent_metrics"] == {"accuracy": 0.9}
    assert child.metrics == {}  # the parent's accuracy was not measured on the child
    assert child.tags == parent.tags
    assert child.seeds == parent.seeds
    assert child.signature == parent.signature

    # parity: against the parent, then the samples recorded with it; marked as such
    assert child.parity is not None
    assert child.parity.passed
    how = " ".join(child.parity.inputs.values())
    assert "against parent mlp@1" in how
    assert "recorded with mlp@1" in how
    assert child.parity.outputs[0].atol == pytest.approx(0.1)

    # sizes as stored; the int8 model is smaller than its parent
    measured = lineage["measured"]
    assert measured["parent_bytes"] == len(lg.model_bytes(parent))
    assert measured["child_bytes"] == len(lg.model_bytes(child))
    assert measured["child_bytes"] < measured["parent_bytes"]
    assert measured["runs"] == RUNS
    assert measured["batch"] == 1
    assert measured["parent_latency_ms"] > 0
    assert measured["child_latency_ms"] > 0

    # a real version: signed, loadable, answering like its parent within the tolerance
    assert lg.verify(child) is not None
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    name = parent.signature.inputs[0].name
    got, want = lg.load("mlp@2")({name: x}), lg.load("mlp@1")({name: x})
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, atol=0.1, rtol=0.1)
        assert not np.array_equal(got[key], value)  # int8 weights: not the same numbers
    quantized = onnx.load_model_from_string(lg.model_bytes(child))
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear")
               for n in quantized.graph.node)
    # the lineage is part of the signed manifest
    assert b'"lineage"' in lg.file_bytes(child, "manifest.json")


def test_fp16_keeps_the_float32_signature_and_ort_level_is_held_tight(lg: Lockgate) -> None:
    lg.register(linear_onnx(8, 3), name="lin")
    half = lg.optimize("lin@1", fp16=True, runs=RUNS)
    assert half.signature.inputs[0].dtype == "float32"
    assert half.signature.outputs[0].dtype == "float32"
    made = half.environment["lineage"]["transformation"]
    assert (made["kind"], made["tool"]) == ("fp16", "onnxconverter_common.float16")
    graph = onnx.load_model_from_string(lg.model_bytes(half)).graph
    assert {i.data_type for i in graph.initializer} == {onnx.TensorProto.FLOAT16}

    fused = lg.optimize("lin@1", ort_level="extended", runs=RUNS)
    assert fused.environment["lineage"]["transformation"]["kind"] == "ort-extended"
    assert fused.environment["lineage"]["tolerance"] == {"atol": 1e-4, "rtol": 1e-3}
    assert fused.parity is not None
    assert fused.parity.passed


def test_a_chain_names_its_parent_and_is_proven_against_the_first_version(lg: Lockgate) -> None:
    lg.register(linear_onnx(8, 3), name="lin")
    lg.optimize("lin@1", quantize="dynamic-int8", runs=RUNS)
    again = lg.optimize("lin@2", ort_level="basic", runs=RUNS)
    lineage = again.environment["lineage"]
    assert (lineage["parent"], lineage["root"]) == ("lin@2", "lin@1")
    # against its parent: ort-basic's tolerance; against lin@1: int8's and ort-basic's summed
    assert lineage["tolerance"] == {"atol": 1e-4, "rtol": 1e-3}
    assert lineage["root_tolerance"] == {"atol": pytest.approx(0.1 + 1e-4),
                                         "rtol": pytest.approx(0.1 + 1e-3)}
    assert "recorded with lin@1" in " ".join(again.parity.inputs.values())  # type: ignore[union-attr]


def test_a_tolerance_too_tight_refuses_the_version_and_stores_nothing(home: Path) -> None:
    config = home / "lockgate.toml"
    config.write_text(config.read_text() + "\n[optimize_tolerances.dynamic-int8]\natol = 0\n"
                      "rtol = 0\n")
    with Lockgate.open(home) as lg:
        lg.register(linear_onnx(8, 3), name="lin")
        blobs, events = _blobs(lg), len(lg.audit_log(model="lin"))
        with pytest.raises(ParityError) as info:
            lg.optimize("lin@1", quantize="dynamic-int8", runs=RUNS)
        assert "dynamic-int8 of lin@1 refused" in info.value.message
        assert "max abs error" in info.value.message  # the worst error is named
        assert "optimize_tolerances.dynamic-int8" in (info.value.hint or "")
        assert [v.number for v in lg.versions("lin")] == [1]
        assert _blobs(lg) == blobs
        assert len(lg.audit_log(model="lin")) == events
        # fp16 keeps its own (default) tolerance and passes
        assert lg.optimize("lin@1", fp16=True, runs=RUNS).number == 2


@pytest.mark.parametrize(("kwargs", "words"), [
    ({}, "no optimization asked for"),
    ({"quantize": "dynamic-int8", "fp16": True}, "--quantize and --fp16 given"),
    ({"quantize": "int4"}, "unknown quantization 'int4'"),
    ({"ort_level": "all"}, "--ort-level all is refused"),
    ({"ort_level": "max"}, "unknown ONNX Runtime optimization level 'max'"),
])
def test_bad_requests_are_refused_before_anything_runs(mem_lg: Lockgate, kwargs: dict[str, object],
                                                       words: str) -> None:
    mem_lg.register(linear_onnx(), name="lin")
    with pytest.raises(InvalidInputError, match=words):
        mem_lg.optimize("lin@1", **kwargs)  # type: ignore[arg-type]
    assert len(mem_lg.versions("lin")) == 1


def test_a_model_with_external_data_is_refused() -> None:
    model = linear_onnx()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="weights.bin")
    with pytest.raises(InvalidInputError, match="external data"):
        transform(model.SerializeToString(), "dynamic-int8")


def test_unknown_transformation_in_the_tolerance_table_is_a_config_error(home: Path) -> None:
    config = home / "lockgate.toml"
    config.write_text(config.read_text() + "\n[optimize_tolerances.int4]\natol = 1\n")
    with pytest.raises(ConfigError, match="unknown transformation"):
        Lockgate.open(home)


def _context(lg: Lockgate, ref: str) -> GateContext:
    return GateContext(version=lg.get(ref), from_stage="prototype", to_stage="stabilized",
                       actor="tester", settings=lg.settings)


def test_the_metrics_gate_compares_an_optimized_version_with_its_parent(home: Path) -> None:
    config = home / "lockgate.toml"  # outputs of magnitude ~16: int8 errs by ~1
    config.write_text(config.read_text() + "\n[optimize_tolerances.dynamic-int8]\natol = 2\n")
    lg = Lockgate.open(home)
    rng = np.random.default_rng(1)
    lg.register(linear_onnx(256, 64), rng.standard_normal((4, 256)).astype(np.float32),
                name="lin", metrics={"accuracy": 0.9})
    lg.optimize("lin@1", quantize="dynamic-int8", runs=RUNS, metrics={"accuracy": 0.85})

    smaller = MetricsGate.configure({"against": "parent", "model_bytes": {
        "min_relative_change": 0.5, "greater_is_better": False}}, "gate.metrics")
    result = smaller.evaluate(_context(lg, "lin@2"))
    assert result.status is GateStatus.PASS, result.message
    assert "against parent lin@1" in result.message
    lineage = lg.get("lin@2").environment["lineage"]["measured"]
    assert result.measured["model_bytes"]["parent"] == lineage["parent_bytes"]
    assert result.measured["model_bytes"]["value"] == lineage["child_bytes"]
    assert result.measured["model_bytes"]["parent_version"] == 1

    as_accurate = MetricsGate.configure({"against": "parent", "accuracy": {
        "min_absolute_change": 0, "greater_is_better": True}}, "gate.metrics")
    refused = as_accurate.evaluate(_context(lg, "lin@2"))
    assert refused.status is GateStatus.FAIL
    assert "accuracy improves by -0.05 on the parent (0.9 -> 0.85)" in refused.message

    unoptimized = as_accurate.evaluate(_context(lg, "lin@1"))
    assert unoptimized.status is GateStatus.PASS
    assert "no parent" in unoptimized.message

    with pytest.raises(ConfigError, match="against"):
        MetricsGate.configure({"against": "grandparent"}, "gate.metrics")
    lg.close()
