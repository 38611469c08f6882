"""Execution providers on real `lockgate serve` processes: a version served on Azure + CPU (a
real non-CPU provider of the CPU wheel) says so in its metadata and on /metrics and answers,
batching included; CUDA on a wheel without it is refused (never ready, audited with the wheel
to install) unless CPU fallback is allowed, which is counted and shown; a deployment whose
providers change is loaded again on the new set."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lockgate.api.facade import Lockgate
from lockgate.config.providers import ProviderSet, parse_providers_text
from onnx_models import linear_onnx
from servers import http_get

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("AzureExecutionProvider" not in ort.get_available_providers(),
                       reason="this onnxruntime wheel has no AzureExecutionProvider"),
]

AZURE, CPU, CUDA = "AzureExecutionProvider", "CPUExecutionProvider", "CUDAExecutionProvider"
NO_CUDA = pytest.mark.skipif(CUDA in ort.get_available_providers(),
                             reason="this onnxruntime wheel carries CUDA: nothing is missing")


def _azure_cpu(fallback: str = "none") -> ProviderSet:
    return ProviderSet(parse_providers_text("azure,cpu", "test"), fallback)


@contextmanager
def _serve(home: Path, *args: str) -> Iterator[tuple[int, list[str]]]:
    """`lockgate serve --port 0 --poll 0.1 ARGS`: its port once it listens (ready or not) and
    the lines it writes to stderr so far."""
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockgate", "--home", str(home), "serve", "--port", "0",
         "--poll", "0.1", *args], stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr),  # type: ignore[arg-type]
                              daemon=True)
    try:
        assert proc.stderr is not None
        port = None
        while port is None:
            line = proc.stderr.readline()
            assert line, "server exited: " + "".join(lines)
            lines.append(line)
            if m := re.search(r"on http://127\.0\.0\.1:(\d+)/v2", line):
                port = int(m.group(1))
        reader.start()
        yield port, lines
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        if reader.is_alive():
            reader.join(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def _until(what: str, check: Callable[[], Any], seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return found


def _ready(port: int) -> bool:
    return http_get(port, "/v2/health/ready")[0] == 200


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _labels(provider: str) -> tuple[tuple[str, str], ...]:
    return (("model", "m"), ("provider", provider), ("version", "1"))


def _infer(port: int, x: np.ndarray) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]})
    conn.request("POST", "/v2/models/m/infer", body=body)
    r = conn.getresponse()
    doc = json.loads(r.read())
    conn.close()
    return r.status, doc


def _register(home: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """m@1 in production; the reference predictor (CPU). A provider set other than the CPU
    alone may be served without a recorded infra validation on it."""
    monkeypatch.setenv("LOCKGATE_UNVALIDATED_PROVIDERS", "allow")
    (home / "lockgate.toml").write_text('[gates]\n"*" = ["seeds_recorded"]\n')
    onnx.save(linear_onnx(seed=3), tmp / "m.onnx")
    with Lockgate.open(home) as lg:
        lg.register(str(tmp / "m.onnx"), name="m", seed=1)
        lg.promote("m@1", "production")
        return lg.load("m@1")


def _audited(home: Path, kind: str) -> list[dict[str, Any]]:
    with Lockgate.open(home) as lg:
        return [r.payload for r in lg.audit_log() if r.type == kind]


def test_azure_and_cpu_serve_say_so_and_answer(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _register(home, tmp_path, monkeypatch)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    with _serve(home, "m@1", "--providers", "azure,cpu") as (port, _):
        _until("never ready", lambda: _ready(port))
        status, meta = http_get(port, "/v2/models/m")
        assert status == 200
        placement = meta["parameters"]["lockgate_providers"]
        assert placement["requested"] == [AZURE, CPU]
        assert placement["used"] == [AZURE, CPU]
        assert placement["fell_back"] is False
        assert http_get(port, "/v2/models/m/versions/1")[1]["parameters"][
            "lockgate_providers"] == placement
        status, doc = _infer(port, x)
        assert status == 200, doc
        want = next(iter(reference({"input": x}).values()))
        np.testing.assert_allclose(np.asarray(doc["outputs"][0]["data"], np.float32),
                                   want.ravel(), rtol=1e-5)
        samples = _metrics(port)
    assert samples[("lockgate_model_providers", _labels(AZURE))] == 1.0
    assert samples[("lockgate_model_providers", _labels(CPU))] == 1.0
    assert not any(name == "lockgate_provider_fallback_total" for name, _ in samples)


@NO_CUDA
def test_a_missing_provider_is_refused_and_audited_with_the_wheel(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _register(home, tmp_path, monkeypatch)
    with Lockgate.open(home) as lg:
        lg.rollout.deploy("m@1", providers=ProviderSet(parse_providers_text("cuda,cpu", "t")))
    with _serve(home) as (port, _):
        (failed,) = _until("deploy.failed was never audited",
                           lambda: _audited(home, "deploy.failed"))
        assert (failed["model"], failed["version"]) == ("m", 1)
        assert "cuda" in failed["error"]
        assert "onnxruntime-gpu" in failed["error"]
        assert http_get(port, "/v2/health/ready")[0] == 503
        assert http_get(port, "/v2/models/m/versions/1/ready")[0] == 503
        status, doc = _infer(port, np.zeros((1, 4), np.float32))
        assert status == 503
        assert set(doc) == {"error"}
    (load_failed, *_) = _audited(home, "model.load_failed")
    assert "onnxruntime-gpu" in load_failed["error"]


@NO_CUDA
def test_cpu_fallback_serves_counts_and_says_so(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _register(home, tmp_path, monkeypatch)
    x = np.ones((1, 4), np.float32)
    with _serve(home, "--providers", "cuda,cpu", "--provider-fallback", "cpu") as (port, lines):
        _until("never ready", lambda: _ready(port))
        meta = http_get(port, "/v2/models/m")[1]
        placement = meta["parameters"]["lockgate_providers"]
        assert placement["requested"] == [CUDA, CPU]
        assert placement["used"] == [CPU]
        assert placement["fell_back"] is True
        assert placement["missing"] == [CUDA]
        status, doc = _infer(port, x)
        assert status == 200
        want = next(iter(reference({"input": x}).values()))
        np.testing.assert_allclose(doc["outputs"][0]["data"], want.ravel(), rtol=1e-5)
        samples = _metrics(port)
        _until("no warning in the log",
               lambda: any("serving on the CPU, not on" in line for line in lines))
    assert samples[("lockgate_provider_fallback_total", _labels(CUDA))] == 1.0
    assert samples[("lockgate_model_providers", _labels(CPU))] == 1.0
    assert ("lockgate_model_providers", _labels(CUDA)) not in samples
    assert _audited(home, "deploy.failed") == []


def test_changed_providers_load_the_version_again_without_failed_requests(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _register(home, tmp_path, monkeypatch)
    with Lockgate.open(home) as lg:
        lg.deploy("m@1")
    x = np.ones((1, 4), np.float32)
    with _serve(home) as (port, _):
        _until("never ready", lambda: _ready(port))
        used = http_get(port, "/v2/models/m")[1]["parameters"]["lockgate_providers"]["used"]
        assert used == [CPU]
        with Lockgate.open(home) as lg:
            d = lg.rollout.set_providers("m", _azure_cpu())
        assert d.providers == _azure_cpu().to_dict()
        statuses = set()

        def on_azure() -> bool:
            statuses.add(_infer(port, x)[0])  # unversioned requests: the old slot meanwhile
            meta = http_get(port, "/v2/models/m")[1]
            return AZURE in meta.get("parameters", {}).get("lockgate_providers", {}).get(
                "used", [])

        _until("the version was never loaded again on Azure", on_azure)
        assert statuses == {200}
        samples = _metrics(port)
        assert samples[("lockgate_model_providers", _labels(AZURE))] == 1.0
        with Lockgate.open(home) as lg:
            lg.rollout.set_providers("m", None)  # back to the server's setting: the CPU
        _until("never back on the CPU alone", lambda: http_get(port, "/v2/models/m")[1].get(
            "parameters", {}).get("lockgate_providers", {}).get("used") == [CPU])
        assert ("lockgate_model_providers", _labels(AZURE)) not in _metrics(port)
    switches = _audited(home, "deploy.switched")
    assert len(switches) == 2


def test_batching_on_azure_and_cpu(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _register(home, tmp_path, monkeypatch)
    with Lockgate.open(home) as lg:
        lg.rollout.deploy("m@1", providers=_azure_cpu())
        lg.set_batching("m", {"max_batch_size": 32, "max_queue_delay_us": 20_000})
    errors: list[str] = []
    with _serve(home) as (port, _):
        _until("never ready", lambda: _ready(port))

        def client(i: int) -> None:
            for k in range(10):
                x = np.full((1, 4), float(i * 100 + k), np.float32)
                status, doc = _infer(port, x)
                want = next(iter(reference({"input": x}).values()))
                if status != 200 or not np.allclose(doc["outputs"][0]["data"], want.ravel(),
                                                    rtol=1e-5):
                    errors.append(f"{status} {doc}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        meta = http_get(port, "/v2/models/m")[1]
        samples = _metrics(port)
    assert errors == []
    assert meta["parameters"]["lockgate_providers"]["used"] == [AZURE, CPU]
    lv = (("model", "m"), ("version", "1"))
    assert samples[("lockgate_batch_size_count", lv)] == 120
    assert samples[("lockgate_model_providers", _labels(AZURE))] == 1.0


@NO_CUDA
def test_a_new_set_that_cannot_load_leaves_the_version_serving_on_the_old_one(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _register(home, tmp_path, monkeypatch)
    with Lockgate.open(home) as lg:
        lg.rollout.deploy("m@1", providers=_azure_cpu())
    x = np.ones((1, 4), np.float32)
    with _serve(home) as (port, _):
        _until("never ready", lambda: _ready(port))
        with Lockgate.open(home) as lg:
            lg.rollout.set_providers("m", ProviderSet(parse_providers_text("cuda,cpu", "t")))
        (failed,) = _until("deploy.failed was never audited",
                           lambda: _audited(home, "deploy.failed"))
        assert "onnxruntime-gpu" in failed["error"]
        assert _infer(port, x)[0] == 200  # the route keeps the version loaded on Azure + CPU
        assert _ready(port)
        assert _metrics(port)[("lockgate_model_providers", _labels(AZURE))] == 1.0
