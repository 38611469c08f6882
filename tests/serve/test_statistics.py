"""Triton's statistics extension on real `lockgate serve` processes: the counts match the
requests sent (rows as inferences, model runs as executions, failures apart), per batch size,
with and without dynamic batching; unknown models and versions are 404; GET /v2 names the
extensions."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_process import call, infer_doc, register, wait_until

from lockgate.api.facade import Lockgate
from servers import started_server

pytestmark = pytest.mark.slow

_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


def _ready(port: int) -> None:
    wait_until(lambda: call(port, "GET", "/v2/health/ready")[0] == 200, "ready")


def _stat(port: int, path: str = "/v2/models/m/stats") -> dict[str, Any]:
    status, doc = call(port, "GET", path)
    assert status == 200, doc
    (stat,) = doc["model_stats"]
    return dict(stat)


def test_counts_match_the_requests_sent_one_run_per_request(
        home: Path, tmp_path: Path) -> None:
    register(home, tmp_path)
    before_ms = int(time.time() * 1000)
    with started_server(home, "m@1") as port:
        _ready(port)
        fresh = _stat(port)
        assert fresh["inference_count"] == 0
        assert fresh["last_inference"] == 0
        for _ in range(3):
            assert call(port, "POST", "/v2/models/m/infer", infer_doc())[0] == 200
        assert call(port, "POST", "/v2/models/m/versions/1/infer", infer_doc(2))[0] == 200
        bad = {"inputs": [{"name": "nope", "shape": [1, 4], "datatype": "FP32",
                           "data": [1.0] * 4}]}
        assert call(port, "POST", "/v2/models/m/infer", bad)[0] == 400
        stat = _stat(port)
        assert _stat(port, "/v2/models/m/versions/1/stats") == stat
        status, every = call(port, "GET", "/v2/models/stats")
    assert status == 200
    assert every == {"model_stats": [stat]}
    assert (stat["name"], stat["version"]) == ("m", "1")
    assert stat["inference_count"] == 5  # rows: 3 x 1 + 2
    assert stat["execution_count"] == 4
    s = stat["inference_stats"]
    assert s["success"]["count"] == 4
    assert s["fail"]["count"] == 1
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert s[key]["count"] == 4, key
    assert all(s[k]["ns"] > 0 for k in ("success", "compute_infer"))
    assert set(s) >= set(_DURATIONS)
    assert [(b["batch_size"], b["compute_infer"]["count"]) for b in stat["batch_stats"]] \
        == [(1, 3), (2, 1)]
    assert stat["last_inference"] >= before_ms


def test_batched_requests_share_one_execution(home: Path, tmp_path: Path) -> None:
    register(home, tmp_path)
    with Lockgate.open(home) as lg:
        lg.promote("m@1", "production")
        lg.deploy("m@1")
        # four rows fill a batch at once; the long delay only ever makes them wait for each other
        lg.set_batching("m", {"max_batch_size": 4, "max_queue_delay_us": 30_000_000})
    with started_server(home) as port:
        _ready(port)
        answers: list[int] = []

        def client() -> None:
            answers.append(call(port, "POST", "/v2/models/m/infer", infer_doc())[0])

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stat = _stat(port)
    assert answers == [200] * 4
    assert stat["inference_count"] == 4
    assert stat["execution_count"] == 1
    assert stat["inference_stats"]["success"]["count"] == 4
    (batch,) = stat["batch_stats"]
    assert batch["batch_size"] == 4
    assert batch["compute_infer"]["count"] == 1


@pytest.mark.parametrize("layer", ["lockgate", "uvicorn"])
def test_unknown_models_and_versions_are_404_and_v2_names_the_extensions(
        home: Path, tmp_path: Path, layer: str) -> None:
    register(home, tmp_path)
    with started_server(home, "m@1", "--http", layer) as port:
        _ready(port)
        assert call(port, "POST", "/v2/models/m/infer", infer_doc(3))[0] == 200
        assert _stat(port)["inference_count"] == 3
        assert call(port, "POST", "/v2/repository/models/m/unload") == (200, None)
        assert call(port, "GET", "/v2/models/m/stats")[0] == 404
        assert call(port, "POST", "/v2/repository/models/m/load") == (200, None)
        status, doc = call(port, "GET", "/v2/models/zz/stats")
        assert status == 404
        assert "unknown model 'zz'" in doc["error"]
        assert call(port, "GET", "/v2/models/m/versions/9/stats")[0] == 404
        status, meta = call(port, "GET", "/v2")
    assert status == 200
    assert meta["extensions"] == ["binary_tensor_data", "statistics", "model_repository"]


@pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None,
                    reason="tritonclient is not installed")
def test_the_stock_tritonclient_reads_statistics_and_drives_the_repository(
        home: Path, tmp_path: Path) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    register(home, tmp_path)
    with Lockgate.open(home) as lg:
        lg.promote("m@1", "production")
        lg.deploy("m@1")
        lg.set_batching("m", {"max_batch_size": 8, "max_queue_delay_us": 1_000_000})
    with started_server(home) as port:
        _ready(port)
        client = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
        try:
            x = httpclient.InferInput("input", [2, 4], "FP32")
            x.set_data_from_numpy(np.ones((2, 4), np.float32))
            assert client.infer("m", [x], priority=1).as_numpy("output").shape == (2, 3)
            with pytest.raises(InferenceServerException, match="Request timeout expired"):
                client.infer("m", [x], timeout=1000)  # µs: far less than the batch delay
            (stat,) = client.get_inference_statistics("m")["model_stats"]
            assert stat["inference_count"] == 2
            assert stat["execution_count"] == 1
            assert stat["inference_stats"]["fail"]["count"] == 1
            index = client.get_model_repository_index()
            assert [(e["name"], e["state"]) for e in index] == [("m", "READY")]
            client.unload_model("m")
            assert not client.is_model_ready("m")
            client.load_model("m")
            wait_until(lambda: client.is_model_ready("m"), "m ready again")
        finally:
            client.close()
