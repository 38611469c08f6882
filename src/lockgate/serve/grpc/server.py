"""The gRPC listener beside the REST one: a ``grpc.aio`` server on the same event loop, serving
``inference.GRPCInferenceService`` (:mod:`.service`) and ``grpc.health.v1.Health``
(:mod:`.health`).

It starts after the app's lifespan startup (models begin loading) and stops before its
shutdown (the worker pool still runs while calls in progress finish). Message sizes are
bounded by the same settings as REST bodies: a message over ``max_message_bytes`` is refused
by gRPC itself (RESOURCE_EXHAUSTED) before it is read whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from grpc import aio

import lockgate.serve.grpc.health_pb2 as health_pb2
import lockgate.serve.grpc.predict_v2_pb2 as predict_v2_pb2
from lockgate.errors import InvalidInputError, ServeError
from lockgate.serve.grpc.health import HEALTH_SERVICE, HealthServicer
from lockgate.serve.grpc.service import SERVICE, InferenceServicer
from lockgate.serve.inference import InferenceService
from lockgate.serve.oip import LEAN_COST

__all__ = ["GRPCServer", "message_limit"]

log = logging.getLogger("lockgate.serve")

_Message = Any  # a generated message class


def message_limit(max_request_bytes: int, decode_budget: int) -> int:
    """The largest message the server reads: what REST takes as a body, and no more than a
    request the decode budget could ever hold."""
    return max(1 << 16, min(max_request_bytes, decode_budget // LEAN_COST))


def _unary(fn: Callable[..., Any], request: _Message, response: _Message) -> Any:
    return grpc.unary_unary_rpc_method_handler(
        fn, request_deserializer=request.FromString,
        response_serializer=response.SerializeToString)


def _streaming(fn: Callable[..., Any], request: _Message, response: _Message, *,
               client: bool) -> Any:
    make = grpc.stream_stream_rpc_method_handler if client else \
        grpc.unary_stream_rpc_method_handler
    return make(fn, request_deserializer=request.FromString,
                response_serializer=response.SerializeToString)


def _inference_handlers(s: InferenceServicer) -> Any:
    p = predict_v2_pb2
    methods: Mapping[str, Any] = {
        "ServerLive": _unary(s.ServerLive, p.ServerLiveRequest, p.ServerLiveResponse),
        "ServerReady": _unary(s.ServerReady, p.ServerReadyRequest, p.ServerReadyResponse),
        "ModelReady": _unary(s.ModelReady, p.ModelReadyRequest, p.ModelReadyResponse),
        "ServerMetadata": _unary(s.ServerMetadata, p.ServerMetadataRequest,
                                 p.ServerMetadataResponse),
        "ModelMetadata": _unary(s.ModelMetadata, p.ModelMetadataRequest,
                                p.ModelMetadataResponse),
        "ModelInfer": _unary(s.ModelInfer, p.ModelInferRequest, p.ModelInferResponse),
        "ModelStreamInfer": _streaming(s.ModelStreamInfer, p.ModelInferRequest,
                                       p.ModelStreamInferResponse, client=True),
        "ModelStatistics": _unary(s.ModelStatistics, p.ModelStatisticsRequest,
                                  p.ModelStatisticsResponse),
    }
    return grpc.method_handlers_generic_handler(SERVICE, methods)


def _health_handlers(h: HealthServicer) -> Any:
    m = health_pb2
    return grpc.method_handlers_generic_handler(HEALTH_SERVICE, {
        "Check": _unary(h.Check, m.HealthCheckRequest, m.HealthCheckResponse),
        "Watch": _streaming(h.Watch, m.HealthCheckRequest, m.HealthCheckResponse,
                            client=False),
    })


def _target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GRPCServer:
    """Serves ``inference`` over gRPC on ``host``:``port`` (0: a free port) between
    :meth:`start` and :meth:`stop`, both called on the event loop the REST server runs on.
    ``on_started(host, port)`` is called once it listens; ``grace_s`` is how long calls in
    progress may take to finish at stop. Beyond ``max_calls`` calls at once (None: no bound)
    a new one is refused at once (RESOURCE_EXHAUSTED)."""

    def __init__(self, inference: InferenceService, host: str, port: int, *,
                 max_message_bytes: int, max_calls: int | None = None,
                 server_name: str = "lockgate", grace_s: float = 30.0,
                 on_started: Callable[[str, int], None] | None = None) -> None:
        if not 0 <= port <= 65535:
            raise InvalidInputError(f"gRPC port {port} is out of range",
                                    hint="give 0 (any free port) to 65535")
        if max_message_bytes < 1 or (max_calls is not None and max_calls < 1):
            raise InvalidInputError("the gRPC message and call limits must be positive")
        self.inference = inference
        self.host, self.port = host, port
        self.max_message_bytes = max_message_bytes
        self.max_calls = max_calls
        self.grace_s = grace_s
        self.on_started = on_started
        self.servicer = InferenceServicer(inference, server_name=server_name)
        self.health = HealthServicer(self.servicer.ready)
        self.address: tuple[str, int] | None = None
        """Where it listens, once it does."""
        self._server: Any = None

    async def start(self) -> tuple[str, int]:
        """Listen; ServeError when the address cannot be bound (taken, not local)."""
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a port another process holds is an error, not shared
        ]
        server = aio.server(options=options, maximum_concurrent_rpcs=self.max_calls)
        server.add_generic_rpc_handlers((_inference_handlers(self.servicer),
                                         _health_handlers(self.health)))
        target = _target(self.host, self.port)
        try:
            bound = server.add_insecure_port(target)
        except RuntimeError as exc:
            raise ServeError(f"cannot listen for gRPC on {target}: {exc}",
                             hint="pick another --grpc-port, or 0 for any free one") from None
        if not bound:
            raise ServeError(f"cannot listen for gRPC on {target}",
                             hint="pick another --grpc-port, or 0 for any free one")
        await server.start()
        self._server = server
        self.address = (self.host, int(bound))
        if self.on_started is not None:
            self.on_started(*self.address)
        return self.address

    async def stop(self) -> None:
        """Stop accepting, end health watches, let calls in progress finish (at most
        ``grace_s``)."""
        self.health.stopping = True
        server, self._server = self._server, None
        if server is not None:
            await server.stop(self.grace_s)
