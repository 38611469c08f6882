"""JAX → ONNX through jax2onnx: parity recorded and under tolerance for a plain JAX MLP (with
parameters), a jitted function, a flax nnx CNN and a bound linen module; the max-pool graph ONNX
Runtime cannot run is refused, naming the op, and nothing is stored."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("jax2onnx")
nnx = pytest.importorskip("flax.nnx")
linen = pytest.importorskip("flax.linen")

import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from lockgate.api.facade import Lockgate  # noqa: E402
from lockgate.convert import JaxConverter, JaxFunction, converter_for  # noqa: E402
from lockgate.errors import ConversionError, ParityError  # noqa: E402

pytestmark = pytest.mark.jax

RNG = np.random.default_rng(0)
X = RNG.random((4, 8)).astype(np.float32)
IMG = RNG.random((2, 8, 8, 1)).astype(np.float32)


def _mlp(params: dict, x: jax.Array) -> jax.Array:  # type: ignore[type-arg]
    h = jax.nn.relu(x @ params["w1"] + params["b1"])
    return jax.nn.softmax(h @ params["w2"])


PARAMS = {"w1": jnp.asarray(RNG.normal(size=(8, 16)), jnp.float32),
          "b1": jnp.asarray(RNG.normal(size=(16,)), jnp.float32),
          "w2": jnp.asarray(RNG.normal(size=(16, 3)), jnp.float32)}


class CNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(1, 4, kernel_size=(3, 3), rngs=rngs)
        self.head = nnx.Linear(4 * 8 * 8, 3, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = nnx.relu(self.conv(x))
        return self.head(h.reshape(h.shape[0], -1))


class Dense(linen.Module):
    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return linen.Dense(3)(linen.tanh(linen.Dense(6)(x)))


def _check(v, converter_word: str) -> None:  # type: ignore[no-untyped-def]
    assert v.framework == "jax"
    assert v.framework_version == jax.__version__
    assert v.parity is not None
    assert v.parity.passed
    assert max(o.max_abs_error for o in v.parity.outputs) < 1e-4
    assert len(set(v.parity.batch_sizes)) > 1
    assert v.signature.inputs[0].shape[0] == "batch"
    assert converter_word in v.environment["converter"]
    assert "jax2onnx==" in v.environment["converter"]


def test_plain_jax_mlp_with_parameters(mem_lg: Lockgate) -> None:
    model = JaxFunction(_mlp, PARAMS)
    assert isinstance(converter_for(model), JaxConverter)
    _check(mem_lg.register(model, X, name="jax-mlp"), "(function)")


def test_jitted_function(mem_lg: Lockgate) -> None:
    fn = jax.jit(lambda x: _mlp(PARAMS, x))
    _check(mem_lg.register(fn, X, name="jit-mlp"), "(jit)")


def test_flax_nnx_cnn(mem_lg: Lockgate) -> None:
    v = mem_lg.register(CNN(nnx.Rngs(0)), IMG, name="nnx-cnn")
    _check(v, "(flax.nnx)")
    assert "flax==" in v.environment["converter"]


def test_bound_linen_module(mem_lg: Lockgate) -> None:
    module = Dense()
    variables = module.init(jax.random.key(0), X)
    _check(mem_lg.register(module.bind(variables), X, name="linen"), "(flax.linen)")


def test_an_unbound_linen_module_is_not_accepted() -> None:
    with pytest.raises(Exception, match="no converter accepts"):
        converter_for(Dense())


def test_max_pool_onnx_runtime_cannot_run_is_refused(mem_lg: Lockgate) -> None:
    pool = jax.jit(lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1),
                                               (1, 2, 2, 1), "VALID"))
    with pytest.raises(ParityError) as exc:
        mem_lg.register(pool, RNG.random((2, 8, 8, 3)).astype(np.float32), name="pool")
    assert "MaxPool op" in exc.value.message
    assert "jax2onnx" in (exc.value.hint or "")
    assert mem_lg.models() == []
    assert mem_lg.audit_log() == []


def test_a_sample_the_model_rejects_is_a_conversion_error(mem_lg: Lockgate) -> None:
    with pytest.raises(ConversionError, match="failed on the sample"):
        mem_lg.register(JaxFunction(_mlp, PARAMS), RNG.random((4, 5)).astype(np.float32),
                        name="bad")
    assert mem_lg.models() == []


def test_register_from_a_function_on_the_command_line(home, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from lockgate.cli.main import main

    monkeypatch.chdir(Path(__file__).parent.parent / "parity" / "compare_models")
    main(["--home", str(home), "register", "--from", "jax_mlp:build", "--arg", "3",
          "--name", "cli-jax", "--json"])
    import json

    v = json.loads(capsys.readouterr().out)
    assert v["framework"] == "jax"
    assert v["parity"]["passed"] is True
    assert "jax2onnx" in v["environment"]["converter"]
    with Lockgate.open(home) as lg:
        recipe = json.loads(lg.file_bytes(lg.get("cli-jax@1"), "recipe.json"))
    assert recipe["entry"] == "jax_mlp:build"
    assert recipe["args"] == ["3"]
