"""Serving: an Open Inference Protocol v2 app over ONNX Runtime, and its HTTP server.

::

    from lockgate.serve import ServedModel, create_app, run_server

    app = create_app([ServedModel("iris", 3, lambda: Predictor(model_bytes))])
    run_server(app, "127.0.0.1", 0, on_started=lambda host, port: log.info("port %d", port))

With ``grpc_port`` the same process also serves the Open Inference Protocol over gRPC
(:mod:`lockgate.serve.grpc`), through the same inference service.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.types import ASGIApp

from lockgate.errors import InvalidInputError
from lockgate.serve.http import Companion, HTTPServer
from lockgate.serve.inference import InferenceService
from lockgate.serve.limits import HTTPLimits, uvicorn_options
from lockgate.serve.routes import DEFAULT_MAX_REQUEST_BYTES, create_app
from lockgate.serve.slots import EventHook, ServedModel, SlotState

if TYPE_CHECKING:
    from lockgate.serve.supervisor import WorkerContext

__all__ = ["EventHook", "HTTPLimits", "ServedModel", "SlotState", "create_app", "run_server"]


class _Server(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, on_started: Callable[[str, int], None] | None,
        companions: tuple[Companion, ...] = (),
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._companions = companions

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            for companion in self._companions:
                await companion.start()
        if self.started and self._on_started is not None:
            address = self.servers[0].sockets[0].getsockname()
            self._on_started(str(address[0]), int(address[1]))

    async def shutdown(self, sockets: Any = None) -> None:
        for companion in self._companions:
            await companion.stop()
        await super().shutdown(sockets=sockets)


def run_server(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str = "warning",
    access_log: bool = False,
    on_started: Callable[[str, int], None] | None = None,
    http: str = "auto",
    limits: HTTPLimits | None = None,
    allowed_hosts: frozenset[str] | None = None,
    grpc_port: int | None = None,
    on_grpc_started: Callable[[str, int], None] | None = None,
    sock: socket.socket | None = None,
    worker: WorkerContext | None = None,
    **extra_uvicorn_options: Any,
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; blocks.

    ``http`` picks the HTTP layer: ``"lockgate"`` (:mod:`lockgate.serve.http`, which answers
    infer requests of an app from :func:`create_app` without going through ASGI), ``"uvicorn"``,
    or ``"auto"`` (the default: lockgate's for an inference app, uvicorn for any other app,
    such as the registry API or the console).

    ``port=0`` binds a free port: ``on_started(host, port)`` is called with the bound address
    once the socket listens (models may still be loading — poll ``/v2/health/ready``). The
    lifespan is always on. On a signal the server shuts down gracefully (lifespan shutdown runs,
    ``serve.stop`` is emitted) and then, as under the uvicorn CLI, the signal is re-raised:
    SIGINT surfaces as KeyboardInterrupt, SIGTERM ends the process.

    ``limits`` (default: ``HTTPLimits()``) bounds what clients may send, on both HTTP
    layers (see :mod:`lockgate.serve.limits` for how uvicorn is made to apply them).
    ``allowed_hosts`` (None: any) names the hosts a request may address (its ``Host`` without
    the port; an IPv6 literal in brackets): any other is answered 421, on both layers.
    ``grpc_port`` (None: none; 0: a free one) also serves an app from :func:`create_app` over
    gRPC on ``host``, on either layer; ``on_grpc_started(host, port)`` is called once it
    listens, before ``on_started``.
    ``sock`` (None: bind ``host:port``) is a socket already listening to serve on instead.
    ``worker`` (from :func:`lockgate.serve.supervisor.worker_context`): this process is one of
    several behind a supervisor: it serves on the socket it inherited, tells the supervisor
    instead of calling ``on_started`` (the supervisor prints the banners), serves gRPC only
    when the supervisor gives it the port, and merges ``/metrics`` and capture with its peers.
    Raises InvalidInputError for an unknown ``http`` or gRPC for another app, and ServeError
    when the app's startup fails under lockgate's HTTP layer or the gRPC port cannot be bound.
    """
    if http not in ("auto", "lockgate", "uvicorn"):
        raise InvalidInputError(f"unknown HTTP layer {http!r}", hint="use auto, lockgate or "
                                "uvicorn")
    limits = limits or HTTPLimits()
    state = getattr(app, "state", None)
    inference = getattr(state, "inference", None)
    if worker is not None:
        from lockgate.serve.cluster import as_worker

        as_worker(app, worker, lambda listening, started, grpc_started: run_server(
            app, host, port, log_level=log_level, access_log=access_log, on_started=started,
            http=http, limits=limits, allowed_hosts=allowed_hosts,
            grpc_port=worker.grpc_port, on_grpc_started=grpc_started, sock=listening,
            **extra_uvicorn_options))
        return
    companions = _grpc(inference, state, host, grpc_port, on_grpc_started,
                       limits.max_connections)
    if http == "lockgate" or (http == "auto" and inference is not None):
        if access_log:
            _log_access()
        HTTPServer(app, inference, access_log=access_log, limits=limits,
                   allowed_hosts=allowed_hosts, companions=companions,
                   max_body=getattr(state, "max_request_bytes", DEFAULT_MAX_REQUEST_BYTES),
                   ).run(host, port, on_started, sock)
        return
    max_body = getattr(state, "max_request_bytes", None)
    options = {**uvicorn_options(limits, max_body if isinstance(max_body, int) else None,
                                 allowed_hosts), **extra_uvicorn_options}
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            access_log=access_log, lifespan="on", **options)
    _Server(config, on_started, companions).run(sockets=None if sock is None else [sock])


def _grpc(inference: InferenceService | None, state: Any, host: str, port: int | None,
          on_started: Callable[[str, int], None] | None, max_calls: int
          ) -> tuple[Companion, ...]:
    """The gRPC listener of an inference app, when a port is asked for: its messages no
    larger than a REST body, at most as many calls at once as REST takes connections."""
    if port is None:
        return ()
    if inference is None:
        raise InvalidInputError("only an inference app (from create_app) can be served over "
                                "gRPC")
    from lockgate.serve.grpc import GRPCServer, message_limit

    limit = message_limit(getattr(state, "max_request_bytes", DEFAULT_MAX_REQUEST_BYTES),
                          inference.budget.limit)
    return (GRPCServer(inference, host, port, max_message_bytes=limit, max_calls=max_calls,
                       on_started=on_started),)


def _log_access() -> None:
    logger = logging.getLogger("lockgate.serve.access")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
