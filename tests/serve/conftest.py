"""ONNX models built with onnx.helper for the serve tests, and an event recorder."""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 9
IN_FEATURES = 4
OUT_FEATURES = 3


def _model(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def linear_weights(scale: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((IN_FEATURES, OUT_FEATURES)) * scale).astype(np.float32)
    b = (rng.standard_normal(OUT_FEATURES) * scale).astype(np.float32)
    return w, b


def linear_model(scale: float = 1.0) -> bytes:
    """x FP32 [batch, 4] → y = x @ W + b [batch, 3], z = relu(y) [batch, 3]."""
    w, b = linear_weights(scale)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["y"]),
            helper.make_node("Relu", ["y"], ["z"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", IN_FEATURES])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUT_FEATURES]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", OUT_FEATURES]),
        ],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    return _model(graph)


def typed_model() -> bytes:
    """INT64, BOOL, BYTES and UINT8 inputs; BOOL, BYTES and FP64 outputs."""
    zero = numpy_helper.from_array(np.array(0, dtype=np.int64), "zero")
    graph = helper.make_graph(
        [
            helper.make_node("Greater", ["ids", "zero"], ["positive"]),
            helper.make_node("Not", ["flags"], ["flipped"]),
            helper.make_node("Identity", ["text"], ["echo"]),
            helper.make_node("Cast", ["pixels"], ["wide"], to=TensorProto.DOUBLE),
        ],
        "typed",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("flags", TensorProto.BOOL, ["batch"]),
            helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"]),
            helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", 2]),
        ],
        [
            helper.make_tensor_value_info("positive", TensorProto.BOOL, ["batch"]),
            helper.make_tensor_value_info("flipped", TensorProto.BOOL, ["batch"]),
            helper.make_tensor_value_info("echo", TensorProto.STRING, ["batch"]),
            helper.make_tensor_value_info("wide", TensorProto.DOUBLE, ["batch", 2]),
        ],
        initializer=[zero],
    )
    return _model(graph)


class Events:
    """Records ``on_event`` calls; tests wait on it instead of sleeping."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._cond = threading.Condition()

    def __call__(self, name: str, payload: dict[str, Any]) -> None:
        with self._cond:
            self.items.append((name, payload))
            self._cond.notify_all()

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [p for n, p in self.items if n == name]

    def wait_for(
        self, name: str | tuple[str, ...], count: int = 1, timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` events named ``name`` (or any of the names) have arrived."""
        names = (name,) if isinstance(name, str) else name
        with self._cond:
            ok = self._cond.wait_for(
                lambda: sum(n in names for n, _ in self.items) >= count, timeout
            )
            assert ok, f"no {count} {name!r} event(s); got {self.items}"
            return [p for n, p in self.items if n in names]


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture(scope="session")
def make_linear() -> Callable[[float], bytes]:
    return linear_model


@pytest.fixture(scope="session")
def typed_bytes() -> bytes:
    return typed_model()
