"""ONNX files and ModelProtos: checks, external data confinement, converter selection."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lockgate.convert import OnnxFileConverter, converter_for
from lockgate.errors import (
    ConversionError,
    InvalidInputError,
    NotFoundError,
    UnsafePathError,
    UnsupportedModelError,
)
from lockgate.parity.check import check_parity, parity_if_reference
from lockgate.progress import NullProgress
from lockgate.runtime.predictor import Predictor


def _linear(n_in: int = 4, n_out: int = 3) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(n_in, n_out)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(size=(n_out,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["output"]),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", n_out])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.producer_name = "unit-test"
    return model


def _convert(model: object, sample: object = None) -> onnx.ModelProto:
    converted = OnnxFileConverter().convert(model, sample, opset=None, progress=NullProgress())
    return converted.model


def _with_external_data(folder: Path, location: str) -> Path:
    """Save a model whose weights live in ``folder/data.bin``, then point W at ``location``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(
        _linear(),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="data.bin",
        size_threshold=0,
    )
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save_model(proto, str(path))
    return path


def test_file_loads_with_metadata(tmp_path: Path) -> None:
    path = tmp_path / "linear.onnx"
    onnx.save_model(_linear(), str(path))
    converted = converter_for(path).convert(path, None, opset=None, progress=NullProgress())
    assert isinstance(converter_for(str(path)), OnnxFileConverter)
    assert converted.framework == "onnx"
    assert converted.framework_version == onnx.__version__
    assert converted.reference is None
    assert converted.details["producer_name"] == "unit-test"
    assert converted.details["source"] == str(path)
    sample = converted.sample["input"]
    assert sample.shape == (1, 4)
    assert sample.dtype == np.float32


def test_model_proto_and_given_sample() -> None:
    original = _linear()
    x = np.ones((3, 4))  # float64 is cast to the model's float32
    converted = OnnxFileConverter().convert(original, {"input": x}, opset=None,
                                            progress=NullProgress())
    assert converted.sample["input"].dtype == np.float32
    assert converted.model is not original
    assert converted.details["source"] == "<ModelProto>"


def test_sample_shape_is_checked() -> None:
    with pytest.raises(ConversionError, match="shape"):
        _convert(_linear(), np.ones((2, 5), dtype=np.float32))


def test_opset_request_converts_the_model() -> None:
    converted = OnnxFileConverter().convert(_linear(), None, opset=18, progress=NullProgress())
    assert converted.details["opset"] == "18"


def test_external_data_inside_folder_is_embedded(tmp_path: Path) -> None:
    path = _with_external_data(tmp_path / "m", "data.bin")
    model = _convert(path)
    assert all(t.data_location == TensorProto.DEFAULT for t in model.graph.initializer)
    assert not any(t.external_data for t in model.graph.initializer)
    predictor = Predictor(model.SerializeToString())
    out = predictor.run({"input": np.ones((2, 4), dtype=np.float32)})["output"]
    assert out.shape == (2, 3)


