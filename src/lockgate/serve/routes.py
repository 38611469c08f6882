"""The Open Inference Protocol v2 REST app (KServe v2 / Triton), on Starlette.

Routes::

    GET  /v2                                        server metadata
    GET  /v2/health/live                            200 while the process serves HTTP
    GET  /v2/health/ready                           200 when every model is ready, else 503
    GET  /v2/models/{model}[/versions/{version}]        model metadata
    GET  /v2/models/{model}[/versions/{version}]/ready  200 ready, 503 loading or failed
    POST /v2/models/{model}[/versions/{version}]/infer  inference
    GET  /metrics                                   Prometheus metrics (see serve/metrics.py)
    GET  /v2/models/{model}/versions/{version}/capture   captured rows and request outcomes
                                                    after ``rows_since``/``requests_since``
                                                    (lockgate extension, for monitors)
    GET  /v2/models[/{model}[/versions/{version}]]/stats  Triton's statistics extension
    POST /v2/repository/index, /v2/repository/models/{model}/load|unload
                                                    Triton's model repository extension
                                                    (see serve/extensions.py)

Without ``/versions/{version}`` a request goes to the highest version served for that model,
whatever its state: while that version loads or after it failed, unversioned requests get 503
rather than silently reaching an older version. Models load on background threads when the app
starts (the ASGI lifespan must be on); until a model is ready it gets no traffic (503).

Every error is JSON ``{"error": "..."}``. Lockgate errors answer with their ``http_status``: 400
for a bad request (invalid JSON, shape, datatype, unknown input or output, missing input), 404
for an unknown model or version, 413 for a body over ``max_request_bytes``, 503 for a model that
is not ready, failed to load, or that ONNX Runtime failed to run. Anything unexpected is logged
and answers 500 ``{"error": "internal error"}``; no traceback reaches the client.

Infer requests go through :class:`~lockgate.serve.inference.InferenceService` (``app.state.
inference``): decoded, run and encoded on a :class:`~lockgate.serve.workers.WorkerPool` thread,
one hop per request, or inline on the event loop for a model measured faster than that hop.
:func:`lockgate.serve.run_server` hands infer requests straight to the service from its own
HTTP/1.1 layer and everything else to this app.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lockgate.errors import Error, InvalidInputError
from lockgate.monitor.capture import DEFAULT_WINDOW, Capture, RequestLog
from lockgate.serve.about import lockgate_version
from lockgate.serve.controller import Controller, Desired, SpecMaker
from lockgate.serve.extensions import EXTENSIONS, extension_routes
from lockgate.serve.inference import (
    DEFAULT_INLINE_BELOW_S,
    INTERNAL_ERROR,
    Answer,
    Authorize,
    DecodeBudget,
    InferenceService,
    PayloadTooLargeError,
    Reservation,
    error_answer,
    unloaded_error,
)
from lockgate.serve.metrics import CONTENT_TYPE, ServerMetrics
from lockgate.serve.oip import DEFAULT_MAX_ELEMENTS
from lockgate.serve.openapi import OPENAPI_PATH, openapi_endpoint
from lockgate.serve.repository import Repository, RepositoryAuthorize
from lockgate.serve.shadow import ShadowMirror
from lockgate.serve.slots import PLATFORM, EventHook, ModelTable, ServedModel, Slot, SlotState
from lockgate.serve.workers import WorkerPool

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "create_app"]

log = logging.getLogger("lockgate.serve")

DEFAULT_MAX_REQUEST_BYTES = 64 << 20
_JSON = "application/json"


def _error(exc: Error) -> Response:
    return _response(error_answer(exc))


def _response(answer: Answer) -> Response:
    if answer.retry_after is not None:
        return Response(answer.body, status_code=answer.status, media_type=_JSON,
                        headers={"Retry-After": str(answer.retry_after)})
    if answer.binary_header is None:
        return Response(answer.body, status_code=answer.status, media_type=_JSON)
    return Response(answer.body, status_code=answer.status,
                    media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(answer.binary_header)})


def _internal() -> Response:
    return _response(INTERNAL_ERROR)


Endpoint = Callable[[Request], Awaitable[Response]]


def _guard(endpoint: Endpoint) -> Endpoint:
    """Turn lockgate errors into their JSON answer and anything else into a logged 500."""

    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Error as exc:
            return _error(exc)
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.url.path)
            return _internal()

    guarded.__name__ = endpoint.__name__
    return guarded


def _declared_length(request: Request) -> int | None:
    length = request.headers.get("content-length")
    if length is not None and length.isascii() and length.isdigit():
        return int(length)
    return None


def _header(request: Request, name: str) -> str | None:
    """A header's value; a repeated one joined with commas (which its parser refuses)."""
    values = request.headers.getlist(name)
    return values[0] if len(values) == 1 else ",".join(values) if values else None


