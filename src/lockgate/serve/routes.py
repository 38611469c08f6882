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

import importlib.metadata
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lockgate.errors import Error, InvalidInputError
from lockgate.monitor.capture import DEFAULT_WINDOW, Capture, RequestLog
from lockgate.serve.controller import Controller, Desired
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
)
from lockgate.serve.metrics import CONTENT_TYPE, ServerMetrics
from lockgate.serve.oip import DEFAULT_MAX_ELEMENTS
from lockgate.serve.openapi import OPENAPI_PATH, openapi_endpoint
from lockgate.serve.shadow import ShadowMirror
from lockgate.serve.slots import PLATFORM, EventHook, ModelTable, ServedModel, Slot, SlotState
from lockgate.serve.workers import WorkerPool

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "create_app"]

log = logging.getLogger("lockgate.serve")

DEFAULT_MAX_REQUEST_BYTES = 64 << 20
_JSON = "application/json"


def _version() -> str:
    try:
        return importlib.metadata.version("lockgate")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


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


def create_app(
    models: Sequence[ServedModel],
    *,
    on_event: EventHook | None = None,
    server_name: str = "lockgate",
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    workers: int | None = None,
    desired: Callable[[], Mapping[str, Desired]] | None = None,
    make_spec: Callable[[str, int], ServedModel] | None = None,
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
    Raises InvalidInputError for an empty model list (without ``desired``), a repeated
    ``(name, version)``, ``workers < 1`` or a negative ``inline_below_s``.
    """
    dynamic = desired is not None
    table = ModelTable(models, dynamic=dynamic)
    if workers is None:
        workers = min(32, (os.cpu_count() or 1) + 4)
    pool = WorkerPool(workers, name="lockgate-infer")
    metrics = ServerMetrics()
    mirror = ShadowMirror(metrics)
    server_version = _version()
    hook = on_event
    instance = uuid.uuid4().hex
    drift_seen: dict[str, float] = {"at": 0.0}

    def with_capture(slot: Slot) -> Slot:
        if capture_window > 0 and slot.capture is None:
            slot.capture = Capture(capture_window)
        return slot

    service = InferenceService(
        table, metrics, pool, mirror, with_capture=with_capture, request_log=request_log,
        inline_below_s=inline_below_s, authorize=authorize, max_elements=max_elements,
        budget=None if decode_budget is None else DecodeBudget(decode_budget))

    def emit_logged(name: str, payload: dict[str, Any]) -> None:
        if hook is None:
            return
        try:
            hook(name, payload)
        except Exception:
            log.exception("event hook failed on %s", name)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if hook is not None:
            hook(
                "serve.start",
                {
                    "server": server_name,
                    "models": [
                        {"model": s.spec.name, "version": s.spec.version} for s in table.slots
                    ],
                },
            )
        table.start_loading(emit_logged)
        controller = None
        if desired is not None and make_spec is not None:
            controller = Controller(table, desired, make_spec, emit_logged, poll_s=poll_s,
                                    grace_s=grace_s, subscribe=subscribe)
            controller.start()
        try:
            yield
        finally:
            if controller is not None:
                controller.stop()
            mirror.stop()
            pool.stop(wait=False)  # never block the loop; the threads are daemons
            if request_log is not None:
                request_log.close()
            if hook is not None:
                hook(
                    "serve.stop",
                    {
                        "server": server_name,
                        "models": [
                            {"model": s.spec.name, "version": s.spec.version, "state": str(s.state)}
                            for s in table.slots
                        ],
                    },
                )

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": server_name, "version": server_version,
                             "extensions": ["binary_tensor_data"]})

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        waiting = table.not_ready()
        if not waiting:
            return JSONResponse({"ready": True})
        detail = ", ".join(f"{s.label} ({s.state})" for s in waiting)
        return JSONResponse(
            {
                "ready": False,
                "error": f"not ready: {detail}",
                "models": [_slot_status(s) for s in waiting],
            },
            status_code=503,
        )

    def resolve(request: Request) -> Slot:
        params = request.path_params
        return with_capture(table.resolve(params["model"], params.get("version")))

    async def model_metadata(request: Request) -> Response:
        slot = resolve(request)
        slot.predictor()  # 503 unless ready: the signature is known only once loaded
        return JSONResponse(
            {
                "name": slot.spec.name,
                "versions": [str(v) for v in table.versions(slot.spec.name)],
                "platform": PLATFORM,
                "inputs": slot.inputs,
                "outputs": slot.outputs,
                **({"parameters": slot.parameters} if slot.parameters else {}),
            }
        )

    async def model_ready(request: Request) -> Response:
        slot = resolve(request)
        status = _slot_status(slot)
        if slot.state is SlotState.READY:
            return JSONResponse({**status, "ready": True})
        try:
            slot.predictor()
        except Error as exc:
            status["error"] = exc.diagnostics()
        return JSONResponse({**status, "ready": False}, status_code=503)

    async def infer(request: Request) -> Response:
        params = request.path_params
        model, version = params["model"], params.get("version")
        authorization = request.headers.get("authorization")
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

    def refresh_drift(ready: list[Slot]) -> None:
        """Latest monitor results of the ready versions, at most every 5 s."""
        if drift is None or time.monotonic() - drift_seen["at"] < 5.0:
            return
        drift_seen["at"] = time.monotonic()
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

    async def prometheus(request: Request) -> Response:
        ready = [s for s in table.slots if s.state is SlotState.READY]
        for slot in ready:
            digest = str(slot.parameters.get("lockgate_version_digest", ""))
            metrics.model_info.labels(slot.spec.name, slot.version_text, digest).set(1)
        if drift is not None:
            await pool.run(refresh_drift, ready)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    def _cursor(request: Request, key: str) -> int:
        raw = request.query_params.get(key, "0")
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
            raise InvalidInputError(f"{key} must be a non-negative integer, got {raw[:40]!r}")
        return int(raw)

    async def captured(request: Request) -> Response:
        if capture_authorize is not None:
            capture_authorize(request.headers.get("authorization"),
                              request.path_params["model"])
        slot = resolve(request)
        rows_since = _cursor(request, "rows_since")
        requests_since = _cursor(request, "requests_since")
        capture = slot.capture
        if capture is None:
            raise InvalidInputError("capture is off on this server (capture window 0)")
        body = await pool.run(capture.snapshot, rows_since, requests_since)
        return JSONResponse({"model": slot.spec.name, "version": slot.version_text,
                             "instance": instance, "window": capture.window, **body})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        return _internal()

    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    routes = [
        Route("/v2", _guard(server_metadata), methods=["GET"]),
        Route("/v2/health/live", _guard(live), methods=["GET"]),
        Route("/v2/health/ready", _guard(ready), methods=["GET"]),
        Route(model, _guard(model_metadata), methods=["GET"]),
        Route(versioned, _guard(model_metadata), methods=["GET"]),
        Route(model + "/ready", _guard(model_ready), methods=["GET"]),
        Route(versioned + "/ready", _guard(model_ready), methods=["GET"]),
        Route(model + "/infer", _guard(infer), methods=["POST"]),
        Route(versioned + "/infer", _guard(infer), methods=["POST"]),
        Route(versioned + "/capture", _guard(captured), methods=["GET"]),
        Route("/metrics", _guard(prometheus), methods=["GET"]),
        Route(OPENAPI_PATH, _guard(openapi_endpoint), methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: unexpected},
    )
    app.state.models = table
    app.state.metrics = metrics
    app.state.inference = service
    app.state.max_request_bytes = max_request_bytes
    return app
