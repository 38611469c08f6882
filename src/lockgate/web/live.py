"""Live figures for the deployment view, from a serving process's Prometheus metrics: per
version, requests, error rate, p50/p99 (interpolated from the histogram buckets, as PromQL's
histogram_quantile does), shadow divergence, and the request rate between two looks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["LiveMetrics", "figures"]


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """``buckets`` as (upper bound, cumulative count), sorted."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


_SERVER_REASONS = frozenset({"internal", "unavailable"})
"""Failure reasons (``lockgate_request_failures_total``) that are the version's own (5xx)."""


def figures(text: str, model: str) -> dict[str, dict[str, float]]:
    """Per version of ``model``: requests, errors and error_rate (the version's own failures,
    5xx), client_errors and client_error_rate (4xx, counted apart), p50, p99 (seconds) and
    divergence (when a shadow reports one)."""
    out: dict[str, dict[str, float]] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("model") != model:
                continue
            v = s.labels.get("version", "")
            row = out.setdefault(v, {"requests": 0.0, "errors": 0.0, "client_errors": 0.0})
            if s.name == "lockgate_requests_total":
                row["requests"] += s.value
            elif s.name == "lockgate_request_failures_total":
                own = s.labels.get("reason") in _SERVER_REASONS
                row["errors" if own else "client_errors"] += s.value
            elif s.name == "lockgate_request_duration_seconds_bucket":
                buckets.setdefault(v, []).append((float(s.labels["le"]), s.value))
            elif s.name == "lockgate_shadow_divergence":
                row["divergence"] = s.value
    for v, row in out.items():
        row["error_rate"] = row["errors"] / row["requests"] if row["requests"] else 0.0
        row["client_error_rate"] = (row["client_errors"] / row["requests"] if row["requests"]
                                    else 0.0)
        b = sorted(buckets.get(v, []))
        for q, key in ((0.5, "p50"), (0.99, "p99")):
            value = _quantile(q, b)
            if value is not None:
                row[key] = value
    return out


class LiveMetrics:
    """Scrapes ``source`` on demand; the request rate is the change since the previous look
    (at least a second earlier)."""

    def __init__(self, source: Callable[[], str]) -> None:
        self._source = source
        self._last: dict[str, tuple[float, dict[str, float]]] = {}

    def model(self, name: str) -> dict[str, dict[str, float]] | None:
        try:
            current = figures(self._source(), name)
        except Exception:  # the server is down or answers garbage: show no live figures
            return None
        now = time.monotonic()
        before = self._last.get(name)
        if before is not None and now - before[0] >= 1.0:
            for v, row in current.items():
                old = before[1].get(v)
                if old is not None:
                    row["rate"] = max(0.0, row["requests"] - old) / (now - before[0])
        if before is None or now - before[0] >= 1.0:
            self._last[name] = (now, {v: r["requests"] for v, r in current.items()})
        return current