async def _read_body(request: Request, limit: int) -> bytes:
    length = _declared_length(request)
    if length is not None:
        if length > limit:
            raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _slot_status(slot: Slot) -> dict[str, Any]:
    return {"name": slot.spec.name, "version": slot.version_text, "state": str(slot.state)}


def _cursor(request: Request, key: str) -> int:
    raw = request.query_params.get(key, "0")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise InvalidInputError(f"{key} must be a non-negative integer, got {raw[:40]!r}")
    return int(raw)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    return _internal()


def _capture_attacher(window: int) -> Callable[[Slot], Slot]:
    """``with_capture(slot)``: gives a served version its ring of the last ``window`` rows and
    requests on first use (0: no capture)."""

    def with_capture(slot: Slot) -> Slot:
        if window > 0 and slot.capture is None:
            slot.capture = Capture(window)
        return slot

    return with_capture


@dataclass(frozen=True, slots=True)
class _Following:
    """How an app follows deployments: what it polls, how it makes a version's spec, how often
    and how long a retired version lingers (see :class:`~lockgate.serve.controller.Controller`)."""

    desired: Callable[[], Mapping[str, Desired]]
    make_spec: SpecMaker
    poll_s: float
    grace_s: float
    subscribe: Callable[[Callable[[], None]], Callable[[], None]] | None


class _Lifespan:
    """What runs around the routes: the ``serve.start`` and ``serve.stop`` events, model
    loading, the controller that follows deployments, and at the end the shadow mirror, the
    worker pool and the request log stopped."""

    def __init__(self, table: ModelTable, pool: WorkerPool, mirror: ShadowMirror,
                 request_log: RequestLog | None, *, hook: EventHook | None, server_name: str,
                 following: _Following | None) -> None:
        self.table = table
        self.pool = pool
        self.mirror = mirror
        self.request_log = request_log
        self.hook = hook
        self.server_name = server_name
        self.following = following

    def emit_logged(self, name: str, payload: dict[str, Any]) -> None:
        """A model or deployment event: a failing hook is logged, never raised."""
        if self.hook is None:
            return
        try:
            self.hook(name, payload)
        except Exception:
            log.exception("event hook failed on %s", name)

    @asynccontextmanager
    async def run(self, app: Starlette) -> AsyncIterator[None]:
        """The ASGI lifespan: a failing hook at start or stop propagates."""
        table, hook = self.table, self.hook
        if hook is not None:
            hook("serve.start", {"server": self.server_name, "models": [
                {"model": s.spec.name, "version": s.spec.version} for s in table.slots]})
        table.start_loading(self.emit_logged)
        controller = None
        if (following := self.following) is not None:
            controller = Controller(table, following.desired, following.make_spec,
                                    self.emit_logged, poll_s=following.poll_s,
                                    grace_s=following.grace_s, subscribe=following.subscribe)
            controller.start()
        try:
            yield
        finally:
            if controller is not None:
                controller.stop()
            self.mirror.stop()
            self.pool.stop(wait=False)  # never block the loop; the threads are daemons
            if self.request_log is not None:
                self.request_log.close()
            if hook is not None:
                hook("serve.stop", {"server": self.server_name, "models": [
                    {"model": s.spec.name, "version": s.spec.version, "state": str(s.state)}
                    for s in table.slots]})


