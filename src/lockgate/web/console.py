"""The web console (``lockgate ui``, ``lockgate serve --ui``): routes, session and actions.

Pages are GET routes under ``/ui``. Actions (approve, reject, promote, canary, weight, promote
the candidate, roll back) are POSTs that first render a confirmation page and, once confirmed,
run through the registry API's own operations (same role checks, same validation), then show
the audit events they appended. With auth on, a login form takes an API token; the session is
an HttpOnly, SameSite=Strict cookie. Without login, the console sets a random per-browser
session cookie. Every action carries a form token keyed by the home's console secret and bound
to that session, and every POST the browser marks as coming from another site is refused and
audited (see lockgate_oldweb.session): such refusals fold into one audit row per actor (and, for
anonymous ones, per client address) and action, whatever Origin they carry. Without login,
every request whose Host is not a loopback name is refused with 421 (DNS rebinding). The
console's lifespan shutdown writes the folded refusals still open. No script runs and nothing
is fetched from another host: styles are inline, charts inline SVG, and the
Content-Security-Policy says so.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from lockgate.access.identity import ROLES, Principal
from lockgate.audit import AuditEvent, AuditRecord, EventType
from lockgate.errors import (
    AccessDeniedError,
    AuthenticationError,
    Error,
    InvalidInputError,
    NotFoundError,
)
from lockgate.registry.guard import check_loopback_host
from lockgate.registry.routes import invoke
from lockgate.types import validate_name, whole_number
from lockgate.web.actions import ACTIONS, Plan, action_name, back_of, plan, read_form
from lockgate.web.live import LiveMetrics
from lockgate.web.pages import (
    Page,
    Viewer,
    audit_page,
    confirm_page,
    deployment_page,
    deployments_page,
    drift_page,
    login_page,
    message,
    model_page,
    models_page,
    render,
    result_page,
    version_page,
)
from lockgate.web.session import (
    console_secret,
    foreign_origin,
    form_token,
    new_session,
    valid_session,
)

if TYPE_CHECKING:
    from lockgate.api.facade import Lockgate

__all__ = ["ACTIONS", "MetricsSource", "attach_console", "create_ui_app", "ui_routes"]

log = logging.getLogger("lockgate.web")

MetricsSource = Callable[[], str]
"""Returns a serving process's Prometheus exposition text (for live figures)."""

_COOKIE = "lockgate_session"
_LOCAL_COOKIE = "lockgate_console"
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
_CROSS_SITE = ("console refused a cross-site request: state changes come from the console's "
               "own pages")

Endpoint = Callable[[Request], Awaitable[Response]]
Renderer = Callable[[Request, Viewer], Page]


def _html(page: Page, viewer: Viewer | None = None, status: int = 200) -> HTMLResponse:
    return HTMLResponse(render(page, viewer), status_code=status, headers={
        "Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin", "Cache-Control": "no-store"})


def _refused(exc: Error, viewer: Viewer | None = None, *, title: str = "Refused",
             back: str | None = None) -> HTMLResponse:
    """The page saying why ``exc`` refused the request, with its HTTP status."""
    return _html(message(title, exc.diagnostics(), back=back), viewer, exc.http_status)


def _internal(viewer: Viewer | None) -> HTMLResponse:
    return _html(message("Error", "internal error"), viewer, 500)


def _name_of(request: Request) -> str:
    return validate_name(str(request.path_params["name"]))


def _number_of(request: Request) -> int:
    text = str(request.path_params["number"])
    number = whole_number(text)
    if number is None or len(text) > 9:
        raise NotFoundError(f"no version {text[:32]!r}")
    return number


