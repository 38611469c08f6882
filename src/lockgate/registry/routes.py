"""The registry HTTP API: every registry operation the CLI offers, with tokens and roles.

Every route is declared once in :data:`lockgate.registry.operations.OPERATIONS` (method, path,
role, body and response schema); the router below, the role checks and the OpenAPI 3.1
document at ``/openapi.json`` all come from it. Errors are JSON ``{"error", "type", "hint"}``
with the error's HTTP status (401 without a valid token, 403 without the role); no traceback
reaches the client. Requests authenticate with ``Authorization: Bearer lgt_...``; the token is
never logged or echoed. With ``auth=False`` (loopback only, a single user) every request acts
as the home's user with every role, and is served only when its ``Host`` is a loopback name
(421 otherwise: DNS rebinding). Whatever the mode, a state-changing request a browser marks as
sent by another site is refused (403, audited), and a JSON body must come as
``Content-Type: application/json`` (415 otherwise), which no cross-site form or ``no-cors``
fetch can send (see :mod:`lockgate.registry.guard`). The lifespan shutdown writes the folded
refusals still open.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lockgate.access.identity import ROLES, Principal
from lockgate.audit import AuditEvent, EventType
from lockgate.errors import AccessDeniedError, Error, GateFailedError
from lockgate.registry.bundle import ONNX_MEDIA, Upload, check_options, read_bundle
from lockgate.registry.call import Call
from lockgate.registry.decoding import (
    bearer,
    json_body,
    query_values,
    require_json_media,
    small_body,
    spool,
    upload_media,
)
from lockgate.registry.guard import check_loopback_host, foreign_origin
from lockgate.registry.openapi import openapi_document
from lockgate.registry.operations import OPERATIONS, PREFIX, Operation, authorize, invoke

if TYPE_CHECKING:
    from lockgate.api.facade import Lockgate

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "OPERATIONS",
    "create_registry_app",
    "invoke",
    "openapi_document",
]

log = logging.getLogger("lockgate.registry")

DEFAULT_MAX_UPLOAD_BYTES = 2 << 30

Endpoint = Callable[[Request], Awaitable[Response]]


def _error(exc: Error) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.diagnostics(), "type": type(exc).__name__,
                            "hint": exc.hint}
    if isinstance(exc, GateFailedError):
        body["results"] = [r.to_dict() for r in exc.results]
    if exc.http_status >= 500:
        log.warning("%s", exc.diagnostics())
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return JSONResponse({"error": str(detail), "type": "HTTPError"}, status_code=status)


class _Registry:
    """The request handling of one registry app over ``lg``: who a request acts as, what is
    refused before any handler runs, and how each operation's answer is written."""

    def __init__(self, lg: Lockgate, *, auth: bool, max_upload_bytes: int) -> None:
        self.lg = lg
        self.auth = auth
        self.max_upload_bytes = max_upload_bytes
        self.local = Principal(lg.settings.user, frozenset(ROLES))
        self.document = openapi_document()

    def actor_of(self, request: Request) -> str:
        """Who a refused request acts as, for the audit log (never raises)."""
        if not self.auth:
            return self.local.name
        try:
            return self.lg.authenticate(bearer(request)).name
        except Error:
            return "anonymous"

    def refuse_foreign(self, request: Request, op: Operation) -> None:
        """403, audited (folded on actor and operation), for a state-changing request the
        browser says another site sent."""
        problem = foreign_origin(request)
        if problem is None:
            return
        actor = self.actor_of(request)
        payload = {"action": op.op_id, "reason": "registry refused a cross-site request"}
        if actor == "anonymous":
            payload["source"] = request.client.host if request.client else "unknown"
        self.lg.denials.record(AuditEvent(EventType.ACCESS_DENIED, actor, None, None, payload),
                               detail=f"refused {problem}")
        raise AccessDeniedError(f"refused {problem}: the registry API takes no state changes "
                                "from other sites' pages",
                                hint="call it from a script or the CLI, not from a web page")

    def endpoint(self, op: Operation) -> Endpoint:
        """The route's endpoint: ``op`` answered, every error as its JSON answer."""

        async def handle(request: Request) -> Response:
            try:
                return await self.answer(request, op)
            except Error as exc:
                return _error(exc)
            except Exception:
                log.exception("internal error in %s %s", op.method, op.path)
                return JSONResponse({"error": "internal error", "type": "InternalError"},
                                    status_code=500)

        return handle

    async def answer(self, request: Request, op: Operation) -> Response:
        """Refuse what must be refused, decode the request, check the role, run ``op``."""
        if not self.auth:
            check_loopback_host(request)
        if op.method != "GET":
            await run_in_threadpool(self.refuse_foreign, request, op)
        if op.body is not None and op.body != "upload":
            require_json_media(request)
        principal = (await run_in_threadpool(self.lg.authenticate, bearer(request))
                     if self.auth else self.local)
        call = Call(self.lg, principal, dict(request.path_params),
                    query_values(request, op.query), auth=self.auth)
        await run_in_threadpool(authorize, call, op)
        if op.body == "upload":
            return await self.upload(request, op, call)
        if op.body is not None:
            call.body = json_body(await small_body(request), op.body)
        result = await run_in_threadpool(op.handler, call)
        if isinstance(result, Response):
            return result
        return JSONResponse(result, status_code=op.status)

    async def upload(self, request: Request, op: Operation, call: Call) -> Response:
        """An ONNX file or a bundle spooled to a temporary folder, handed to ``op``, removed."""
        media = upload_media(request)
        tmp = Path(tempfile.mkdtemp(prefix="lockgate-upload-"))
        try:
            raw = tmp / "upload.bin"
            await spool(request, raw, self.max_upload_bytes)
            if media == ONNX_MEDIA:
                model = tmp / "model.onnx"
                raw.rename(model)
                call.upload = Upload(model=model)
            else:
                folder = tmp / "bundle"
                folder.mkdir()
                call.upload = await run_in_threadpool(read_bundle, raw, folder,
                                                      self.max_upload_bytes)
            call.query = check_options(call.query)
            result = await run_in_threadpool(op.handler, call)
            return JSONResponse(result, status_code=op.status)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    async def openapi(self, request: Request) -> Response:
        if not self.auth:
            try:
                check_loopback_host(request)
            except Error as exc:
                return _error(exc)
        return JSONResponse(self.document)

    async def health(self, request: Request) -> Response:
        if not self.auth:
            try:
                check_loopback_host(request)
            except Error as exc:
                return _error(exc)
        return JSONResponse({"ok": True})

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:  # a SIGTERM ends the process right after, before Lockgate.close
            await run_in_threadpool(self.lg.denials.flush)


def create_registry_app(lg: Lockgate, *, auth: bool = True,
                        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> Starlette:
    """The registry API over ``lg``. ``auth=False`` acts as ``lg.settings.user`` with every
    role (a single user on loopback; the CLI refuses it on other addresses)."""
    registry = _Registry(lg, auth=auth, max_upload_bytes=max_upload_bytes)
    routes = [Route("/openapi.json", registry.openapi, methods=["GET"]),
              Route(PREFIX + "/health", registry.health, methods=["GET"])]
    by_path: dict[str, list[Operation]] = {}
    for op in OPERATIONS:
        by_path.setdefault(op.path, []).append(op)
    for path, ops in by_path.items():
        for op in ops:
            routes.append(Route(path, registry.endpoint(op), methods=[op.method]))
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error},
                     lifespan=registry.lifespan)