def test_external_data_in_subfolder_is_accepted(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    path = _with_external_data(folder, "weights/data.bin")
    (folder / "weights").mkdir()
    os.replace(folder / "data.bin", folder / "weights" / "data.bin")
    with pytest.raises(ConversionError, match="missing"):  # B still points at data.bin
        _convert(path)
    proto = onnx.load(str(path), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "weights/data.bin"
    onnx.save_model(proto, str(path))
    assert len(_convert(path).graph.initializer) == 2


@pytest.mark.parametrize("location", ["../data.bin", "sub/../../data.bin", "..\\data.bin"])
def test_parent_path_is_unsafe(tmp_path: Path, location: str) -> None:
    path = _with_external_data(tmp_path / "m", location)
    (tmp_path / "data.bin").write_bytes((tmp_path / "m" / "data.bin").read_bytes())
    with pytest.raises(UnsafePathError, match="outside"):
        _convert(path)


def test_absolute_path_is_unsafe(tmp_path: Path) -> None:
    path = _with_external_data(tmp_path / "m", str(tmp_path / "m" / "data.bin"))
    with pytest.raises(UnsafePathError, match="absolute"):
        _convert(path)


def test_symlink_escaping_the_folder_is_unsafe(tmp_path: Path) -> None:
    path = _with_external_data(tmp_path / "m", "link.bin")
    outside = tmp_path / "outside.bin"
    outside.write_bytes((tmp_path / "m" / "data.bin").read_bytes())
    (tmp_path / "m" / "link.bin").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="resolves"):
        _convert(path)


def test_model_proto_with_external_data_is_refused(tmp_path: Path) -> None:
    path = _with_external_data(tmp_path / "m", "data.bin")
    proto = onnx.load(str(path), load_external_data=False)
    with pytest.raises(ConversionError, match="external data"):
        _convert(proto)


def test_garbage_file_is_a_conversion_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07this is not protobuf\xff\xff\xff")
    with pytest.raises(ConversionError):
        _convert(path)


def test_invalid_graph_is_a_conversion_error(tmp_path: Path) -> None:
    model = _linear()
    model.graph.node[1].input[1] = "nowhere"
    path = tmp_path / "invalid.onnx"
    onnx.save_model(model, str(path))
    with pytest.raises(ConversionError, match="not a valid ONNX model"):
        _convert(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no file at"):
        _convert(tmp_path / "absent.onnx")


def test_no_reference_means_no_report() -> None:
    converted = OnnxFileConverter().convert(_linear(), None, opset=None, progress=NullProgress())
    predictor = Predictor(converted.model.SerializeToString())
    assert parity_if_reference(converted, predictor, n_random=3) is None
    with pytest.raises(InvalidInputError, match="no source framework"):
        check_parity(converted, predictor)


def test_unsupported_model_lists_supported_kinds() -> None:
    with pytest.raises(UnsupportedModelError) as info:
        converter_for(object())
    assert info.value.hint is not None
    assert ".onnx" in info.value.hint
    assert "torch" in info.value.hint
    assert "scikit-learn" in info.value.hint
    with pytest.raises(NotFoundError):
        converter_for("model.pkl")


def test_asking_does_not_import_frameworks() -> None:
    code = (
        "import sys\n"
        "from lockgate.convert import converter_for\n"
        "import onnx\n"
        "for m in ('x.onnx', onnx.ModelProto(), 3, object()):\n"
        "    try:\n"
        "        converter_for(m)\n"
        "    except Exception:\n"
        "        pass\n"
        "print(sorted(n for n in ('torch', 'sklearn', 'skl2onnx') if n in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"


def _token_sum() -> onnx.ModelProto:
    """Sums token embeddings over a free sequence axis the file calls ``L``."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["tokens", "axes"], ["output"], keepdims=0)],
        "token_sum",
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["N", "L", 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def test_dynamic_names_the_free_axes_of_an_onnx_file() -> None:
    converted = OnnxFileConverter().convert(
        _token_sum(), None, opset=None, progress=NullProgress(),
        dynamic={"tokens": {0: "batch", 1: "sequence"}})
    dims = [d.dim_param for d in converted.model.graph.input[0].type.tensor_type.shape.dim[:2]]
    assert dims == ["batch", "sequence"]
    assert converted.model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert converted.details["dynamic"] == "tokens: 0=batch, 1=sequence"


def test_dynamic_cannot_free_an_axis_the_onnx_file_fixes() -> None:
    with pytest.raises(ConversionError, match="fixes axis 2 of 'tokens' at 3"):
        OnnxFileConverter().convert(_token_sum(), None, opset=None, progress=NullProgress(),
                                    dynamic={"tokens": {2: "width"}})
    with pytest.raises(InvalidInputError, match="tokenz"):
        OnnxFileConverter().convert(_token_sum(), None, opset=None, progress=NullProgress(),
                                    dynamic={"tokenz": {1: "sequence"}})