class _Console:
    """The console over one home: who is asking (login cookie, or the home's user with a
    per-browser session), its defences, and a handler per route."""

    def __init__(self, lg: Lockgate, *, auth: bool, metrics_source: MetricsSource | None
                 ) -> None:
        self.lg = lg
        self.auth = auth
        self.local = Principal(lg.settings.user, frozenset(ROLES))
        self.live = LiveMetrics(metrics_source) if metrics_source is not None else None
        self.lock = threading.Lock()
        self.secret = console_secret(lg.settings.home)

    def routes(self) -> list[Route]:
        h = _host_checked if not self.auth else _unchanged
        g = self.guarded
        return [
            Route("/ui", h(_to_console), methods=["GET"]),
            Route("/ui/", h(g(self.models)), methods=["GET"]),
            Route("/ui/login", h(self.login_form), methods=["GET"]),
            Route("/ui/login", h(self.login), methods=["POST"]),
            Route("/ui/logout", h(self.logout), methods=["POST"]),
            Route("/ui/models/{name}", h(g(self.model)), methods=["GET"]),
            Route("/ui/models/{name}/versions/{number}", h(g(self.version)), methods=["GET"]),
            Route("/ui/models/{name}/versions/{number}/drift", h(g(self.drift)),
                  methods=["GET"]),
            Route("/ui/models/{name}/versions/{number}/files/bom.cdx.json", h(self.bom_file),
                  methods=["GET"]),
            Route("/ui/deployments", h(g(self.deployments)), methods=["GET"]),
            Route("/ui/deployments/{name}", h(g(self.deployment)), methods=["GET"]),
            Route("/ui/audit", h(g(self.audit)), methods=["GET"]),
            Route("/ui/actions/{action}", h(self.action), methods=["POST"]),
        ]

    # -- who is asking ---------------------------------------------------------------------
    def session_of(self, request: Request) -> tuple[str, str | None]:
        """The no-login session id, and the cookie to set when the browser had none."""
        sid = request.cookies.get(_LOCAL_COOKIE)
        if valid_session(sid):
            assert sid is not None
            return sid, None
        fresh = new_session()
        return fresh, fresh

    def viewer_of(self, request: Request) -> tuple[Viewer, str | None]:
        if not self.auth:
            sid, fresh = self.session_of(request)
            return Viewer(self.local, form_token(self.secret, "local:" + sid), auth=False), fresh
        token = request.cookies.get(_COOKIE)
        if not token:
            raise AuthenticationError("log in first")
        return Viewer(self.lg.authenticate(token), form_token(self.secret, "auth:" + token),
                      auth=True), None

    @staticmethod
    def with_session(response: Response, request: Request, fresh: str | None) -> Response:
        if fresh is not None:
            response.set_cookie(_LOCAL_COOKIE, fresh, httponly=True, samesite="strict",
                                path="/ui", secure=request.url.scheme == "https")
        return response

    def actor_of(self, request: Request) -> str:
        """Who a refused request acts as, for the audit log (never raises)."""
        if not self.auth:
            return self.lg.settings.user
        try:
            return self.lg.authenticate(request.cookies.get(_COOKIE)).name
        except Error:
            return "anonymous"

    async def refuse_foreign(self, request: Request, action: str) -> Response | None:
        """403, audited, for a POST the browser says another site sent; None otherwise.
        Refusals fold on a fixed key (actor, action, and for anonymous ones the client's
        address); what the request said (its Origin) is only the run's detail."""
        problem = foreign_origin(request)
        if problem is None:
            return None

        def record() -> None:
            actor = self.actor_of(request)
            payload = {"action": action, "reason": _CROSS_SITE}
            if actor == "anonymous":
                payload["source"] = request.client.host if request.client else "unknown"
            self.lg.denials.record(AuditEvent(EventType.ACCESS_DENIED, actor, None, None,
                                              payload), detail=f"refused {problem}")

        await run_in_threadpool(record)
        return _refused(AccessDeniedError(
            f"console refused {problem}: state changes come from the console's own pages",
            hint="open the console itself and use its forms"))

    # -- pages -----------------------------------------------------------------------------
    def guarded(self, render_page: Renderer) -> Endpoint:
        """A GET handler showing ``render_page``'s page to a viewer holding some role."""

        async def handle(request: Request) -> Response:
            try:
                viewer, fresh = await run_in_threadpool(self.viewer_of, request)
            except AuthenticationError:
                return RedirectResponse("/ui/login", status_code=303)
            try:
                if not viewer.principal.can("viewer"):
                    raise AccessDeniedError(f"{viewer.principal.name!r} holds no role")
                page = await run_in_threadpool(render_page, request, viewer)
                response: Response = await run_in_threadpool(_html, page, viewer)
            except Error as exc:
                response = _refused(exc, viewer, title="Error")
            except Exception:
                log.exception("internal error in %s", request.url.path)
                response = _internal(viewer)
            return self.with_session(response, request, fresh)

        return handle

    def models(self, request: Request, viewer: Viewer) -> Page:
        return models_page(self.lg, viewer)

    def model(self, request: Request, viewer: Viewer) -> Page:
        return model_page(self.lg, viewer, _name_of(request))

    def version(self, request: Request, viewer: Viewer) -> Page:
        return version_page(self.lg, viewer, _name_of(request), _number_of(request))

    def drift(self, request: Request, viewer: Viewer) -> Page:
        return drift_page(self.lg, viewer, _name_of(request), _number_of(request))

    def deployments(self, request: Request, viewer: Viewer) -> Page:
        return deployments_page(self.lg, viewer)

    def deployment(self, request: Request, viewer: Viewer) -> Page:
        name = _name_of(request)
        figures = None
        if self.live is not None:
            with self.lock:
                figures = self.live.model(name)
        return deployment_page(self.lg, viewer, name, figures)

    def audit(self, request: Request, viewer: Viewer) -> Page:
        filters = {k: str(request.query_params.get(k, ""))[:128]
                   for k in ("model", "type", "actor")}
        return audit_page(self.lg, viewer, filters)

    async def bom_file(self, request: Request) -> Response:
        try:
            await run_in_threadpool(self.viewer_of, request)
            v = await run_in_threadpool(self.lg.get,
                                        f"{_name_of(request)}@{_number_of(request)}")
            data = await run_in_threadpool(self.lg.file_bytes, v, "bom.cdx.json")
        except AuthenticationError:
            return RedirectResponse("/ui/login", status_code=303)
        except Error as exc:
            return _refused(exc, title="Error")
        return Response(data, media_type="application/vnd.cyclonedx+json", headers={
            "Content-Disposition": f'attachment; filename="{v.name}-{v.number}.cdx.json"'})

    # -- login -----------------------------------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        if not self.auth:
            return RedirectResponse("/ui/", status_code=303)
        return _html(login_page())

    async def login(self, request: Request) -> Response:
        if (refused := await self.refuse_foreign(request, "console.login")) is not None:
            return refused
        try:
            token = (await read_form(request)).get("token", "").strip()
            await run_in_threadpool(self.lg.authenticate, token)
        except Error as exc:
            return _html(login_page(exc.message), status=401)
        response = RedirectResponse("/ui/", status_code=303)
        response.set_cookie(_COOKIE, token, httponly=True, samesite="strict", path="/ui",
                            secure=request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        if (refused := await self.refuse_foreign(request, "console.logout")) is not None:
            return refused
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(_COOKIE, path="/ui")
        return response

    # -- actions ---------------------------------------------------------------------------
    async def action(self, request: Request) -> Response:
        kind = str(request.path_params["action"])[:64]
        if (refused := await self.refuse_foreign(request, action_name(kind))) is not None:
            return refused
        try:
            viewer, fresh = await run_in_threadpool(self.viewer_of, request)
        except AuthenticationError:
            return RedirectResponse("/ui/login", status_code=303)
        if fresh is not None:  # no session cookie: no form of this browser can be valid
            viewer = replace(viewer, csrf="")
        back = "/ui/"
        try:
            fields = await read_form(request)
            await self.check_form_token(viewer, kind, fields)
            name = validate_name(fields.get("model", ""))
            back = back_of(kind, name, fields)
            planned = plan(kind, name, fields)
            if fields.get("confirm") != "yes":
                keep = {k: v for k, v in fields.items() if k not in ("csrf", "confirm")}
                return _html(confirm_page(planned, keep, back), viewer)
            events = await run_in_threadpool(self.run, viewer, planned)
            return _html(result_page(planned, events, back), viewer)
        except Error as exc:
            return _refused(exc, viewer, back=back)
        except Exception:
            log.exception("internal error in a console action")
            return _internal(viewer)

    async def check_form_token(self, viewer: Viewer, kind: str, fields: dict[str, str]
                               ) -> None:
        """Refuse (and audit) a form without the viewer's form token."""
        if viewer.csrf and hmac.compare_digest(fields.get("csrf", ""), viewer.csrf):
            return
        await run_in_threadpool(self.lg.denials.record, AuditEvent(
            EventType.ACCESS_DENIED, viewer.principal.name, None, None,
            {"action": action_name(kind),
             "reason": "console refused a form whose token is missing or wrong"}))
        raise InvalidInputError("the form is stale or forged: reload the page")

    def run(self, viewer: Viewer, planned: Plan) -> list[AuditRecord]:
        """Run ``planned`` through the registry API as ``viewer``; the audit events it
        appended."""
        before = self.lg.audit_seq()
        invoke(self.lg, viewer.principal, planned.operation, planned.params, planned.body)
        return list(self.lg.audit_after(before, model=planned.model))


async def _to_console(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=307)


def ui_routes(lg: Lockgate, *, auth: bool = True,
              metrics_source: MetricsSource | None = None) -> list[Route]:
    """The console's routes (all under ``/ui``), to serve alone or beside the OIP routes."""
    return _Console(lg, auth=auth, metrics_source=metrics_source).routes()


def _unchanged(handler: Endpoint) -> Endpoint:
    return handler


def _host_checked(handler: Endpoint) -> Endpoint:
    """``handler``, answering 421 first to a request whose Host is not a loopback name (the
    no-login console: a page re-pointed at 127.0.0.1 by DNS reads and changes nothing)."""

    async def handle(request: Request) -> Response:
        try:
            check_loopback_host(request)
        except Error as exc:
            return _refused(exc)
        return await handler(request)

    return handle


def _flushing(lg: Lockgate, inner: Callable[[Starlette], Any]
              ) -> Callable[[Starlette], Any]:
    """A lifespan around ``inner`` that writes the folded refusals still open at shutdown
    (a SIGTERM ends the process right after it, before ``Lockgate.close``)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[Any]:
        try:
            async with inner(app) as state:
                yield state
        finally:
            await run_in_threadpool(lg.denials.flush)

    return lifespan


@asynccontextmanager
async def _nothing(app: Starlette) -> AsyncIterator[None]:
    yield


def attach_console(app: Starlette, lg: Lockgate, *, auth: bool = True,
                   metrics_source: MetricsSource | None = None) -> None:
    """Add the console's routes to ``app`` (``lockgate serve --ui``), and to its lifespan
    shutdown the writing of the folded refusals still open."""
    app.router.routes.extend(ui_routes(lg, auth=auth, metrics_source=metrics_source))
    app.router.lifespan_context = _flushing(lg, app.router.lifespan_context)


def create_ui_app(lg: Lockgate, *, auth: bool = True,
                  metrics_source: MetricsSource | None = None) -> Starlette:
    """The console alone (``lockgate ui``)."""

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return _html(message("Not found" if status == 404 else "Error",
                             str(getattr(exc, "detail", "error"))), status=status)

    return Starlette(routes=[Route("/", _to_console if auth else _host_checked(_to_console),
                                   methods=["GET"]),
                             *ui_routes(lg, auth=auth, metrics_source=metrics_source)],
                     exception_handlers={HTTPException: not_found},
                     lifespan=_flushing(lg, _nothing))
