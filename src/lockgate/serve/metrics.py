"""Prometheus metrics for the server, labelled by ``model`` and ``version`` only.

    lockgate_requests_total                  infer requests received
    lockgate_request_failures_total          failed requests, by ``reason``: the client's
                                             (bad_request, not_found, too_large), the
                                             server's load (overloaded: the decode budget)
                                             or the version's own (unavailable, internal)
    lockgate_inferences_total                rows inferred (a batch of 8 counts 8)
    lockgate_executions_total                model executions
    lockgate_pending_requests                requests received and not yet answered
    lockgate_request_duration_seconds        whole request, body read to response
    lockgate_queue_duration_seconds          waiting for a worker
    lockgate_compute_duration_seconds        decode, run and encode on the worker
    lockgate_batch_size                      rows per execution
    lockgate_shadow_divergence               max abs difference of the shadow's outputs
    lockgate_shadow_requests_total           requests mirrored to the shadow and answered
    lockgate_shadow_disagreements_total      mirrored answers whose argmax disagreed
    lockgate_shadow_dropped_total            requests not mirrored (queue full)
    lockgate_model_info                      1 per loaded version, with its ``digest``
    lockgate_model_providers                 1 per execution ``provider`` a loaded version's
                                             session uses
    lockgate_provider_fallback_total         loads served on the CPU because a requested
                                             ``provider`` was not available (fallback "cpu")
    lockgate_feature_drift_score             latest monitor score per ``feature`` and ``method``
    lockgate_feature_drifted                 1 when that feature drifted in the latest window
    lockgate_dataset_drift_share             share of drifted features in the latest window

Each app has its own registry, so several apps in one process (tests) do not collide. With
``lockgate serve --workers N`` every worker's ``/metrics`` reports the sum across workers
(counters and histograms summed, pending requests summed, the other gauges their largest value:
see :mod:`lockgate.serve.cluster_metrics`).

The per-request series (requests, inferences, executions, pending and the four histograms) are
plain numbers updated on the event loop thread, with no lock, and read by a collector when
``/metrics`` is scraped: prometheus-client's own metric objects cost ~11 µs a request here, a
few percent of a small model's whole request. The other series are prometheus-client's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["CONTENT_TYPE", "ModelMetrics", "ServerMetrics", "failure_reason"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0)
_LABELS = ("model", "version")


_REQUESTS = ("lockgate_requests", "Infer requests received.")
_INFERENCES = ("lockgate_inferences", "Rows inferred.")
_EXECUTIONS = ("lockgate_executions", "Model executions.")
_PENDING = ("lockgate_pending_requests", "Requests not yet answered.")
_HISTOGRAMS = (
    ("request_seconds", "lockgate_request_duration_seconds", "Infer request duration."),
    ("queue_seconds", "lockgate_queue_duration_seconds", "Time waiting for a worker."),
    ("compute_seconds", "lockgate_compute_duration_seconds", "Decode, run and encode time."),
    ("batch_size", "lockgate_batch_size", "Rows per execution."),
)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Tally:
    """A counter or gauge value: ``inc``, ``dec``."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class Buckets:
    """A histogram: per-bucket counts (``le`` upper bounds, then +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append((floatToGoString(bound), float(total)))  # type: ignore[no-untyped-call]
        return out


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[str, str], ModelMetrics] = {}
        r.register(_RequestSeries(self._children))
        self.failures = Counter("lockgate_request_failures", "Infer requests that failed.",
                                (*_LABELS, "reason"), registry=r)
        self.shadow_divergence = Gauge("lockgate_shadow_divergence",
                                       "Max abs difference of the shadow version's outputs.",
                                       _LABELS, registry=r)
        self.shadow_requests = Counter("lockgate_shadow_requests",
                                       "Requests mirrored to and answered by the shadow.",
                                       _LABELS, registry=r)
        self.shadow_disagreements = Counter("lockgate_shadow_disagreements",
                                            "Mirrored requests whose answer disagreed.",
                                            _LABELS, registry=r)
        self.shadow_dropped = Counter("lockgate_shadow_dropped",
                                      "Requests not mirrored because the queue was full.",
                                      _LABELS, registry=r)
        self.model_info = Gauge("lockgate_model_info", "A loaded model version.",
                                (*_LABELS, "digest"), registry=r)
        self.feature_drift = Gauge("lockgate_feature_drift_score",
                                   "Latest drift score of a feature (see method).",
                                   (*_LABELS, "feature", "method"), registry=r)
        self.feature_drifted = Gauge("lockgate_feature_drifted",
                                     "1 when the feature drifted in the latest monitor window.",
                                     (*_LABELS, "feature"), registry=r)
        self.dataset_drift_share = Gauge("lockgate_dataset_drift_share",
                                         "Share of drifted features in the latest window.",
                                         _LABELS, registry=r)
        self.model_providers = Gauge("lockgate_model_providers",
                                     "1 for each execution provider a loaded version uses.",
                                     (*_LABELS, "provider"), registry=r)
        self.provider_fallback = Counter(
            "lockgate_provider_fallback",
            "Loads served on the CPU because a requested execution provider was missing.",
            (*_LABELS, "provider"), registry=r)
        self._providers: dict[tuple[str, str], list[str]] = {}
        self.merged: Callable[[bytes], bytes] | None = None

    def placed(self, model: str, version: str, placement: Mapping[str, Any] | None) -> None:
        """A version loaded with ``placement`` (``Placement.to_dict()``): its providers in
        use, and a fallback counted per missing provider; None: it was dropped."""
        for provider in self._providers.pop((model, version), []):
            self.model_providers.remove(model, version, provider)
        if placement is None:
            return
        used = [str(p) for p in placement.get("used", ())]
        for provider in used:
            self.model_providers.labels(model, version, provider).set(1)
        self._providers[(model, version)] = used
        if placement.get("fell_back"):
            for provider in placement.get("missing", ()):
                self.provider_fallback.labels(model, version, str(provider)).inc()

    def for_model(self, model: str, version: str) -> ModelMetrics:
        """One version's series, created on first use."""
        key = (model, version)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = ModelMetrics(self, model, version)
        return found

    def render(self) -> bytes:
        """The exposition: this process's series, or with several workers (``merged`` set by
        :mod:`lockgate.serve.cluster`) the sum across them."""
        own = generate_latest(self.registry)
        return own if self.merged is None else self.merged(own)

    def render_own(self) -> bytes:
        """This process's series only."""
        return generate_latest(self.registry)


