"""The routes of Triton's statistics and model repository extensions (see
:mod:`lockgate.serve.statistics` and :mod:`lockgate.serve.repository`), and the extensions a
server names in its metadata.

    GET  /v2/models/stats
    GET  /v2/models/{model}/stats
    GET  /v2/models/{model}/versions/{version}/stats
    POST /v2/repository/index
    POST /v2/repository/models/{model}/load
    POST /v2/repository/models/{model}/unload

They are listed before the model routes, so ``/v2/models/stats`` is never read as a model
named ``stats``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lockgate.errors import InvalidInputError
from lockgate.serve.inference import InferenceService, unloaded_error
from lockgate.serve.repository import Repository
from lockgate.serve.slots import ModelTable
from lockgate.serve.workers import WorkerPool

__all__ = ["EXTENSIONS", "extension_routes", "statistics"]

EXTENSIONS = ("binary_tensor_data", "statistics", "model_repository")
"""What ``GET /v2`` names: the protocol extensions this server implements."""

Endpoint = Callable[[Request], Awaitable[Response]]


class _Extensions:
    def __init__(self, table: ModelTable, service: InferenceService, pool: WorkerPool,
                 repository: Repository) -> None:
        self.table, self.service, self.pool, self.repository = table, service, pool, repository

    async def stats(self, request: Request) -> Response:
        params = request.path_params
        return JSONResponse(statistics(self.table, self.service, params.get("model"),
                                       params.get("version")))

    async def index(self, request: Request) -> Response:
        body = await request.body()
        ready = False
        if body.strip():
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise InvalidInputError("the index request is not valid JSON") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("ready", False), bool):
                raise InvalidInputError('the index request must be {"ready": true|false}')
            ready = doc.get("ready", False)
        found = await self.pool.run(self.repository.index, ready)
        return JSONResponse(found)

    async def load(self, request: Request) -> Response:
        model = self._checked(request)
        await self.pool.run(self.repository.load, model)
        return Response(status_code=200)  # as Triton: success is the status, no body

    async def unload(self, request: Request) -> Response:
        model = self._checked(request)
        await self.pool.run(self.repository.unload, model)
        return Response(status_code=200)  # as Triton: success is the status, no body

    def _checked(self, request: Request) -> str:
        model = str(request.path_params["model"])
        client = request.client.host if request.client is not None else None
        self.repository.check(request.headers.get("authorization"), client, model)
        return model


def statistics(table: ModelTable, service: InferenceService, model: str | None,
               version: str | None) -> dict[str, Any]:
    """Triton's statistics document for every loaded version, a model's or one version's
    (REST and gRPC answer it alike); NotFoundError for an unknown or unloaded model."""
    if model is None:
        keys = [(s.spec.name, s.version_text) for s in table.slots]
    else:
        if model in service.unloaded:
            raise unloaded_error(model)
        if version is not None:
            slot = table.resolve(model, version)  # 404 for an unknown version
            keys = [(slot.spec.name, slot.version_text)]
        else:
            numbers = table.versions(model)
            if not numbers:
                table.resolve(model, "0")  # the unknown model's 404
            keys = [(model, str(n)) for n in numbers]
    return service.stats.snapshot(sorted(keys, key=_order))


def _order(key: tuple[str, str]) -> tuple[str, int]:
    return key[0], int(key[1])


def extension_routes(table: ModelTable, service: InferenceService, pool: WorkerPool,
                     repository: Repository, guard: Callable[[Endpoint], Endpoint]
                     ) -> list[Route]:
    """The extensions' routes, each wrapped by ``guard`` (errors as JSON answers)."""
    e = _Extensions(table, service, pool, repository)
    return [
        Route("/v2/models/stats", guard(e.stats), methods=["GET"]),
        Route("/v2/models/{model}/stats", guard(e.stats), methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/stats", guard(e.stats), methods=["GET"]),
        Route("/v2/repository/index", guard(e.index), methods=["POST"]),
        Route("/v2/repository/models/{model}/load", guard(e.load), methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", guard(e.unload), methods=["POST"]),
    ]
