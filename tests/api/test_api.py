"""The API facade on the embedded default: SQLite metadata and a local artifact folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from lockgate.api.facade import Lockgate
from lockgate.audit import EventType
from lockgate.errors import IntegrityError, InvalidInputError, NotFoundError, ParityError
from lockgate.store.artifacts import LocalArtifactStore
from onnx_models import linear_onnx


def _pipeline() -> tuple[object, np.ndarray]:
    pytest.importorskip("skl2onnx")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y), x


@pytest.mark.sklearn
def test_register_records_everything_and_loads(lg: Lockgate) -> None:
    pipe, x = _pipeline()
    v = lg.register(pipe, x[:5], name="clf", metrics={"auc": 0.9}, tags={"team": "risk"},
                    seed=3, description="demo")
    assert (v.name, v.number, v.stage, v.framework) == ("clf", 1, "prototype", "scikit-learn")
    assert v.parity is not None
    assert v.parity.passed
    assert v.opset > 0
    assert v.ir_version > 0
    assert [i.dtype for i in v.signature.inputs] == ["float32"]
    assert v.signature.inputs[0].shape[1] == 6
    assert isinstance(v.signature.inputs[0].shape[0], str)
    assert v.seeds == {"seed": 3}
    assert v.metrics == {"auc": 0.9}
    assert v.creator == "tester"
    assert "onnxruntime" in v.environment
    again = lg.get("clf@1")
    assert again.to_dict() == v.to_dict()
    predictor = lg.load("clf")
    out = predictor.run({v.signature.inputs[0].name: x[:7]})
    probs = next(a for a in out.values() if a.dtype == np.float32)
    np.testing.assert_allclose(probs, pipe.predict_proba(x[:7]), atol=1e-5)  # type: ignore[attr-defined]
    records = lg.audit_log()
    assert [r.type for r in records] == [EventType.MODEL_REGISTERED.value]
    assert lg.audit_verify().ok


class _Drifting:
    """A module whose eager outputs change on every call: export traces one, parity sees others."""

    @staticmethod
    def build() -> object:
        torch = pytest.importorskip("torch")

        class Drifting(torch.nn.Module):  # type: ignore[misc,name-defined]
            def __init__(self) -> None:
                super().__init__()
                self.calls = 0

            def forward(self, x: object) -> object:
                self.calls += 1
                return x * float(self.calls)  # type: ignore[operator]

        return Drifting()


@pytest.mark.torch
def test_parity_failure_stores_nothing(lg: Lockgate, home: Path) -> None:
    model = _Drifting.build()
    sample = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(ParityError) as info:
        lg.register(model, sample, name="drift")
    message = info.value.diagnostics()
    assert "output" in message or info.value.report is not None
    assert lg.meta.list_models() == []
    assert lg.audit_log() == []
    assert not [p for p in (home / "artifacts").rglob("*") if p.is_file()]


def test_flipped_byte_is_refused_at_load(lg: Lockgate) -> None:
    v = lg.register(linear_onnx(), name="lin")
    assert isinstance(lg.artifacts, LocalArtifactStore)
    path = lg.artifacts.path_for(v.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="corrupt") as info:
        lg.load("lin@1")
    assert str(v.digest) in info.value.diagnostics()
    assert lg.audit_log()[-1].type == EventType.ARTIFACT_REFUSED.value


def test_bad_input_changes_nothing(lg: Lockgate) -> None:
    with pytest.raises(InvalidInputError):
        lg.register(linear_onnx(), name="../evil")
    with pytest.raises(InvalidInputError):
        lg.register(linear_onnx(), name="ok", metrics={"loss": float("nan")})
    assert lg.meta.list_models() == []
    assert lg.audit_log() == []


def test_refs_resolve_by_number_latest_stage_and_alias(lg: Lockgate) -> None:
    for seed in range(3):
        lg.register(linear_onnx(seed=seed), name="lin")
    assert lg.get("lin").number == 3
    assert lg.get("lin@2").number == 2
    assert lg.get("lin@prototype").number == 3
    lg.set_alias("lin", "best", 1)
    assert lg.get("lin@best").number == 1
    assert [r.type for r in lg.audit_log()][-1] == EventType.ALIAS_SET.value
    for bad in ("lin@9", "lin@production", "lin@nope", "other"):
        with pytest.raises(NotFoundError):
            lg.get(bad)
    with pytest.raises(InvalidInputError):
        lg.set_alias("lin", "production", 1)
    with pytest.raises(NotFoundError):
        lg.set_alias("lin", "best", 7)
    lg.set_alias("lin", "best", None)
    assert lg.aliases("lin") == {}


_WORKER = """
import sys, onnx
from lockgate.api.facade import Lockgate
model = onnx.load(sys.argv[2])
with Lockgate.open(sys.argv[1]) as lg:
    v = lg.register(model, name="shared", description=sys.argv[3])
print(v.number)
"""


def test_eight_concurrent_registrations_get_distinct_numbers(home: Path, tmp_path: Path) -> None:
    model_path = tmp_path / "lin.onnx"
    onnx.save(linear_onnx(), model_path)
    Lockgate.open(home).close()
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(home), str(model_path), f"w{i}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for i in range(8)
    ]
    numbers = []
    for p in procs:
        out, errout = p.communicate(timeout=300)
        assert p.returncode == 0, errout
        numbers.append(int(out.strip().splitlines()[-1]))
    assert sorted(numbers) == list(range(1, 9))
    with Lockgate.open(home) as lg:
        rows = lg.versions("shared")
        assert sorted(v.description for v in rows) == [f"w{i}" for i in range(8)]
        report = lg.audit_verify()
        assert report.ok
        assert report.count == 8
        assert json.dumps([r.version for r in lg.audit_log()])
