"""Shared fixtures. ONNX Runtime telemetry is off for every test and every process tests start."""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lockgate.api import Lockgate
from lockgate.config import Settings
from lockgate.store.artifacts import MemoryArtifactStore
from lockgate.store.metadata import MemoryMetadataStore


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh lockgate home; LOCKGATE_* variables from the caller's shell are cleared."""
    for key in list(os.environ):
        if key.startswith("LOCKGATE_"):
            monkeypatch.delenv(key)
    h = tmp_path / "home"
    monkeypatch.setenv("LOCKGATE_HOME", str(h))
    monkeypatch.setenv("LOCKGATE_USER", "tester")
    return h


@pytest.fixture
def lg(home: Path) -> Iterator[Lockgate]:
    """Lockgate on SQLite and a local artifact folder (the embedded default)."""
    with Lockgate.open(home) as instance:
        yield instance


@pytest.fixture
def mem_lg(tmp_path: Path) -> Lockgate:
    """Lockgate on the in-memory stores, for fast tests."""
    settings = Settings.for_home(tmp_path / "mem", user="tester")
    return Lockgate(settings, metadata=MemoryMetadataStore(), artifacts=MemoryArtifactStore())


def linear_onnx(n_in: int = 4, n_out: int = 3, seed: int = 0) -> onnx.ModelProto:
    """y = x @ W + b with a dynamic batch dim, built directly with onnx.helper."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(n_in, n_out)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(size=(n_out,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["xw"]),
         helper.make_node("Add", ["xw", "B"], ["output"])],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", n_out])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def linear_model() -> onnx.ModelProto:
    return linear_onnx()
