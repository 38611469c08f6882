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

Memory: a body over :data:`INLINE_MAX_BODY` reserves :data:`~lockgate.serve.oip.LEAN_COST`
bytes of the server-wide :class:`DecodeBudget` per body byte while it is received, decoded, run
and encoded (more if its JSON must be read the plain way); past the budget it is answered 503
with ``Retry-After`` and costs nothing, while small requests keep being answered.

Outcomes: only the version's own failures (5xx: runtime errors, a model not ready) count
towards the error rate that drives automatic rollback; client errors (4xx) are counted apart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from lockgate.errors import Error, InvalidInputError, NotFoundError, ServeError
from lockgate.monitor.capture import RequestLog
from lockgate.runtime.predictor import Predictor
from lockgate.serve.batching import Execution, RequestTimeoutError, queue_parameters
from lockgate.serve.metrics import ModelMetrics, ServerMetrics
from lockgate.serve.oip import (
    DEFAULT_MAX_ELEMENTS,
    LEAN_COST,
    InferRequest,
    encode_binary_response,
    parse_infer_request,
)
from lockgate.serve.shadow import ShadowMirror
from lockgate.serve.slots import ModelTable, Slot
from lockgate.serve.statistics import Phases, Statistics
from lockgate.serve.workers import WorkerPool

__all__ = ["DEFAULT_DECODE_BUDGET", "DEFAULT_INLINE_BELOW_S", "INLINE_MAX_BODY",
           "INTERNAL_ERROR", "Answer", "Authorize", "DecodeBudget", "InferenceService",
           "OverloadedError", "PayloadTooLargeError", "Reservation", "error_answer",
           "unloaded_error"]

log = logging.getLogger("lockgate.serve")

DEFAULT_INLINE_BELOW_S = 0.001
"""Requests of a model measured under this (decode + run + encode) run on the event loop."""
INLINE_MAX_BODY = 64 << 10
"""Bodies larger than this always go to a worker, whatever the model's measure."""
_JSON = b"application/json"
_BINARY = b"application/octet-stream"
_Result = tuple[bytes, int | None, int, float, float, float, Phases]
"""A request's answer, binary header length, rows, queue and compute seconds, executions and
phases (:mod:`lockgate.serve.statistics`)."""


DEFAULT_DECODE_BUDGET = 256 << 20
"""Bytes of memory the server spends on large requests at once, all together: held from the
head (or the body's first bytes) until the answer is encoded."""


class PayloadTooLargeError(InvalidInputError):
    """A request body over the server's limit (HTTP 413)."""

    http_status = 413


class OverloadedError(ServeError):
    """The server already decodes as much as its budget allows (HTTP 503 with Retry-After):
    the server's state, not the version's failure."""

    retry_after_s = 1


Authorize = Callable[[str | None, str], object]
"""``authorize(authorization_header, model)``: returns when the caller may infer on the model,
raises AuthenticationError (401) or AccessDeniedError (403) otherwise."""


class DecodeBudget:
    """Bytes being decoded at once, server-wide. :meth:`take` never waits: a request that does
    not fit is refused at once (the client retries), so a burst of large bodies cannot pile up
    in memory."""

    def __init__(self, limit: int = DEFAULT_DECODE_BUDGET) -> None:
        if limit < 0:
            raise InvalidInputError("the decode budget cannot be negative")
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        """Reserve ``n`` bytes, or raise OverloadedError (PayloadTooLargeError when ``n``
        alone is more than the whole budget: waiting would never help)."""
        if n > self.limit:
            raise PayloadTooLargeError(
                f"decoding this request would take {n >> 20} MiB, more than the server's "
                f"decode budget of {self.limit >> 20} MiB",
                hint="send the data flat (not nested), or with the binary tensor extension")
        with self._lock:
            if self.used + n > self.limit:
                raise OverloadedError(
                    f"the server is decoding {self.used >> 20} MiB of requests, its budget is "
                    f"{self.limit >> 20} MiB", hint="retry shortly, or send smaller requests "
                    "(the binary tensor extension decodes leanest)")
            self.used += n

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n


class Reservation:
    """What one request holds of the budget; handed to the decoder for what it needs more."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: DecodeBudget, n: int) -> None:
        budget.take(n)
        self.budget, self.held = budget, n

    def more(self, n: int) -> None:
        self.budget.take(n)
        self.held += n

    def release(self) -> None:
        held, self.held = self.held, 0
        if held:
            self.budget.give(held)


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: status, body and, for binary tensor answers, the JSON header's length;
    ``retry_after`` (seconds) for a 503 the client should retry."""

    status: int
    body: bytes
    binary_header: int | None = None
    retry_after: int | None = None

    @property
    def content_type(self) -> bytes:
        return _JSON if self.binary_header is None else _BINARY


