"""Dynamic batching: concurrent requests merge, outputs go back to the right callers, requests
of other shapes never merge, a full queue answers 503, a deadline drops a request; and the same
through a real server with batching set on the deployment."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lockgate.api.facade import Lockgate
from lockgate.errors import ServeError
from lockgate.runtime.predictor import Predictor
from lockgate.serve.batching import Batcher, BatchingConfig
from onnx_models import linear_onnx


def _rowsum() -> Predictor:
    """y[b] = sum(x[b, :]) for any row width: requests of different widths cannot merge."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)], "rowsum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return Predictor(model.SerializeToString())


def test_concurrent_requests_merge_and_split_back_in_order() -> None:
    batcher = Batcher(_rowsum(), BatchingConfig(max_batch_size=16, max_queue_delay_us=50_000))

    async def main() -> list[tuple[dict[str, np.ndarray], int]]:
        jobs = []
        for i in range(12):
            width = 3 if i % 2 else 5
            x = np.full((1 + i % 2, width), float(i), np.float32)
            jobs.append(batcher.submit({"x": x}, None))
        return await asyncio.gather(*jobs)

    try:
        results = asyncio.run(main())
    finally:
        batcher.stop()
    for i, (out, size) in enumerate(results):
        width, rows = (3, 2) if i % 2 else (5, 1)
        np.testing.assert_array_equal(out["y"], np.full(rows, float(i) * width, np.float32))
        assert size > rows  # merged with others of its shape
    sizes = Counter(size for _, size in results)
    # six 2-row requests of width 3 (12 rows) and six 1-row requests of width 5 (6 rows)
    assert sizes == {12: 6, 6: 6}


def test_full_queue_and_deadline_answer_503() -> None:
    batcher = Batcher(_rowsum(), BatchingConfig(max_batch_size=64, max_queue_delay_us=200_000,
                                                max_queue_size=2))

    async def main() -> list[object]:
        x = np.ones((1, 3), np.float32)
        return await asyncio.gather(*[batcher.submit({"x": x}, None) for _ in range(6)],
                                    return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        batcher.stop()
    refused = [r for r in results if isinstance(r, ServeError)]
    assert refused
    assert all("queue is full" in r.message and r.http_status == 503 for r in refused)
    slow = Batcher(_rowsum(), BatchingConfig(max_batch_size=64, max_queue_delay_us=300_000,
                                             timeout_ms=50))
    try:
        with pytest.raises(ServeError, match="waited over 50 ms"):
            asyncio.run(slow.submit({"x": np.ones((1, 3), np.float32)}, None))
    finally:
        slow.stop()


@pytest.mark.slow
def test_batching_on_a_deployment_through_a_real_server(home: Path, tmp_path: Path) -> None:
    from test_deployments import _server

    (home / "lockgate.toml").write_text('[gates]\n"*" = ["seeds_recorded"]\n')
    model = linear_onnx(seed=3)
    onnx.save(model, tmp_path / "m.onnx")
    with Lockgate.open(home) as lg:
        lg.register(str(tmp_path / "m.onnx"), name="m", seed=1)
        lg.promote("m@1", "production")
        lg.deploy("m@1")
        lg.set_batching("m", {"max_batch_size": 32, "max_queue_delay_us": 20_000})
        reference = lg.load("m@1")
    errors: list[str] = []

    with _server(home) as (_, port):
        def client(i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for k in range(20):
                x = np.full((1, 4), float(i * 100 + k), np.float32)
                body = json.dumps({"inputs": [{"name": "input", "shape": [1, 4],
                                               "datatype": "FP32",
                                               "data": x.ravel().tolist()}]})
                conn.request("POST", "/v2/models/m/infer", body=body)
                r = conn.getresponse()
                doc = json.loads(r.read())
                want = reference({"input": x})
                got = np.asarray(doc["outputs"][0]["data"], np.float32)
                if r.status != 200 or not np.allclose(got, next(iter(want.values())).ravel(),
                                                      rtol=1e-5):
                    errors.append(f"{r.status} {doc}")
            conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
    assert errors == []
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    lv = (("model", "m"), ("version", "1"))
    count = samples[("lockgate_batch_size_count", lv)]
    total = samples[("lockgate_batch_size_sum", lv)]
    assert count == 320
    assert total / count > 1.0  # requests shared executions
    assert samples[("lockgate_executions_total", lv)] < 320
