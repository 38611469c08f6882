"""Per-version inference statistics in the shape of Triton's statistics extension.

    GET /v2/models/stats
    GET /v2/models/{model}/stats
    GET /v2/models/{model}/versions/{version}/stats

answer ``{"model_stats": [...]}``, one entry per served version (see :meth:`ModelStats.
snapshot`). The counters are plain integers (nanoseconds, counts) updated on the event loop
thread where the request metrics are, with no lock; a snapshot reads them as they are.

What is counted:

* ``inference_count``: rows answered successfully (a request of 8 rows counts 8);
* ``execution_count``: model runs (one per request without batching; one per batch with it);
* ``inference_stats.success`` / ``fail``: requests answered, and their whole duration;
* ``queue``: time waiting for a worker thread or in the batch queue;
* ``compute_input`` / ``compute_infer`` / ``compute_output``: decoding the request, running the
  model (a batched request counts its batch's run), encoding the answer;
* ``batch_stats``: per batch size, the executions of that size and their durations.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

__all__ = ["ModelStats", "Phases", "Statistics"]

Phases = tuple[float, float, float, float]
"""Seconds one request spent queued, decoding, running the model and encoding."""

_NS = 1_000_000_000


def _pair(count: int, seconds: float) -> dict[str, int]:
    return {"count": count, "ns": int(seconds * _NS)}


class ModelStats:
    """One version's counters since it was first used on this server. Durations are kept as
    float seconds (cheapest to add) and given in integer nanoseconds by :meth:`snapshot`."""

    __slots__ = ("_batches", "execution_count", "fail_count", "fail_s", "infer_s",
                 "inference_count", "input_s", "last_inference", "name", "output_s",
                 "queue_s", "success_count", "success_s", "version")

    def __init__(self, name: str, version: str) -> None:
        self.name, self.version = name, version
        self.last_inference = 0.0
        self.inference_count = 0
        self.execution_count = 0
        self.success_count = self.fail_count = 0
        self.success_s = self.fail_s = 0.0
        self.queue_s = self.input_s = self.infer_s = self.output_s = 0.0
        self._batches: dict[int, list[float]] = {}

    def succeeded(self, rows: int, seconds: float, phases: Phases,
                  executed: int | None = None) -> None:
        """A request answered: its rows, whole duration and phases; with ``executed``, it also
        counts one model run of that many rows (see :meth:`executed`)."""
        queued, decoded, ran, encoded = phases
        self.last_inference = time.time()
        self.inference_count += rows
        self.success_count += 1
        self.success_s += seconds
        self.queue_s += queued
        self.input_s += decoded
        self.infer_s += ran
        self.output_s += encoded
        if executed is not None:
            self.executed(executed, phases)

    def failed(self, seconds: float) -> None:
        self.last_inference = time.time()
        self.fail_count += 1
        self.fail_s += seconds

    def executed(self, size: int, phases: Phases) -> None:
        """One model run of ``size`` rows (durations as measured by one of its requests)."""
        self.execution_count += 1
        entry = self._batches.get(size)
        if entry is None:
            entry = self._batches[size] = [0.0, 0.0, 0.0, 0.0]
        entry[0] += 1
        entry[1] += phases[1]
        entry[2] += phases[2]
        entry[3] += phases[3]

    def snapshot(self) -> dict[str, Any]:
        """Triton's ``$model_stat`` object for this version."""
        n = self.success_count
        batches = []
        for size, (count, decoded, ran, encoded) in sorted(dict(self._batches).items()):
            runs = int(count)
            batches.append({"batch_size": size, "compute_input": _pair(runs, decoded),
                            "compute_infer": _pair(runs, ran),
                            "compute_output": _pair(runs, encoded)})
        return {
            "name": self.name, "version": self.version,
            "last_inference": int(self.last_inference * 1000),
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": _pair(n, self.success_s),
                "fail": _pair(self.fail_count, self.fail_s),
                "queue": _pair(n, self.queue_s),
                "compute_input": _pair(n, self.input_s),
                "compute_infer": _pair(n, self.infer_s),
                "compute_output": _pair(n, self.output_s),
                "cache_hit": _pair(0, 0.0), "cache_miss": _pair(0, 0.0),
            },
            "batch_stats": batches,
        }


class Statistics:
    """Every version's :class:`ModelStats`, created on first use (the gRPC service's
    ModelStatistics reads the same :meth:`snapshot`)."""

    def __init__(self) -> None:
        self._by: dict[tuple[str, str], ModelStats] = {}

    def of(self, name: str, version: str) -> ModelStats:
        key = (name, version)
        found = self._by.get(key)
        if found is None:
            found = self._by[key] = ModelStats(name, version)
        return found

    def snapshot(self, versions: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """``{"model_stats": [...]}`` for these ``(name, version)`` pairs, in order; a version
        that has answered nothing yet shows zeros."""
        by = self._by
        return {"model_stats": [
            (by[key] if key in by else ModelStats(*key)).snapshot() for key in versions]}