INTERNAL_ERROR = Answer(500, b'{"error":"internal error"}')
"""What an unexpected failure answers: logged on the server, never shown to the client."""


def error_answer(exc: Error) -> Answer:
    """The JSON ``{"error": ...}`` answer of a lockgate error, with its HTTP status."""
    if isinstance(exc, OverloadedError):
        return Answer(503, orjson.dumps({"error": exc.diagnostics()}),
                      retry_after=exc.retry_after_s)
    if exc.http_status >= 500:
        log.warning("%s", exc.diagnostics())
    return Answer(exc.http_status, orjson.dumps({"error": exc.diagnostics()}))


def unloaded_error(model: str) -> NotFoundError:
    """What a request for a model unloaded through the repository extension answers."""
    return NotFoundError(f"model {model!r} is unloaded on this server",
                         hint=f"POST /v2/repository/models/{model}/load brings it back")


def _header_length(raw: str | None) -> int | None:
    if raw is None:
        return None
    if "," in raw:
        raise InvalidInputError("Inference-Header-Content-Length is given more than once")
    raw = raw.strip(" \t")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise InvalidInputError(f"Inference-Header-Content-Length {raw[:40]!r} is not a "
                                "number of bytes")
    return int(raw)


def _reason_status(exc: Error) -> int:
    """The status a failure counts as: a decode budget refusal is the server's load (429),
    not the version's failure, although it is answered 503; so is a request whose own timeout
    passed in the batch queue."""
    return 429 if isinstance(exc, (OverloadedError, RequestTimeoutError)) else exc.http_status


def _rows(request: InferRequest) -> int:
    inputs = request.inputs
    if len(inputs) == 1:  # the common case, without a generator
        for a in inputs.values():
            return int(a.shape[0]) if a.ndim else 1
    return max((int(a.shape[0]) for a in inputs.values() if a.ndim), default=1)