class ModelMetrics:
    """One model version's per-request series. Update them from the event loop thread only."""

    __slots__ = ("_labels", "_m", "batch_size", "compute_seconds", "executions", "inferences",
                 "pending", "queue_seconds", "request_seconds", "requests")

    def __init__(self, m: ServerMetrics, model: str, version: str) -> None:
        self._m, self._labels = m, (model, version)
        self.requests = Tally()
        self.inferences = Tally()
        self.executions = Tally()
        self.pending = Tally()
        self.request_seconds = Buckets(_LATENCY)
        self.queue_seconds = Buckets(_LATENCY)
        self.compute_seconds = Buckets(_LATENCY)
        self.batch_size = Buckets(_BATCH)

    def failed(self, status: int) -> None:
        self._m.failures.labels(*self._labels, failure_reason(status)).inc()

    def arrived(self) -> None:
        """A request received and pending (``requests`` and ``pending`` up by one)."""
        self.requests.value += 1.0
        self.pending.value += 1.0

    def answered(self, elapsed: float, queued: float, computed: float, rows: float,
                 executions: float, size: int) -> None:
        """A request answered: what ``pending.dec()``, ``observe`` of the four histograms and
        ``inc`` of ``inferences`` and ``executions`` do, in one call."""
        self.pending.value -= 1.0
        hist = self.request_seconds
        hist.counts[bisect_left(hist.bounds, elapsed)] += 1
        hist.sum += elapsed
        hist = self.queue_seconds
        hist.counts[bisect_left(hist.bounds, queued)] += 1
        hist.sum += queued
        hist = self.compute_seconds
        hist.counts[bisect_left(hist.bounds, computed)] += 1
        hist.sum += computed
        hist = self.batch_size
        hist.counts[bisect_left(hist.bounds, size)] += 1
        hist.sum += size
        self.inferences.value += rows
        self.executions.value += executions


class _RequestSeries(Collector):
    """Exposes every version's per-request series at scrape time."""

    def __init__(self, children: dict[tuple[str, str], ModelMetrics]) -> None:
        self._children = children

    def describe(self) -> list[Metric]:
        return []  # families are only known at collect time: nothing to check at register

    def collect(self) -> Iterator[Metric]:
        children = list(self._children.items())
        counters = ((_REQUESTS, "requests"), (_INFERENCES, "inferences"),
                    (_EXECUTIONS, "executions"))
        for (name, doc), attr in counters:
            family = CounterMetricFamily(name, doc, labels=_LABELS)
            for labels, m in children:
                family.add_metric(labels, getattr(m, attr).value)
            yield family
        pending = GaugeMetricFamily(*_PENDING, labels=_LABELS)
        for labels, m in children:
            pending.add_metric(labels, m.pending.value)
        yield pending
        for attr, name, doc in _HISTOGRAMS:
            histogram = HistogramMetricFamily(name, doc, labels=_LABELS)
            for labels, m in children:
                series: Buckets = getattr(m, attr)
                histogram.add_metric(labels, series.cumulative(), series.sum)
            yield histogram


def failure_reason(status: int) -> str:
    """The ``reason`` label of a failed request's status (429 stands for a decode budget
    refusal, answered 503 with Retry-After)."""
    return {400: "bad_request", 404: "not_found", 413: "too_large", 429: "overloaded",
            503: "unavailable"}.get(status, "internal" if status >= 500 else "bad_request")
