"""``inference.GRPCInferenceService``: the Open Inference Protocol's RPCs over one
:class:`~lockgate.serve.inference.InferenceService`, the same one the REST routes call.

Infer requests are turned into the REST data plane's binary tensor body (:mod:`.codec`) and
answered by :meth:`InferenceService.infer`: the same routing (canary pick, shadow mirroring),
decoding and its limits, batching, metrics, rollback window, capture and request log. The
token check and the decode budget come first, as on REST: a caller without a valid token
costs no budget.

Errors keep their meaning as status codes (:func:`status_code`): bad input is
INVALID_ARGUMENT, an unknown model or version NOT_FOUND, a model loading or a server over its
decode budget UNAVAILABLE (with a ``retry-after`` trailer), a missing or bad token
UNAUTHENTICATED, a token without the role PERMISSION_DENIED, a request larger than the decode
budget RESOURCE_EXHAUSTED. Details are the message REST puts in ``{"error": ...}``; nothing
unexpected ever shows more than ``internal error``.

Health, readiness and metadata stay open (no token), as on REST, for probes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn

import grpc
import orjson
from google.protobuf import json_format

from lockgate.errors import Error
from lockgate.serve.about import lockgate_version
from lockgate.serve.extensions import statistics
from lockgate.serve.grpc.codec import body_size, infer_body, infer_response
from lockgate.serve.grpc.predict_v2_pb2 import (
    ModelInferRequest,
    ModelInferResponse,
    ModelMetadataRequest,
    ModelMetadataResponse,
    ModelReadyRequest,
    ModelReadyResponse,
    ModelStatisticsRequest,
    ModelStatisticsResponse,
    ModelStreamInferResponse,
    ServerLiveRequest,
    ServerLiveResponse,
    ServerMetadataRequest,
    ServerMetadataResponse,
    ServerReadyRequest,
    ServerReadyResponse,
)
from lockgate.serve.inference import (
    INTERNAL_ERROR,
    Answer,
    InferenceService,
    Reservation,
    error_answer,
    unloaded_error,
)
from lockgate.serve.routes import readiness
from lockgate.serve.slots import PLATFORM, Slot, SlotState

__all__ = ["SERVICE", "InferenceServicer", "authorization", "status_code"]

log = logging.getLogger("lockgate.serve")

SERVICE = "inference.GRPCInferenceService"

_CODES: Mapping[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    421: grpc.StatusCode.PERMISSION_DENIED,
    422: grpc.StatusCode.FAILED_PRECONDITION,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def status_code(http_status: int) -> grpc.StatusCode:
    """The gRPC status of an answer's HTTP status (another 4xx: INVALID_ARGUMENT; another
    5xx: INTERNAL)."""
    found = _CODES.get(http_status)
    if found is not None:
        return found
    return grpc.StatusCode.INVALID_ARGUMENT if http_status < 500 else grpc.StatusCode.INTERNAL


def _message(answer: Answer) -> str:
    try:
        doc = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return "internal error"
    error = doc.get("error") if isinstance(doc, dict) else None
    return str(error) if error else "internal error"


def authorization(context: Any) -> str | None:
    """The call's ``authorization`` metadata (several values joined with commas, which the
    token check refuses, as a repeated HTTP header is)."""
    values = [str(v) for k, v in context.invocation_metadata() or () if k == "authorization"]
    return ",".join(values) if values else None


async def _abort(context: Any, answer: Answer) -> NoReturn:
    trailer = () if answer.retry_after is None else (("retry-after", str(answer.retry_after)),)
    await context.abort(status_code(answer.status), _message(answer),
                        trailing_metadata=trailer)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


async def _abort_error(context: Any, exc: Error) -> NoReturn:
    await _abort(context, error_answer(exc))


class InferenceServicer:
    """The RPCs of ``inference.GRPCInferenceService`` over ``inference``."""

    def __init__(self, inference: InferenceService, *, server_name: str = "lockgate") -> None:
        self.inference = inference
        self.table = inference.table
        self.server_name = server_name
        self.server_version = lockgate_version()

    # -- health and metadata -----------------------------------------------------------------

    async def ServerLive(self, request: ServerLiveRequest, context: Any) -> ServerLiveResponse:
        return ServerLiveResponse(live=True)

    async def ServerReady(self, request: ServerReadyRequest, context: Any
                          ) -> ServerReadyResponse:
        return ServerReadyResponse(ready=self.ready())

    def ready(self) -> bool:
        """Every model this server should serve is loaded, by the rules of
        ``/v2/health/ready``: a server following an empty store is not ready, a model unloaded
        through the repository extension does not count."""
        return readiness(self.table, self.inference)[1] is None

    async def _resolve(self, context: Any, name: str, version: str) -> Slot:
        try:
            if name in self.inference.unloaded:
                raise unloaded_error(name)
            return self.table.resolve(name, version or None)
        except Error as exc:
            await _abort_error(context, exc)

    async def ModelReady(self, request: ModelReadyRequest, context: Any) -> ModelReadyResponse:
        slot = await self._resolve(context, request.name, request.version)
        return ModelReadyResponse(ready=slot.state is SlotState.READY)

    async def ServerMetadata(self, request: ServerMetadataRequest, context: Any
                             ) -> ServerMetadataResponse:
        return ServerMetadataResponse(name=self.server_name, version=self.server_version)

    async def ModelMetadata(self, request: ModelMetadataRequest, context: Any
                            ) -> ModelMetadataResponse:
        slot = await self._resolve(context, request.name, request.version)
        try:
            slot.predictor()  # UNAVAILABLE unless ready: the signature is known once loaded
        except Error as exc:
            await _abort_error(context, exc)
        response = ModelMetadataResponse(
            name=slot.spec.name, platform=PLATFORM,
            versions=[str(v) for v in self.table.versions(slot.spec.name)])
        for target, tensors in ((response.inputs, slot.inputs), (response.outputs,
                                                                   slot.outputs)):
            for t in tensors:
                target.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return response

    async def ModelStatistics(self, request: ModelStatisticsRequest, context: Any
                              ) -> ModelStatisticsResponse:
        """Triton's statistics extension: what ``GET /v2/models[/{m}[/versions/{v}]]/stats``
        answers (an empty name: every loaded version), summed over the server's workers."""
        try:
            doc = await asyncio.to_thread(statistics, self.table, self.inference,
                                          request.name or None, request.version or None)
        except Error as exc:
            await _abort_error(context, exc)
        response = ModelStatisticsResponse()
        json_format.ParseDict(doc, response, ignore_unknown_fields=True)
        return response

    # -- inference ---------------------------------------------------------------------------

    async def answer(self, request: ModelInferRequest, authorization: str | None
                     ) -> tuple[Answer, bool]:
        """The service's answer to one request, and whether it came raw."""
        service = self.inference
        model, version = request.model_name, request.model_version or None
        try:
            if service.authorize is not None:  # the token before any budget is taken
                service.authorize(authorization, model)
        except Error as exc:
            return error_answer(exc), False
        except Exception:
            log.exception("unexpected error checking a token for %r", model)
            return INTERNAL_ERROR, False
        reservation: Reservation | None = None
        try:  # the budget before the typed contents are laid out
            reservation = service.reserve(body_size(request))
            body = infer_body(request)
        except Exception as exc:
            if reservation is not None:
                reservation.release()
            if isinstance(exc, Error):
                return service.refuse(model, version, exc), False
            log.exception("unexpected error reading a gRPC infer request for %r", model)
            return INTERNAL_ERROR, False
        answer = service.infer(model, version, body.join(), str(body.header),
                               reservation=reservation, authorized=True)
        if not isinstance(answer, Answer):
            answer = await answer
        return answer, body.raw

    @staticmethod
    def response(answer: Answer, raw: bool) -> ModelInferResponse | None:
        """The message of a 200 answer (None, logged, when it cannot be read back)."""
        try:
            return infer_response(answer.body, answer.binary_header, raw=raw)
        except Exception:
            log.exception("unexpected error encoding a gRPC infer response")
            return None

    async def ModelInfer(self, request: ModelInferRequest, context: Any) -> ModelInferResponse:
        answer, raw = await self.answer(request, authorization(context))
        if answer.status != 200:
            await _abort(context, answer)
        response = self.response(answer, raw)
        if response is None:
            await _abort(context, INTERNAL_ERROR)
        return response

    async def ModelStreamInfer(self, requests: AsyncIterator[ModelInferRequest], context: Any
                               ) -> AsyncIterator[ModelStreamInferResponse]:
        """Each request answered in order; a failed one answers its ``error_message`` and the
        stream goes on (as Triton's does)."""
        token = authorization(context)
        async for request in requests:
            answer, raw = await self.answer(request, token)
            response = self.response(answer, raw) if answer.status == 200 else None
            if response is None:
                yield ModelStreamInferResponse(
                    error_message=_message(answer if answer.status != 200 else INTERNAL_ERROR))
            else:
                yield ModelStreamInferResponse(infer_response=response)
