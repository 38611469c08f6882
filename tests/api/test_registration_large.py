"""A model whose weights are over the hold limit is written in pieces, run by ONNX Runtime from
a file and sealed from the store: the version is the same as a held model's."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from lockgate.api import registration
from lockgate.api.facade import Lockgate
from lockgate.seal import folder as sealing
from onnx_models import linear_onnx


def test_a_large_model_is_stored_signed_and_served_like_a_small_one(
    lg: Lockgate, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = linear_onnx()
    small = lg.register(model, name="held")
    written: list[str] = []
    real_write = sealing.write_model

    def counting_write(proto: onnx.ModelProto, path: object) -> None:
        written.append(proto.graph.name)
        real_write(proto, path)  # type: ignore[arg-type]

    monkeypatch.setattr(sealing, "write_model", counting_write)
    monkeypatch.setattr(registration, "_HOLD_BYTES", 0)  # every model counts as large
    large = lg.register(model, name="large")
    assert written == ["linear"]
    stored = [onnx.load_from_string(lg.artifacts.get(v.digest)) for v in (large, small)]
    assert stored[0] == stored[1]  # the pieces parse to the same model
    assert lg.verify(lg.get("large@1")) == large.signed_by
    assert large.signature == small.signature
    assert large.opset == small.opset
    x = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(lg.load("large@1").run({"input": x})["output"],
                                  lg.load("held@1").run({"input": x})["output"])