class _Routes:
    """The route handlers of one app, over the state they share."""

    def __init__(self, table: ModelTable, service: InferenceService, pool: WorkerPool,
                 metrics: ServerMetrics, *, server_name: str, max_request_bytes: int,
                 with_capture: Callable[[Slot], Slot],
                 drift: Callable[[str, int], Mapping[str, Any] | None] | None,
                 capture_authorize: Authorize | None) -> None:
        self.table = table
        self.service = service
        self.pool = pool
        self.metrics = metrics
        self.server_name = server_name
        self.server_version = lockgate_version()
        self.instance = uuid.uuid4().hex
        self.max_request_bytes = max_request_bytes
        self.with_capture = with_capture
        self.drift = drift
        self.drift_read_at = 0.0
        self.capture_authorize = capture_authorize

    def routes(self) -> list[Route]:
        model = "/v2/models/{model}"
        versioned = "/v2/models/{model}/versions/{version}"
        return [
            Route("/v2", _guard(self.server_metadata), methods=["GET"]),
            Route("/v2/health/live", _guard(self.live), methods=["GET"]),
            Route("/v2/health/ready", _guard(self.ready), methods=["GET"]),
            Route(model, _guard(self.model_metadata), methods=["GET"]),
            Route(versioned, _guard(self.model_metadata), methods=["GET"]),
            Route(model + "/ready", _guard(self.model_ready), methods=["GET"]),
            Route(versioned + "/ready", _guard(self.model_ready), methods=["GET"]),
            Route(model + "/infer", _guard(self.infer), methods=["POST"]),
            Route(versioned + "/infer", _guard(self.infer), methods=["POST"]),
            Route(versioned + "/capture", _guard(self.captured), methods=["GET"]),
            Route("/metrics", _guard(self.prometheus), methods=["GET"]),
            Route(OPENAPI_PATH, _guard(openapi_endpoint), methods=["GET"]),
        ]

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse({"name": self.server_name, "version": self.server_version,
                             "extensions": list(EXTENSIONS)})

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        waiting, detail = readiness(self.table, self.service)
        cluster = getattr(request.app.state, "cluster", None)
        if detail is None and cluster is not None:  # several workers: ready once all are
            detail = await self.pool.run(cluster.peers_not_ready)
        if detail is None:
            return JSONResponse({"ready": True})
        return JSONResponse(
            {
                "ready": False,
                "error": f"not ready: {detail}",
                "models": [_slot_status(s) for s in waiting],
            },
            status_code=503,
        )

    def resolve(self, request: Request) -> Slot:
        params = request.path_params
        if params["model"] in self.service.unloaded:
            raise unloaded_error(params["model"])
        return self.with_capture(self.table.resolve(params["model"], params.get("version")))

    async def model_metadata(self, request: Request) -> Response:
        slot = self.resolve(request)
        slot.predictor()  # 503 unless ready: the signature is known only once loaded
        return JSONResponse(
            {
                "name": slot.spec.name,
                "versions": [str(v) for v in self.table.versions(slot.spec.name)],
                "platform": PLATFORM,
                "inputs": slot.inputs,
                "outputs": slot.outputs,
                **({"parameters": slot.parameters} if slot.parameters else {}),
            }
        )

    async def model_ready(self, request: Request) -> Response:
        slot = self.resolve(request)
        status = _slot_status(slot)
        if slot.state is SlotState.READY:
            return JSONResponse({**status, "ready": True})
        try:
            slot.predictor()
        except Error as exc:
            status["error"] = exc.diagnostics()
        return JSONResponse({**status, "ready": False}, status_code=503)

    async def infer(self, request: Request) -> Response:
        params = request.path_params
        model, version = params["model"], params.get("version")
        authorization = request.headers.get("authorization")
        service, max_request_bytes = self.service, self.max_request_bytes
        if service.authorize is not None:  # the token before any budget is taken
            service.authorize(authorization, model)
        reservation: Reservation | None = None
        try:
            length = _declared_length(request)
            if length is not None and length <= max_request_bytes:
                reservation = service.reserve(length)  # before the body is received
            body = await _read_body(request, max_request_bytes)
        except BaseException as exc:
            if reservation is not None:
                reservation.release()
            if not isinstance(exc, Error):
                raise  # the client went away
            return _response(service.refuse(model, version, exc))
        answer = service.infer(model, version, body,
                               _header(request, "inference-header-content-length"),
                               authorization=authorization, reservation=reservation,
                               authorized=True)
        if not isinstance(answer, Answer):
            answer = await answer
        return _response(answer)

    def refresh_drift(self, ready: list[Slot]) -> None:
        """Latest monitor results of the ready versions, at most every 5 s."""
        drift, metrics = self.drift, self.metrics
        if drift is None or time.monotonic() - self.drift_read_at < 5.0:
            return
        self.drift_read_at = time.monotonic()
        for slot in ready:
            try:
                result = drift(slot.spec.name, slot.spec.version)
            except Exception as exc:  # metrics must answer even when the store does not
                log.warning("cannot read monitor results: %s", exc)
                return
            if not result or "drift" not in result:
                continue
            labels = (slot.spec.name, slot.version_text)
            metrics.dataset_drift_share.labels(*labels).set(float(result["drift"]["share"]))
            for f in result["drift"]["features"]:
                metrics.feature_drift.labels(*labels, f["feature"], f["method"]).set(
                    float(f["score"]))
                metrics.feature_drifted.labels(*labels, f["feature"]).set(
                    1.0 if f["drifted"] else 0.0)

    async def prometheus(self, request: Request) -> Response:
        ready = mark_loaded(self.table, self.metrics)
        if self.drift is not None:
            await self.pool.run(self.refresh_drift, ready)
        if self.metrics.merged is not None:  # several workers: asks its peers, off the loop
            return Response(await self.pool.run(self.metrics.render), media_type=CONTENT_TYPE)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def captured(self, request: Request) -> Response:
        if self.capture_authorize is not None:
            self.capture_authorize(request.headers.get("authorization"),
                                   request.path_params["model"])
        slot = self.resolve(request)
        rows_since = _cursor(request, "rows_since")
        requests_since = _cursor(request, "requests_since")
        capture = slot.capture
        if capture is None:
            raise InvalidInputError("capture is off on this server (capture window 0)")
        cluster = getattr(request.app.state, "cluster", None)
        if cluster is None:
            body = await self.pool.run(capture.snapshot, rows_since, requests_since)
            instance = self.instance
        else:  # several workers: every worker's window (see serve/cluster.py)
            body = await self.pool.run(cluster.captured, slot.spec.name, slot.version_text,
                                       capture.snapshot, id(capture), rows_since,
                                       requests_since)
            instance = cluster.instance
        return JSONResponse({"model": slot.spec.name, "version": slot.version_text,
                             "instance": instance, "window": capture.window, **body})


