"""Per-request ``priority`` and ``timeout`` (Triton's request parameters) in the dynamic
batcher: with the batcher's thread held inside a model run, queued requests are taken by
priority, then arrival; one whose timeout passed while queued is answered "Request timeout
expired" and never runs; and the same parameters through a real `lockgate serve` process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_process import call, infer_doc, register, wait_until

from lockgate.api.facade import Lockgate
from lockgate.errors import InvalidInputError
from lockgate.runtime.predictor import Predictor
from lockgate.serve.batching import Batcher, BatchingConfig, RequestTimeoutError, queue_parameters
from onnx_models import linear_onnx
from servers import started_server


class _Held(Predictor):
    """A real predictor whose runs wait for ``release`` and note the first input value."""

    def __init__(self) -> None:
        super().__init__(linear_onnx().SerializeToString())
        self.entered = threading.Event()
        self.release = threading.Event()
        self.ran: list[int] = []

    def run(self, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None
            ) -> dict[str, np.ndarray]:
        self.entered.set()
        self.release.wait()
        self.ran.append(int(inputs["input"][0, 0]))
        return super().run(inputs, outputs)


def _row(value: int) -> dict[str, np.ndarray]:
    return {"input": np.full((1, 4), float(value), np.float32)}


def test_priority_orders_the_queue_and_an_expired_request_never_runs() -> None:
    predictor = _Held()
    batcher = Batcher(predictor, BatchingConfig(max_batch_size=1, max_queue_delay_us=0))

    async def main() -> list[Any]:
        blocker = asyncio.ensure_future(batcher.submit_detailed(_row(0), None))
        await asyncio.to_thread(predictor.entered.wait)  # the batcher thread is held now
        queued = [asyncio.ensure_future(batcher.submit_detailed(_row(v), None, **kw))
                  for v, kw in [(1, {"priority": 3}), (2, {}), (3, {"priority": 2}),
                                (4, {"priority": 1}), (5, {"timeout_us": 1000})]]
        while batcher.queued < 5:
            await asyncio.sleep(0)
        expired_at = time.perf_counter() + 0.002
        while time.perf_counter() < expired_at:  # the 1 ms timeout has passed for sure
            await asyncio.sleep(0)
        predictor.release.set()
        return await asyncio.gather(blocker, *queued, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        batcher.stop()
    assert predictor.ran == [0, 2, 4, 3, 1]  # priority 1 (and the default) first, in order
    assert isinstance(results[5], RequestTimeoutError)
    assert str(results[5].message) == "Request timeout expired"
    assert results[5].http_status == 503
    assert all(isinstance(r, tuple) for r in results[:5])


def test_queue_parameters_are_checked() -> None:
    assert queue_parameters({}) == (0, None)
    assert queue_parameters({"priority": 2, "timeout": 500}) == (2, 500)
    assert queue_parameters({"timeout": 0}) == (0, None)
    for bad in ({"priority": -1}, {"priority": "high"}, {"timeout": 1.5}, {"timeout": True}):
        with pytest.raises(InvalidInputError):
            queue_parameters(bad)


@pytest.mark.slow
def test_a_timeout_passed_in_the_queue_answers_503_through_a_real_server(
        home: Path, tmp_path: Path) -> None:
    register(home, tmp_path)
    with Lockgate.open(home) as lg:
        lg.promote("m@1", "production")
        lg.deploy("m@1")
        # a lone request waits the whole delay for company: far past a 1 ms timeout
        lg.set_batching("m", {"max_batch_size": 8, "max_queue_delay_us": 1_000_000})
    with started_server(home) as port:
        wait_until(lambda: call(port, "GET", "/v2/health/ready")[0] == 200, "ready")
        status, doc = call(port, "POST", "/v2/models/m/infer", infer_doc(timeout=1000))
        assert status == 503
        assert "Request timeout expired" in doc["error"]
        status, doc = call(port, "POST", "/v2/models/m/infer", infer_doc(priority="high"))
        assert status == 400
        assert "priority" in doc["error"]
        assert call(port, "POST", "/v2/models/m/infer", infer_doc(priority=2))[0] == 200
        (stat,) = call(port, "GET", "/v2/models/m/stats")[1]["model_stats"]
    assert stat["inference_stats"]["fail"]["count"] == 2
    assert stat["inference_stats"]["success"]["count"] == 1
    assert stat["execution_count"] == 1