class InferenceService:
    """Answers infer requests for the versions in ``table``.

    ``with_capture(slot)`` attaches the slot's capture ring on first use; ``request_log``
    receives a sample of requests; ``inline_below_s`` (0: never) is the inline threshold;
    ``authorize`` (None: open) checks each request's ``Authorization`` header; ``budget``
    bounds the memory of decoding large bodies; a request carries at most ``max_elements``
    tensor elements.
    """

    def __init__(self, table: ModelTable, metrics: ServerMetrics, pool: WorkerPool,
                 mirror: ShadowMirror, *, with_capture: Callable[[Slot], Slot],
                 request_log: RequestLog | None = None,
                 inline_below_s: float = DEFAULT_INLINE_BELOW_S,
                 authorize: Authorize | None = None, budget: DecodeBudget | None = None,
                 max_elements: int = DEFAULT_MAX_ELEMENTS) -> None:
        if inline_below_s < 0:
            raise InvalidInputError("the inline threshold cannot be negative")
        if max_elements < 1:
            raise InvalidInputError("a request must be allowed at least one element")
        self.table = table
        self.metrics = metrics
        self.pool = pool
        self.mirror = mirror
        self.with_capture = with_capture
        self.request_log = request_log
        self.inline_below_s = inline_below_s
        self.authorize = authorize
        self.budget = DecodeBudget() if budget is None else budget
        self.max_elements = max_elements
        self._cap = 2 * inline_below_s  # one stall (a GC pause, a preemption) is not a trend
        self.stats = Statistics()
        """Triton's per-version statistics, updated where the metrics are."""
        self.unloaded: frozenset[str] = frozenset()
        """Models unloaded through the repository extension: their requests answer 404
        (replaced whole, never mutated)."""

    def reserve(self, size: int) -> Reservation | None:
        """What a body of ``size`` bytes needs of the decode budget, taken now (None for a small
        body, which needs none); raises OverloadedError or PayloadTooLargeError. An HTTP layer
        may call it once the head is read, before receiving the body, and hand the result to
        :meth:`infer`."""
        if size <= INLINE_MAX_BODY:
            return None
        return Reservation(self.budget, size * LEAN_COST)

    def refuse(self, model: str, version: str | None, exc: Error) -> Answer:
        """The answer to a request refused before it reached the service (a body over the
        size limit, a budget refusal): counted as a request of the version it was for, when
        that resolves, and as a failure of that reason, never as the version's own error."""
        try:
            slot = self.table.resolve(model, version)
        except Error:
            return error_answer(exc)
        m = self.metrics.for_model(slot.spec.name, slot.version_text)
        m.requests.inc()
        m.failed(_reason_status(exc))
        self.stats.of(slot.spec.name, slot.version_text).failed(0.0)
        return error_answer(exc)

    def infer(self, model: str, version: str | None, body: bytes,
              binary_header: str | None = None, *, authorization: str | None = None,
              reservation: Reservation | None = None,
              authorized: bool = False) -> Answer | Awaitable[Answer]:
        """Answer one request: an :class:`Answer` when it ran inline, else an awaitable of one.
        Never raises: errors become their JSON answer (unexpected ones a logged 500). A
        ``reservation`` from :meth:`reserve` becomes the request's (released once its answer
        is encoded). ``authorized``: the HTTP layer already checked ``authorize`` for this
        request."""
        if self.authorize is not None and not authorized:
            try:
                self.authorize(authorization, model)
            except Exception as exc:
                if reservation is not None:
                    reservation.release()
                if isinstance(exc, Error):
                    return error_answer(exc)
                log.exception("unexpected error checking a token for %r", model)
                return INTERNAL_ERROR
        if reservation is None and len(body) > INLINE_MAX_BODY:
            try:
                reservation = self.reserve(len(body))
            except Error as exc:
                return self.refuse(model, version, exc)
        try:
            if self.unloaded and model in self.unloaded:
                raise unloaded_error(model)
            slot = self.with_capture(self.table.resolve(model, version))
        except Exception as exc:
            if reservation is not None:
                reservation.release()
            if isinstance(exc, Error):
                return error_answer(exc)
            log.exception("unexpected error resolving %r", model)
            return INTERNAL_ERROR
        m = self.metrics.for_model(slot.spec.name, slot.version_text)
        started = time.perf_counter()
        m.arrived()
        shadow = None
        if version is None:
            route = self.table.route(slot.spec.name)
            if route is not None and route.shadow is not None and slot is route.stable:
                shadow = route.shadow
        try:
            predictor = slot.predictor()
            header = None if binary_header is None else _header_length(binary_header)
            if slot.batcher is None:
                if reservation is None and slot.cost.inline(self.inline_below_s):
                    result = self._run(slot, predictor, body, header, None, started, shadow)
                    slot.cost.ran_inline(min(result[4], self._cap))
                    return self._done(slot, m, started, result)
                return self._on_worker(slot, m, predictor, body, header, reservation, started,
                                       shadow)
            return self._batched(slot, m, body, header, reservation, started, shadow)
        except Exception as exc:
            if reservation is not None:
                reservation.release()
            return self._failed(slot, m, started, exc)

    def _decode(self, body: bytes, header: int | None,
                reservation: Reservation | None) -> InferRequest:
        """The request, decoded (its share of the budget is held until its answer is encoded:
        outputs and their encoding are the rest of what a large request costs)."""
        return parse_infer_request(
            body, header, max_elements=self.max_elements,
            reserve=None if reservation is None else reservation.more)

    # -- the three ways a request runs ---------------------------------------------------------

    def _run(self, slot: Slot, predictor: Predictor, body: bytes, header: int | None,
             reservation: Reservation | None, enqueued: float, shadow: Slot | None
             ) -> _Result:
        """Decode, run, encode: the whole CPU-bound part of a request. Returns the response, its
        binary header length (or None), the rows, the queue and compute seconds and the
        executions. With a ``shadow``, the request and the answer are handed to the mirror
        (never waited on); the rows go to the slot's capture and the sampled request log."""
        begun = time.perf_counter()
        if reservation is None:
            request = parse_infer_request(body, header, max_elements=self.max_elements)
            decoded = time.perf_counter()
            outputs = predictor.run(request.inputs, request.outputs)
            ran = time.perf_counter()
            content, head = encode_binary_response(slot.spec.name, slot.version_text, outputs,
                                                   request)
        else:
            try:
                request = self._decode(body, header, reservation)
                decoded = time.perf_counter()
                outputs = predictor.run(request.inputs, request.outputs)
                ran = time.perf_counter()
                content, head = encode_binary_response(slot.spec.name, slot.version_text,
                                                       outputs, request)
            finally:
                reservation.release()
        encoded = time.perf_counter()
        rows = _rows(request)
        if shadow is not None and request.outputs is None:
            self.mirror.offer(shadow, dict(request.inputs), dict(outputs))
        self._observe(slot, request.inputs, outputs)
        return (content, head, rows, begun - enqueued, time.perf_counter() - begun, 1.0,
                (begun - enqueued, decoded - begun, ran - decoded, encoded - ran))

    def _run_on_worker(self, slot: Slot, predictor: Predictor, body: bytes, header: int | None,
                       reservation: Reservation | None, enqueued: float, shadow: Slot | None
                       ) -> _Result:
        cpu = time.thread_time()
        result = self._run(slot, predictor, body, header, reservation, enqueued, shadow)
        slot.cost.ran_on_worker(min(time.thread_time() - cpu, self._cap))
        return result

    async def _on_worker(self, slot: Slot, m: ModelMetrics, predictor: Predictor, body: bytes,
                         header: int | None, reservation: Reservation | None, started: float,
                         shadow: Slot | None) -> Answer:
        try:
            result = await self.pool.run(self._run_on_worker, slot, predictor, body, header,
                                         reservation, time.perf_counter(), shadow)
        except Exception as exc:
            if reservation is not None:
                reservation.release()
            return self._failed(slot, m, started, exc)
        return self._done(slot, m, started, result)

    async def _batched(self, slot: Slot, m: ModelMetrics, body: bytes, header: int | None,
                       reservation: Reservation | None, started: float,
                       shadow: Slot | None) -> Answer:
        batcher = slot.batcher
        assert batcher is not None
        try:
            begun = time.perf_counter()
            req = await self.pool.run(self._decode, body, header, reservation)
            t_queue = time.perf_counter()
            priority, timeout_us = queue_parameters(req.parameters)
            outputs, execution, waited = await batcher.submit_detailed(
                req.inputs, req.outputs, priority=priority, timeout_us=timeout_us)
            ran = time.perf_counter()
            queued = ran - t_queue
            content, head = await self.pool.run(self._encode_batched, slot, req, outputs)
            phases = (waited, t_queue - begun, execution.infer_s, time.perf_counter() - ran)
            if reservation is not None:
                reservation.release()
            rows = _rows(req)
            if shadow is not None and req.outputs is None:
                self.mirror.offer(shadow, dict(req.inputs), outputs)
        except Exception as exc:
            if reservation is not None:
                reservation.release()
            return self._failed(slot, m, started, exc)
        size = execution.size
        executions = rows / size if size else 1.0
        return self._done(slot, m, started,
                          (content, head, size, queued, 0.0, executions, phases), rows=rows,
                          execution=execution)

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

    def _finish(self, slot: Slot, m: ModelMetrics, started: float, status: int) -> float:
        m.pending.dec()
        elapsed = time.perf_counter() - started
        m.request_seconds.observe(elapsed)
        slot.window.record(elapsed, status)
        if slot.capture is not None:
            slot.capture.record_request(elapsed, status)
        return elapsed

    def _done(self, slot: Slot, m: ModelMetrics, started: float,
              result: _Result, rows: int | None = None,
              execution: Execution | None = None) -> Answer:
        content, head, size, queued, computed, executions, phases = result
        elapsed = time.perf_counter() - started
        m.answered(elapsed, queued, computed, size if rows is None else rows, executions, size)
        slot.window.record(elapsed, 200)
        if slot.capture is not None:
            slot.capture.record_request(elapsed, 200)
        stats = self.stats.of(slot.spec.name, slot.version_text)
        if execution is None:
            stats.succeeded(size, elapsed, phases, size)  # its own run
        elif not execution.counted:  # the batch's first request to finish counts its run
            execution.counted = True
            stats.succeeded(size if rows is None else rows, elapsed, phases, size)
        else:
            stats.succeeded(size if rows is None else rows, elapsed, phases)
        return Answer(200, content, head)

    def _failed(self, slot: Slot, m: ModelMetrics, started: float, exc: Exception) -> Answer:
        if isinstance(exc, Error):
            # a budget refusal is the server's load, not the version's failure: for the
            # rollback window it counts with the refusals of clients
            elapsed = self._finish(slot, m, started, _reason_status(exc))
            m.failed(_reason_status(exc))
            self.stats.of(slot.spec.name, slot.version_text).failed(elapsed)
            return error_answer(exc)
        elapsed = self._finish(slot, m, started, 500)
        m.failed(500)
        self.stats.of(slot.spec.name, slot.version_text).failed(elapsed)
        log.error("unexpected error serving %s", slot.label, exc_info=exc)
        return INTERNAL_ERROR
