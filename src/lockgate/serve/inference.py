"""One infer request, from body bytes to answer bytes, whatever HTTP layer carried it.

:class:`InferenceService` resolves the model (route pick for canaries, shadow mirroring), decodes
the OIP request, runs the model (alone or through the slot's dynamic batcher), encodes the
answer, and keeps the metrics, the rollback window and the capture. Both the Starlette route and
the lean HTTP/1.1 server (:mod:`lockgate.serve.http`) call it, so there is one implementation of
the governance work.

Where a request runs: a version whose whole request (decode, run, encode) has measured under
``inline_below_s`` runs **inline**, on the event loop thread, and :meth:`InferenceService.infer`
returns the :class:`Answer` directly; the hop to a worker thread and back costs more than such a
model's run. Anything else — a slow or not yet measured version, a large body, a batched
model — returns an awaitable and runs on the worker pool (or the batcher), so the loop never
waits on it. The measures are kept per loaded version (:class:`~lockgate.serve.slots.RunCost`)
and updated on every request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from lockgate.errors import Error, InvalidInputError
from lockgate.observe.capture import RequestLog
from lockgate.runtime import Predictor
from lockgate.serve.metrics import ModelMetrics, ServerMetrics
from lockgate.serve.oip import InferRequest, encode_binary_response, parse_infer_request
from lockgate.serve.shadow import ShadowMirror
from lockgate.serve.slots import ModelTable, Slot
from lockgate.serve.workers import WorkerPool

__all__ = ["DEFAULT_INLINE_BELOW_S", "INLINE_MAX_BODY", "INTERNAL_ERROR", "Answer",
           "InferenceService", "PayloadTooLargeError", "error_answer"]

log = logging.getLogger("lockgate.serve")

DEFAULT_INLINE_BELOW_S = 0.001
"""Requests of a model measured under this (decode + run + encode) run on the event loop."""
INLINE_MAX_BODY = 64 << 10
"""Bodies larger than this always go to a worker, whatever the model's measure."""
_JSON = b"application/json"
_BINARY = b"application/octet-stream"


class PayloadTooLargeError(InvalidInputError):
    """A request body over the server's limit (HTTP 413)."""

    http_status = 413


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: status, body and, for binary tensor answers, the JSON header's length."""

    status: int
    body: bytes
    binary_header: int | None = None

    @property
    def content_type(self) -> bytes:
        return _JSON if self.binary_header is None else _BINARY


INTERNAL_ERROR = Answer(500, b'{"error":"internal error"}')
"""What an unexpected failure answers: logged on the server, never shown to the client."""


def error_answer(exc: Error) -> Answer:
    """The JSON ``{"error": ...}`` answer of a lockgate error, with its HTTP status."""
    if exc.http_status >= 500:
        log.warning("%s", exc.diagnostics())
    return Answer(exc.http_status, orjson.dumps({"error": exc.diagnostics()}))


