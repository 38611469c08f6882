"""``grpc.health.v1.Health``, the standard gRPC health check (Kubernetes' ``grpc`` probes,
``grpc_health_probe``): SERVING once every model the server should serve is loaded (as
``/v2/health/ready``), NOT_SERVING before, and once the server is stopping.

The whole server (service ``""``) and ``inference.GRPCInferenceService`` are known; any
other service is NOT_FOUND on Check and SERVICE_UNKNOWN on Watch. Watch sends the status at
once and again whenever it changes (looked at every :data:`WATCH_POLL_S`), until the client
goes or the server stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from lockgate.serve.grpc.health_pb2 import HealthCheckRequest, HealthCheckResponse
from lockgate.serve.grpc.service import SERVICE

__all__ = ["HEALTH_SERVICE", "WATCH_POLL_S", "HealthServicer"]

HEALTH_SERVICE = "grpc.health.v1.Health"
WATCH_POLL_S = 0.25

_Status = HealthCheckResponse.ServingStatus


class HealthServicer:
    """Check and Watch over ``ready()`` (every model loaded)."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        self.ready = ready
        self.stopping = False

    def status(self, service: str) -> _Status | None:
        """The service's status; None for a service this server does not know."""
        if service not in ("", SERVICE):
            return None
        if self.stopping or not self.ready():
            return HealthCheckResponse.NOT_SERVING
        return HealthCheckResponse.SERVING

    async def Check(self, request: HealthCheckRequest, context: Any) -> HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"unknown service {request.service[:200]!r}")
        return HealthCheckResponse(status=status)

    async def Watch(self, request: HealthCheckRequest, context: Any
                    ) -> AsyncIterator[HealthCheckResponse]:
        last: _Status | None = None
        while True:
            status = self.status(request.service)
            now = HealthCheckResponse.SERVICE_UNKNOWN if status is None else status
            if now != last:
                yield HealthCheckResponse(status=now)
                last = now
            if self.stopping:
                return
            await asyncio.sleep(WATCH_POLL_S)