def readiness(table: ModelTable, service: InferenceService) -> tuple[list[Slot], str | None]:
    """The versions not ready yet (a model unloaded through the repository does not count),
    and what is missing; None when this process is ready."""
    unloaded = service.unloaded
    waiting = [s for s in table.not_ready() if s.spec.name not in unloaded]
    if not waiting and (table.slots or not table.dynamic):
        return [], None
    return waiting, ", ".join(f"{s.label} ({s.state})" for s in waiting) or \
        "nothing is deployed yet"


def mark_loaded(table: ModelTable, metrics: ServerMetrics) -> list[Slot]:
    """Set ``lockgate_model_info`` for the ready versions; returns them."""
    ready = [s for s in table.slots if s.state is SlotState.READY]
    for slot in ready:
        digest = str(slot.parameters.get("lockgate_version_digest", ""))
        metrics.model_info.labels(slot.spec.name, slot.version_text, digest).set(1)
    return ready


def create_app(
    models: Sequence[ServedModel],
    *,
    on_event: EventHook | None = None,
    server_name: str = "lockgate",
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    workers: int | None = None,
    desired: Callable[[], Mapping[str, Desired]] | None = None,
    make_spec: SpecMaker | None = None,
    poll_s: float = 0.5,
    grace_s: float = 300.0,
    capture_window: int = DEFAULT_WINDOW,
    request_log: RequestLog | None = None,
    drift: Callable[[str, int], Mapping[str, Any] | None] | None = None,
    subscribe: Callable[[Callable[[], None]], Callable[[], None]] | None = None,
    inline_below_s: float = DEFAULT_INLINE_BELOW_S,
    authorize: Authorize | None = None,
    capture_authorize: Authorize | None = None,
    decode_budget: int | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    repository_authorize: RepositoryAuthorize | None = None,
) -> Starlette:
    """An OIP v2 app serving ``models``.

    ``on_event(name, payload)`` receives ``serve.start`` (lifespan startup, before loading
    begins), ``model.ready`` and ``model.load_failed`` (on the loader thread) and ``serve.stop``
    (lifespan shutdown). An exception from the hook at start or stop propagates (the server will
    not start without its audit trail); one from a model event is logged.
    ``workers`` threads (default: CPUs + 4, at most 32) decode, run and encode infer requests;
    they bound how many model runs happen at once.
    With ``desired`` and ``make_spec`` the app follows deployments instead of a fixed list: a
    :class:`~lockgate.serve.controller.Controller` polls ``desired()`` every ``poll_s`` and
    loads, switches, canaries and retires versions (``deploy.switched``, ``deploy.failed`` and
    ``deploy.unloaded`` events).
    Each version keeps its last ``capture_window`` rows and requests for drift monitors (0:
    no capture); ``request_log`` writes a sample of requests. ``drift(name, version)`` returns
    the latest monitor result of a served version, shown on ``/metrics``. ``subscribe(wake)``
    registers a callback the store calls when deployments change and returns an unsubscribe.
    A version whose requests measure under ``inline_below_s`` seconds (decode, run and
    encode) runs them on the event loop instead of a worker (0: never).
    ``authorize(authorization, model)`` (None: open) checks infer requests and
    ``capture_authorize`` the capture route (None: open); health, readiness, metadata and
    ``/metrics`` stay open for probes. ``decode_budget`` bytes (default 256 MiB) bound the
    memory of decoding large bodies at once; a request carries at most ``max_elements``.
    ``repository_authorize`` checks repository load and unload (None: loopback clients only).
    Raises InvalidInputError for an empty model list (without ``desired``), a repeated
    ``(name, version)``, ``workers < 1`` or a negative ``inline_below_s``.
    """
    table = ModelTable(models, dynamic=desired is not None)
    if workers is None:
        workers = min(32, (os.cpu_count() or 1) + 4)
    pool = WorkerPool(workers, name="lockgate-infer")
    metrics = ServerMetrics()
    table.placed = metrics.placed
    mirror = ShadowMirror(metrics)
    with_capture = _capture_attacher(capture_window)
    service = InferenceService(
        table, metrics, pool, mirror, with_capture=with_capture, request_log=request_log,
        inline_below_s=inline_below_s, authorize=authorize, max_elements=max_elements,
        budget=None if decode_budget is None else DecodeBudget(decode_budget))
    routes = _Routes(table, service, pool, metrics, server_name=server_name,
                     max_request_bytes=max_request_bytes, with_capture=with_capture,
                     drift=drift, capture_authorize=capture_authorize)
    repository = Repository(table, service, desired=desired, authorize=repository_authorize)
    following = None if desired is None or make_spec is None else _Following(
        desired, make_spec, poll_s, grace_s, subscribe)
    lifespan = _Lifespan(table, pool, mirror, request_log, hook=on_event,
                         server_name=server_name, following=following)
    app = Starlette(
        routes=[*extension_routes(table, service, pool, repository, _guard), *routes.routes()],
        lifespan=lifespan.run,
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
    )
    app.state.models = table
    app.state.lifespan = lifespan  # its hook: workers behind a supervisor filter it
    app.state.metrics = metrics
    app.state.inference, app.state.repository = service, repository
    app.state.max_request_bytes = max_request_bytes
    return app