def _header_length(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit():
        raise InvalidInputError(f"Inference-Header-Content-Length {raw!r} is not a number")
    return int(raw)


def _rows(request: InferRequest) -> int:
    return max((int(a.shape[0]) for a in request.inputs.values() if a.ndim), default=1)


class InferenceService:
    """Answers infer requests for the versions in ``table``.

    ``with_capture(slot)`` attaches the slot's capture ring on first use; ``request_log``
    receives a sample of requests; ``inline_below_s`` (0: never) is the inline threshold.
    """

    def __init__(self, table: ModelTable, metrics: ServerMetrics, pool: WorkerPool,
                 mirror: ShadowMirror, *, with_capture: Callable[[Slot], Slot],
                 request_log: RequestLog | None = None,
                 inline_below_s: float = DEFAULT_INLINE_BELOW_S) -> None:
        if inline_below_s < 0:
            raise InvalidInputError("the inline threshold cannot be negative")
        self.table = table
        self.metrics = metrics
        self.pool = pool
        self.mirror = mirror
        self.with_capture = with_capture
        self.request_log = request_log
        self.inline_below_s = inline_below_s
        self._cap = 2 * inline_below_s  # one stall (a GC pause, a preemption) is not a trend

    def refuse(self, model: str, version: str | None, exc: Error) -> Answer:
        """The answer to a request refused before it reached the service (a body over the
        size limit): counted as a failure of the version it was for, when that resolves."""
        try:
            slot = self.table.resolve(model, version)
        except Error:
            return error_answer(exc)
        m = self.metrics.for_model(slot.spec.name, slot.version_text)
        m.requests.inc()
        m.failed(exc.http_status)
        return error_answer(exc)

    def infer(self, model: str, version: str | None, body: bytes,
              binary_header: str | None = None, *,
              authorization: str | None = None) -> Answer | Awaitable[Answer]:
        """Answer one request: an :class:`Answer` when it ran inline, else an awaitable of one.
        Never raises: errors become their JSON answer (unexpected ones a logged 500)."""
        try:
            slot = self.with_capture(self.table.resolve(model, version))
        except Error as exc:
            return error_answer(exc)
        except Exception:
            log.exception("unexpected error resolving %r", model)
            return INTERNAL_ERROR
        m = self.metrics.for_model(slot.spec.name, slot.version_text)
        started = time.perf_counter()
        m.requests.inc()
        m.pending.inc()
        shadow = None
        if version is None:
            route = self.table.route(slot.spec.name)
            if route is not None and route.shadow is not None and slot is route.stable:
                shadow = route.shadow
        try:
            predictor = slot.predictor()
            header = _header_length(binary_header)
            if slot.batcher is None:
                if len(body) <= INLINE_MAX_BODY and slot.cost.inline(self.inline_below_s):
                    result = self._run(slot, predictor, body, header, started, shadow)
                    slot.cost.ran_inline(min(result[4], self._cap))
                    return self._done(slot, m, started, result)
                return self._on_worker(slot, m, predictor, body, header, started, shadow)
            return self._batched(slot, m, body, header, started, shadow)
        except Exception as exc:
            return self._failed(slot, m, started, exc)

    # -- the three ways a request runs ---------------------------------------------------------

    def _run(self, slot: Slot, predictor: Predictor, body: bytes, header: int | None,
             enqueued: float, shadow: Slot | None
             ) -> tuple[bytes, int | None, int, float, float, float]:
        """Decode, run, encode: the whole CPU-bound part of a request. Returns the response, its
        binary header length (or None), the rows, the queue and compute seconds and the
        executions. With a ``shadow``, the request and the answer are handed to the mirror
        (never waited on); the rows go to the slot's capture and the sampled request log."""
        begun = time.perf_counter()
        request = parse_infer_request(body, header)
        outputs = predictor.run(request.inputs, request.outputs)
        content, head = encode_binary_response(slot.spec.name, slot.version_text, outputs,
                                               request)
        rows = _rows(request)
        if shadow is not None and request.outputs is None:
            self.mirror.offer(shadow, dict(request.inputs), dict(outputs))
        self._observe(slot, request.inputs, outputs)
        return content, head, rows, begun - enqueued, time.perf_counter() - begun, 1.0

    def _run_on_worker(self, slot: Slot, predictor: Predictor, body: bytes, header: int | None,
                       enqueued: float, shadow: Slot | None
                       ) -> tuple[bytes, int | None, int, float, float, float]:
        cpu = time.thread_time()
        result = self._run(slot, predictor, body, header, enqueued, shadow)
        slot.cost.ran_on_worker(min(time.thread_time() - cpu, self._cap))
        return result

    async def _on_worker(self, slot: Slot, m: ModelMetrics, predictor: Predictor, body: bytes,
                         header: int | None, started: float, shadow: Slot | None) -> Answer:
        try:
            result = await self.pool.run(self._run_on_worker, slot, predictor, body, header,
                                         time.perf_counter(), shadow)
        except Exception as exc:
            return self._failed(slot, m, started, exc)
        return self._done(slot, m, started, result)

    async def _batched(self, slot: Slot, m: ModelMetrics, body: bytes, header: int | None,
                       started: float, shadow: Slot | None) -> Answer:
        batcher = slot.batcher
        assert batcher is not None
        try:
            req = await self.pool.run(parse_infer_request, body, header)
            t_queue = time.perf_counter()
            outputs, size = await batcher.submit(req.inputs, req.outputs)
            queued = time.perf_counter() - t_queue
            content, head = await self.pool.run(self._encode_batched, slot, req, outputs)
            rows = _rows(req)
            if shadow is not None and req.outputs is None:
                self.mirror.offer(shadow, dict(req.inputs), outputs)
        except Exception as exc:
            return self._failed(slot, m, started, exc)
        executions = rows / size if size else 1.0
        return self._done(slot, m, started, (content, head, size, queued, 0.0, executions),
                          rows=rows)

    def _encode_batched(self, slot: Slot, req: InferRequest, outputs: Mapping[str, Any]
                        ) -> tuple[bytes, int | None]:
        """A batched request's slice of outputs, encoded and captured (on a worker thread: the
        encoding is the per-request cost batching cannot share)."""
        content, head = encode_binary_response(slot.spec.name, slot.version_text, outputs, req)
        self._observe(slot, req.inputs, outputs)
        return content, head

    # -- bookkeeping ---------------------------------------------------------------------------

    def _observe(self, slot: Slot, inputs: Mapping[str, Any],
                 outputs: Mapping[str, Any]) -> None:
        capture = slot.capture
        if capture is not None:
            capture.record(inputs, outputs)
        if self.request_log is not None:
            self.request_log.offer(slot.spec.name, slot.version_text, inputs, outputs)

    def _finish(self, slot: Slot, m: ModelMetrics, started: float, ok: bool) -> None:
        m.pending.dec()
        elapsed = time.perf_counter() - started
        m.request_seconds.observe(elapsed)
        slot.window.record(elapsed, ok)
        if slot.capture is not None:
            slot.capture.record_request(elapsed, ok)

    def _done(self, slot: Slot, m: ModelMetrics, started: float,
              result: tuple[bytes, int | None, int, float, float, float],
              rows: int | None = None) -> Answer:
        content, head, size, queued, computed, executions = result
        self._finish(slot, m, started, True)
        m.queue_seconds.observe(queued)
        m.compute_seconds.observe(computed)
        m.inferences.inc(size if rows is None else rows)
        m.executions.inc(executions)
        m.batch_size.observe(size)
        return Answer(200, content, head)

    def _failed(self, slot: Slot, m: ModelMetrics, started: float, exc: Exception) -> Answer:
        self._finish(slot, m, started, False)
        if isinstance(exc, Error):
            m.failed(exc.http_status)
            return error_answer(exc)
        m.failed(500)
        log.error("unexpected error serving %s", slot.label, exc_info=exc)
        return INTERNAL_ERROR
