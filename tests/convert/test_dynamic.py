"""register(dynamic=…): free dimensions by name for PyTorch, Keras/TensorFlow and JAX; the graph
carries the names, ONNX Runtime runs every length, and bad specs are refused before export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from lockgate.api.facade import Lockgate
from lockgate.cli.parse import parse_dynamic
from lockgate.convert.dims import name_dims, resolve_dynamic
from lockgate.errors import ConversionError, InvalidInputError
from lockgate.progress import NullProgress

RNG = np.random.default_rng(3)
SEQ = {0: "batch", 1: "sequence"}


def _dims(value: onnx.ValueInfoProto) -> list[object]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _io(proto: onnx.ModelProto) -> dict[str, list[object]]:
    return {v.name: _dims(v) for v in [*proto.graph.input, *proto.graph.output]}


# -- the spec, checked before any export --------------------------------------------------------

def test_unnamed_inputs_keep_dim_0_as_batch() -> None:
    got = resolve_dynamic({"ids": {1: "sequence"}}, ["ids", "mask", "scale"],
                          [(2, 7), (2, 7), ()])
    assert got == [{1: "sequence"}, {0: "batch"}, {}]
    assert resolve_dynamic(None, ["x", "y"], [(3, 4), (5,)]) == [{0: "batch"}, {}]
    assert resolve_dynamic({"x": {-1: "width"}}, ["x"], [(3, 4)]) == [{1: "width"}]


@pytest.mark.parametrize(("spec", "message"), [
    ({"input_idz": SEQ}, "the model's inputs are 'ids', 'mask'"),
    ({"ids": {2: "sequence"}}, "axis 2 is out of range"),
    ({"ids": {0: "batch size"}}, "is not a dimension name"),
    ({"ids": {"1": "sequence"}}, "is not an integer"),
    ({"ids": {1: "sequence", -1: "len"}}, "names axis 1 twice"),
    ({"ids": {1: "n"}, "mask": {0: "n"}}, "sizes differ (7 and 2)"),
    ({"ids": "batch"}, "must map axes to names"),
    (["ids"], "must be a mapping"),
])
def test_bad_specs_are_refused_with_a_hint(spec: Any, message: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        resolve_dynamic(spec, ["ids", "mask"], [(2, 7), (2, 7)])
    assert message in info.value.message
    assert info.value.hint


def test_a_free_axis_the_export_fixed_is_a_conversion_error() -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["s0", 7])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["s0", 7])])
    proto = onnx.helper.make_model(graph)
    with pytest.raises(ConversionError, match="fixes axis 1 of 'x' at 7"):
        name_dims(proto, [{0: "batch", 1: "sequence"}])
    assert _io(name_dims(proto, [{0: "rows"}])) == {"x": ["rows", 7], "y": ["rows", 7]}


# -- the command line -------------------------------------------------------------------------

def test_the_cli_forms_parse_to_one_spec() -> None:
    assert parse_dynamic(()) is None
    assert parse_dynamic(["input_ids:0=batch,1=sequence", "attention_mask:0=batch"]) == {
        "input_ids": SEQ, "attention_mask": {0: "batch"}}
    assert parse_dynamic(['{"input_ids": {"0": "batch", "1": "sequence"}}']) == {
        "input_ids": SEQ}


@pytest.mark.parametrize("text", ["input_ids", "input_ids:0", "input_ids:x=batch",
                                  "input_ids:0=", "{not json", '{"a": 1}',
                                  "input_ids:0=batch,0=rows"])
def test_bad_cli_syntax_is_one_error_line(text: str, home: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from lockgate.cli.main import main

    with pytest.raises(InvalidInputError):
        parse_dynamic([text])
    with pytest.raises(SystemExit) as info:
        main(["--home", str(home), "register", "m.onnx", "--name", "m", "--dynamic", text])
    assert info.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) <= 2
    assert "--dynamic" in lines[0]


# -- PyTorch ------------------------------------------------------------------------------------

def _torch_tokens() -> Any:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")

    class Tokens(torch.nn.Module):
        """A token-level output and a pooled one over a variable-length sequence."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(50, 8)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, input_ids: Any, attention_mask: Any) -> tuple[Any, Any]:
            h = self.embed(input_ids) * attention_mask.unsqueeze(-1)
            pooled = h.sum(1) / attention_mask.sum(1, keepdim=True).clamp(min=1)
            return torch.tanh(h), self.head(pooled)

    torch.manual_seed(0)
    return Tokens()


