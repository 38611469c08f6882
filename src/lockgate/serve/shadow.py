"""Shadow traffic: requests answered by the stable version are mirrored, off the request path,
to the shadow version; its outputs are compared and never returned.

The queue is bounded: when the shadow falls behind, requests are dropped (and counted), never
delayed. Divergence is the max absolute difference over float outputs; for 2-D float outputs
(class scores) argmax agreement is counted too.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from lockgate.serve.metrics import ServerMetrics
from lockgate.serve.slots import Slot

__all__ = ["ShadowMirror", "compare_outputs"]

log = logging.getLogger("lockgate.serve")


def compare_outputs(primary: Mapping[str, np.ndarray],
                    shadow: Mapping[str, np.ndarray]) -> tuple[float, bool]:
    """(max abs difference over float outputs, whether every 2-D float output's argmax
    agrees); outputs missing or of another shape count as infinitely divergent."""
    worst = 0.0
    agreed = True
    for name, a in primary.items():
        b = shadow.get(name)
        if b is None or np.shape(a) != np.shape(b):
            return float("inf"), False
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind in "fc":
            if a.size:
                worst = max(worst, float(np.max(np.abs(a.astype(np.float64)
                                                       - b.astype(np.float64)))))
            if a.ndim == 2 and a.shape[1] > 1:
                agreed = agreed and bool(np.array_equal(a.argmax(1), b.argmax(1)))
        elif not np.array_equal(a, b):
            agreed = False
            worst = max(worst, 1.0)
    return worst, agreed


class ShadowMirror:
    def __init__(self, metrics: ServerMetrics, max_queue: int = 256) -> None:
        self._metrics = metrics
        self._queue: queue.Queue[tuple[Slot, dict[str, Any], dict[str, Any]] | None] = \
            queue.Queue(max_queue)
        self._thread = threading.Thread(target=self._run, name="lockgate-shadow", daemon=True)
        self._thread.start()
        self.dropped = 0

    def offer(self, shadow: Slot, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait((shadow, inputs, outputs))
        except queue.Full:
            self.dropped += 1
            self._metrics.shadow_dropped.labels(shadow.spec.name, shadow.version_text).inc()

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            slot, inputs, primary = job
            try:
                got = slot.predictor().run(inputs, None)
                divergence, agreed = compare_outputs(primary, got)
            except Exception as exc:  # the shadow failing is data, not an outage
                log.debug("shadow %s failed: %s", slot.label, exc)
                divergence, agreed = float("inf"), False
            slot.window.record_shadow(divergence, agreed)
            labels = (slot.spec.name, slot.version_text)
            self._metrics.shadow_divergence.labels(*labels).set(divergence)
            self._metrics.shadow_requests.labels(*labels).inc()
            if not agreed:
                self._metrics.shadow_disagreements.labels(*labels).inc()
