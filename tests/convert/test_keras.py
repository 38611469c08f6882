"""Keras 3 / TensorFlow → ONNX: parity recorded and under tolerance for functional, Sequential
and subclassed models, a CNN, a tf.Module, a SavedModel directory and — in a child process,
since the backend is chosen at import — a Keras model on the torch backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

from lockgate.api.facade import Lockgate  # noqa: E402
from lockgate.convert import KerasConverter, converter_for  # noqa: E402
from lockgate.errors import ConversionError  # noqa: E402

pytestmark = pytest.mark.tensorflow

RNG = np.random.default_rng(0)
X = RNG.random((4, 8)).astype(np.float32)
IMG = RNG.random((2, 16, 16, 3)).astype(np.float32)


def _functional_mlp() -> keras.Model:
    inp = keras.Input((8,))
    h = keras.layers.Dense(16, activation="relu")(inp)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))


def _functional_cnn() -> keras.Model:
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", padding="same")(inp)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inp, keras.layers.Dense(5)(h))


def _sequential() -> keras.Model:
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"),
                             keras.layers.Dropout(0.5), keras.layers.Dense(2)])


class Subclassed(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.a = keras.layers.Dense(12, activation="relu")
        self.b = keras.layers.Dense(4)

    def call(self, x, training=False):  # type: ignore[no-untyped-def]
        return self.b(self.a(x))


@pytest.mark.parametrize(("build", "sample"), [
    (_functional_mlp, X), (_functional_cnn, IMG), (_sequential, X), (Subclassed, X)],
    ids=["functional-mlp", "functional-cnn", "sequential", "subclassed"])
def test_keras_models_register_with_parity(mem_lg: Lockgate, build, sample) -> None:  # type: ignore[no-untyped-def]
    model = build()
    assert isinstance(converter_for(model), KerasConverter)
    v = mem_lg.register(model, sample, name="k")
    assert v.framework == "keras"
    assert v.framework_version == keras.__version__
    assert v.parity is not None
    assert v.parity.passed
    assert v.parity.outputs[0].max_abs_error < 1e-4
    assert len(set(v.parity.batch_sizes)) > 1  # the batch dim stays free
    assert v.signature.inputs[0].name == "input"
    assert v.signature.inputs[0].shape[0] == "batch"
    assert v.signature.outputs[0].shape[0] == "batch"
    assert "tf2onnx" in v.environment["converter"]
    bom = json.loads(mem_lg.file_bytes(v, "bom.cdx.json"))
    model_ref = bom["metadata"]["component"]["bom-ref"]
    (deps,) = [d["dependsOn"] for d in bom["dependencies"] if d["ref"] == model_ref]
    names = {c["bom-ref"]: c["name"] for c in bom["components"]}
    got = {names.get(d) for d in deps}
    assert {"keras", "tf2onnx", "tensorflow_cpu"} <= got, got  # names as installed
    props = {p["name"]: p["value"] for p in bom["metadata"]["component"]["properties"]}
    assert any(k.endswith("framework_version") and x == keras.__version__
               for k, x in props.items())


def test_tf_module_and_saved_model_directory(mem_lg: Lockgate, tmp_path: Path) -> None:
    class Scale(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(RNG.random((8, 2)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32)])
        def __call__(self, x):  # type: ignore[no-untyped-def]
            return {"y": tf.matmul(x, self.w)}

    module = Scale()
    v = mem_lg.register(module, X, name="mod")
    assert v.framework == "tensorflow"
    assert v.parity is not None
    assert v.parity.passed
    tf.saved_model.save(module, str(tmp_path / "saved"),
                        signatures=module.__call__.get_concrete_function())
    v2 = mem_lg.register(str(tmp_path / "saved"), X, name="saved")
    assert v2.parity is not None
    assert v2.parity.passed
    assert "SavedModel" in v2.environment["converter"]


def test_a_model_that_fails_on_its_sample_is_refused(mem_lg: Lockgate) -> None:
    with pytest.raises(ConversionError, match="failed on the sample"):
        mem_lg.register(_functional_mlp(), RNG.random((4, 5)).astype(np.float32), name="bad")
    assert mem_lg.models() == []


@pytest.mark.slow
def test_keras_on_the_torch_backend(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    script = textwrap.dedent(f"""
        import json, numpy as np, keras
        from lockgate.api.facade import Lockgate
        assert keras.backend.backend() == "torch"
        inp = keras.Input((8,))
        hidden = keras.layers.Dense(6, activation="relu")(inp)
        model = keras.Model(inp, keras.layers.Dense(3)(hidden))
        x = np.random.default_rng(0).random((4, 8)).astype(np.float32)
        with Lockgate.open({str(tmp_path / "home")!r}) as lg:
            v = lg.register(model, x, name="torch-keras")
        print(json.dumps({{"framework": v.framework, "converter": v.environment["converter"],
                          "passed": v.parity.passed,
                          "err": v.parity.outputs[0].max_abs_error,
                          "batch": v.signature.inputs[0].shape[0]}}))
    """)
    env = {**os.environ, "KERAS_BACKEND": "torch", "ORT_DISABLE_TELEMETRY": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["framework"] == "keras"
    assert "backend=torch" in got["converter"]
    assert got["passed"] is True
    assert got["err"] < 1e-4