@pytest.mark.torch
def test_torch_model_registered_with_a_free_sequence_runs_at_every_length(
        mem_lg: Lockgate) -> None:
    torch = pytest.importorskip("torch")
    model = _torch_tokens()
    ids = torch.randint(0, 50, (1, 4))
    mask = torch.ones(1, 4, dtype=torch.int64)  # a batch of 1: the export widens it
    v = mem_lg.register(model, (ids, mask), name="tokens",
                        dynamic={"input_ids": SEQ, "attention_mask": SEQ})
    proto = onnx.load_from_string(mem_lg.model_bytes(v))
    assert _io(proto) == {"input_ids": ["batch", "sequence"],
                          "attention_mask": ["batch", "sequence"],
                          "output_0": ["batch", "sequence", 8], "output_1": ["batch", 3]}
    assert v.parity is not None
    assert v.parity.passed
    assert len(set(v.parity.dims["sequence"])) >= 3, v.parity.dims  # lengths varied, not batch only
    session = ort.InferenceSession(proto.SerializeToString())
    for batch, length in ((2, 5), (3, 17)):
        x = torch.randint(0, 50, (batch, length))
        m = torch.ones(batch, length, dtype=torch.int64)
        m[0, length // 2:] = 0
        got = session.run(None, {"input_ids": x.numpy(), "attention_mask": m.numpy()})
        with torch.no_grad():
            want = [t.numpy() for t in model(x, m)]
        assert got[0].shape == (batch, length, 8)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.torch
def test_torch_free_dims_of_size_1_in_the_sample_stay_free() -> None:
    torch = pytest.importorskip("torch")
    from lockgate.convert.torch import TorchConverter

    model = _torch_tokens()
    ids = torch.randint(0, 50, (1, 1))
    converted = TorchConverter().convert(
        model, (ids, torch.ones_like(ids)), opset=None, progress=NullProgress(),
        dynamic={"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}})
    assert _io(converted.model)["input_ids"] == [1, "sequence"]
    assert _io(converted.model)["output_0"] == [1, "sequence", 8]
    assert converted.details["dynamic_batch"] == "false"
    session = ort.InferenceSession(converted.model.SerializeToString())
    x = torch.randint(0, 50, (1, 6))
    got = session.run(None, {"input_ids": x.numpy(),
                             "attention_mask": np.ones((1, 6), np.int64)})
    with torch.no_grad():
        want = model(x, torch.ones_like(x))
    np.testing.assert_allclose(got[1], want[1].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.torch
def test_torch_dims_the_code_pins_are_refused(mem_lg: Lockgate) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")

    class Pinned(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return x.reshape(x.shape[0], 2, 3)  # axis 1 must stay 6

    with pytest.raises(ConversionError) as info:
        mem_lg.register(Pinned(), torch.randn(2, 6), name="pinned", dynamic={"x": SEQ})
    assert "dynamic" in (info.value.hint or "")
    with pytest.raises(InvalidInputError, match="the model's inputs are 'x'"):
        mem_lg.register(Pinned(), torch.randn(2, 6), name="pinned", dynamic={"input": SEQ})
    assert mem_lg.models() == []


# -- Keras / TensorFlow -------------------------------------------------------------------------

@pytest.mark.tensorflow
@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                    reason="this test's Keras runs on the TensorFlow backend (KERAS_BACKEND)")
def test_keras_sequence_dims_stay_none_and_carry_the_names() -> None:
    keras = pytest.importorskip("keras")
    assert keras.backend.backend() == "tensorflow"
    from lockgate.convert.keras import KerasConverter

    inp = keras.Input((None, 4))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Dense(5)(inp)))
    sample = RNG.random((2, 7, 4)).astype(np.float32)
    converted = KerasConverter().convert(model, sample, opset=None, progress=NullProgress(),
                                         dynamic={"input": SEQ})
    assert _io(converted.model) == {"input": ["batch", "sequence", 4],
                                    "output": ["batch", "sequence", 3]}
    assert converted.details["dynamic"] == "input: 0=batch, 1=sequence"
    session = ort.InferenceSession(converted.model.SerializeToString())
    for length in (3, 11):
        x = RNG.random((2, length, 4)).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"input": x})[0],
                                   np.asarray(model(x, training=False)), rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidInputError, match="the model's inputs are 'input'"):
        KerasConverter().convert(model, sample, opset=None, progress=NullProgress(),
                                 dynamic={"x": SEQ})


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_keras_on_torch_and_jax_names_the_free_dims(backend: str) -> None:
    pytest.importorskip(backend)
    script = textwrap.dedent("""
        import json, numpy as np, keras, onnxruntime as ort
        from lockgate.convert.keras import KerasConverter
        from lockgate.progress import NullProgress
        inp = keras.Input((None, 4))
        model = keras.Model(inp, keras.layers.Dense(3)(inp))
        rng = np.random.default_rng(0)
        got = KerasConverter().convert(model, rng.random((2, 5, 4), np.float32), opset=None,
                                       progress=NullProgress(),
                                       dynamic={"input": {0: "batch", 1: "seq"}})
        session = ort.InferenceSession(got.model.SerializeToString())
        x = rng.random((3, 9, 4), np.float32)
        err = float(np.abs(session.run(None, {"input": x})[0]
                           - np.asarray(keras.ops.convert_to_numpy(model(x)))).max())
        print(json.dumps({"io": {v.name: [d.dim_param or d.dim_value
                                          for d in v.type.tensor_type.shape.dim]
                                 for v in [*got.model.graph.input, *got.model.graph.output]},
                          "err": err}))
    """)
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["io"] == {"input": ["batch", "seq", 4], "output": ["batch", "seq", 3]}
    assert got["err"] < 1e-5


