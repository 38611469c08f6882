"""Prometheus metrics for the server, labelled by ``model`` and ``version`` only.

    lockgate_requests_total                  infer requests received
    lockgate_request_failures_total          failed requests, by ``reason`` (bad_request,
                                             not_found, unavailable, too_large, internal)
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
    lockgate_feature_drift_score             latest monitor score per ``feature`` and ``method``
    lockgate_feature_drifted                 1 when that feature drifted in the latest window
    lockgate_dataset_drift_share             share of drifted features in the latest window

Each app has its own registry, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "ModelMetrics", "ServerMetrics", "failure_reason"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0)
_LABELS = ("model", "version")


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("lockgate_requests", "Infer requests received.", _LABELS,
                                registry=r)
        self.failures = Counter("lockgate_request_failures", "Infer requests that failed.",
                                (*_LABELS, "reason"), registry=r)
        self.inferences = Counter("lockgate_inferences", "Rows inferred.", _LABELS, registry=r)
        self.executions = Counter("lockgate_executions", "Model executions.", _LABELS,
                                  registry=r)
        self.pending = Gauge("lockgate_pending_requests", "Requests not yet answered.",
                             _LABELS, registry=r)
        self.request_seconds = Histogram("lockgate_request_duration_seconds",
                                         "Infer request duration.", _LABELS, buckets=_LATENCY,
                                         registry=r)
        self.queue_seconds = Histogram("lockgate_queue_duration_seconds",
                                       "Time waiting for a worker.", _LABELS, buckets=_LATENCY,
                                       registry=r)
        self.compute_seconds = Histogram("lockgate_compute_duration_seconds",
                                         "Decode, run and encode time.", _LABELS,
                                         buckets=_LATENCY, registry=r)
        self.batch_size = Histogram("lockgate_batch_size", "Rows per execution.", _LABELS,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
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
        self._children: dict[tuple[str, str], ModelMetrics] = {}

    def for_model(self, model: str, version: str) -> ModelMetrics:
        """The per-version children, looked up once (labels() costs a lock and a dict walk)."""
        key = (model, version)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = ModelMetrics(self, model, version)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelMetrics:
    """One model version's metric children."""

    def __init__(self, m: ServerMetrics, model: str, version: str) -> None:
        self._m, self._labels = m, (model, version)
        self.requests = m.requests.labels(model, version)
        self.inferences = m.inferences.labels(model, version)
        self.executions = m.executions.labels(model, version)
        self.pending = m.pending.labels(model, version)
        self.request_seconds = m.request_seconds.labels(model, version)
        self.queue_seconds = m.queue_seconds.labels(model, version)
        self.compute_seconds = m.compute_seconds.labels(model, version)
        self.batch_size = m.batch_size.labels(model, version)

    def failed(self, status: int) -> None:
        self._m.failures.labels(*self._labels, failure_reason(status)).inc()

def failure_reason(status: int) -> str:
    return {400: "bad_request", 404: "not_found", 413: "too_large", 503: "unavailable"}.get(
        status, "internal" if status >= 500 else "bad_request")
