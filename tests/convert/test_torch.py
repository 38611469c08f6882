"""torch → ONNX: parity at varied batch sizes for an MLP, a CNN and a transformer layer."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from lockgate.convert import Converted, TorchConverter, converter_for  # noqa: E402
from lockgate.errors import ConversionError  # noqa: E402
from lockgate.parity.check import assert_parity, check_parity  # noqa: E402
from lockgate.progress import NullProgress  # noqa: E402
from lockgate.runtime.predictor import Predictor  # noqa: E402

pytestmark = pytest.mark.torch

nn = torch.nn


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


class TwoInOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.lin(x) + y
        return z, z.argmax(dim=1)


class PinnedBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w  # broadcasting fixes the batch at 2


def _mlp() -> tuple[nn.Module, object]:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(1, 4)


def _cnn() -> tuple[nn.Module, object]:
    return SmallCNN(), np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)


def _transformer() -> tuple[nn.Module, object]:
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
    return layer, (torch.randn(3, 6, 16),)


def _convert(model: nn.Module, sample: object) -> Converted:
    return TorchConverter().convert(model, sample, opset=None, progress=NullProgress())


@pytest.mark.parametrize("build", [_mlp, _cnn, _transformer], ids=["mlp", "cnn", "transformer"])
def test_parity_and_dynamic_batch(build: Callable[[], tuple[nn.Module, object]]) -> None:
    torch.manual_seed(0)
    model, sample = build()
    converted = converter_for(model).convert(model, sample, opset=None, progress=NullProgress())
    predictor = Predictor(converted.model.SerializeToString())

    report = check_parity(converted, predictor, n_random=5)
    assert_parity(report)
    assert set(report.batch_sizes[1:]) == {1, 2, 3, 5, 8}

    (spec,) = predictor.signature.inputs
    assert spec.shape[0] == "batch"
    assert predictor.signature.outputs[0].shape[0] == "batch"
    assert converted.details["dynamic_batch"] == "true"
    for batch in (1, 5):
        x = np.random.default_rng(batch).normal(size=(batch, *spec.shape[1:])).astype(np.float32)
        got = predictor.run({spec.name: x})["output"]
        with torch.no_grad():
            want = model.eval()(torch.from_numpy(x)).numpy()
        assert got.shape[0] == batch
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


def test_converted_record() -> None:
    model, sample = _mlp()
    model.train()
    converted = _convert(model, sample)
    assert converted.framework == "pytorch"
    assert converted.framework_version == torch.__version__
    assert converted.converter.startswith("torch.onnx.export(dynamo=True) torch==")
    assert "onnxscript==" in converted.converter
    assert converted.details["opset"] == "18"
    assert model.training, "the caller's training mode is restored"
    assert list(converted.sample) == ["input"]
    assert converted.sample["input"].shape == (1, 4)
    proto = converted.model
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert [o.name for o in proto.graph.output] == ["output"]


def test_several_inputs_and_outputs_with_int_output() -> None:
    torch.manual_seed(0)
    model = TwoInOut()
    converted = _convert(model, (torch.randn(4, 4), torch.randn(4, 3)))
    predictor = Predictor(converted.model.SerializeToString())
    assert predictor.input_names == ["x", "y"]
    assert predictor.output_names == ["output_0", "output_1"]
    report = check_parity(converted, predictor, n_random=3)
    assert_parity(report)
    assert report.outputs[1].atol == 0.0  # int64 argmax is compared exactly


def test_pinned_batch_is_exported_static() -> None:
    converted = _convert(PinnedBatch(), torch.randn(2, 3))
    assert converted.details["dynamic_batch"] == "false"
    predictor = Predictor(converted.model.SerializeToString())
    assert predictor.signature.inputs[0].shape == (2, 3)
    report = check_parity(converted, predictor, n_random=2)
    assert_parity(report)
    assert report.batch_sizes == (2, 2, 2)


def test_sample_the_model_rejects() -> None:
    model, _ = _mlp()
    with pytest.raises(ConversionError, match="failed on the sample"):
        _convert(model, torch.randn(2, 7))


def test_untraceable_model_raises_conversion_error() -> None:
    class Untraceable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.asarray(x.tolist()) + 1)  # leaves the graph

    with pytest.raises(ConversionError, match=r"torch\.onnx\.export failed") as info:
        _convert(Untraceable(), torch.randn(2, 3))
    assert info.value.hint


def test_bad_sample_type() -> None:
    model, _ = _mlp()
    with pytest.raises(ConversionError, match="sample item 0"):
        _convert(model, [[1.0, 2.0, 3.0, 4.0]])


def test_export_carries_no_stack_traces_of_the_exporting_environment() -> None:
    """The exporter's stack traces name torch's files in this venv: the same model exported
    from another venv (``reproduce --env fresh``) would differ byte for byte."""
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    converted = TorchConverter().convert(model, torch.randn(4, 8), opset=None,
                                         progress=NullProgress())
    keys = {p.key for n in converted.model.graph.node for p in n.metadata_props}
    assert "pkg.torch.onnx.stack_trace" not in keys
    assert keys  # the exporter's other node metadata (no paths) is kept
    assert torch.__file__.rsplit("/", 2)[0] not in converted.model.SerializeToString().decode(
        "latin-1")