# -- JAX ----------------------------------------------------------------------------------------

@pytest.mark.jax
def test_jax_symbolic_dims_take_the_names() -> None:
    pytest.importorskip("jax2onnx")
    import jax.numpy as jnp

    from lockgate.convert.jax import JaxConverter, JaxFunction

    w = RNG.random((4, 3)).astype(np.float32)

    def fn(params: Any, x: Any, mask: Any) -> Any:
        h = jnp.tanh(x @ params)
        return h, (h * mask[..., None]).sum(axis=1)

    model = JaxFunction(fn, w)
    sample = (RNG.random((2, 6, 4)).astype(np.float32), np.ones((2, 6), np.float32))
    converted = JaxConverter().convert(
        model, sample, opset=None, progress=NullProgress(),
        dynamic={"input_0": {0: "batch", 1: "tokens"}, "input_1": {0: "batch", 1: "tokens"}})
    assert _io(converted.model) == {
        "input_0": ["batch", "tokens", 4], "input_1": ["batch", "tokens"],
        "output_0": ["batch", "tokens", 3], "output_1": ["batch", 3]}
    session = ort.InferenceSession(converted.model.SerializeToString())
    for length in (1, 9):
        x = RNG.random((3, length, 4)).astype(np.float32)
        m = np.ones((3, length), np.float32)
        got = session.run(None, {"input_0": x, "input_1": m})
        for g, want in zip(got, model(x, m), strict=True):
            np.testing.assert_allclose(g, np.asarray(want), rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidInputError, match="axis 3 is out of range"):
        JaxConverter().convert(model, sample, opset=None, progress=NullProgress(),
                               dynamic={"input_0": {3: "tokens"}})
