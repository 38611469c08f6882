"""The web console (``lockgate ui``, ``lockgate serve --ui``): routes, session and actions.

Pages are GET routes under ``/ui``. Actions (approve, reject, promote, canary, weight, promote
the candidate, roll back) are POSTs that first render a confirmation page and, once confirmed,
run through the registry API's own operations (same role checks, same validation), then show
the audit events they appended. With auth on, a login form takes an API token; the session is
an HttpOnly, SameSite=Strict cookie. Without login, the console sets a random per-browser
session cookie. Every action carries a form token keyed by the home's console secret and bound
to that session, and every POST the browser marks as coming from another site is refused and
audited (see lockgate.web.session): such refusals fold into one audit row per actor (and, for
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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from lockgate.access.identity import ROLES, Principal
from lockgate.audit import AuditEvent, EventType
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
from lockgate.web import pages
from lockgate.web.live import LiveMetrics
from lockgate.web.report import esc
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
_MAX_FORM = 64 << 10
ACTIONS = ("approve", "promote", "canary", "weight", "promote-candidate", "rollback")
"""The console's actions (``POST /ui/actions/NAME``)."""
_CROSS_SITE = ("console refused a cross-site request: state changes come from the console's "
               "own pages")

Endpoint = Callable[[Request], Awaitable[Response]]


def _action_name(kind: str) -> str:
    """The audited name of an action: one of :data:`ACTIONS`, else ``console.unknown``."""
    return f"console.{kind if kind in ACTIONS else 'unknown'}"


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers={
        "Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin", "Cache-Control": "no-store"})


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise InvalidInputError("the form is too large")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidInputError("the form is not UTF-8") from None
    return {k: v[-1] for k, v in parsed.items()}


def _int(fields: Mapping[str, str], key: str) -> int:
    number = whole_number(fields.get(key, ""))
    if number is None:
        raise InvalidInputError(f"{key} must be a whole number")
    return number


def ui_routes(lg: Lockgate, *, auth: bool = True,
              metrics_source: MetricsSource | None = None) -> list[Route]:
    """The console's routes (all under ``/ui``), to serve alone or beside the OIP routes."""
    local = Principal(lg.settings.user, frozenset(ROLES))
    live = LiveMetrics(metrics_source) if metrics_source is not None else None
    lock = threading.Lock()
    secret = console_secret(lg.settings.home)

    def session_of(request: Request) -> tuple[str, str | None]:
        """The no-login session id, and the cookie to set when the browser had none."""
        sid = request.cookies.get(_LOCAL_COOKIE)
        if valid_session(sid):
            assert sid is not None
            return sid, None
        fresh = new_session()
        return fresh, fresh

    def viewer_of(request: Request) -> tuple[pages.Viewer, str | None]:
        if not auth:
            sid, fresh = session_of(request)
            return pages.Viewer(local, form_token(secret, "local:" + sid), auth=False), fresh
        token = request.cookies.get(_COOKIE)
        if not token:
            raise AuthenticationError("log in first")
        return pages.Viewer(lg.authenticate(token), form_token(secret, "auth:" + token),
                            auth=True), None

    def with_session(response: Response, request: Request, fresh: str | None) -> Response:
        if fresh is not None:
            response.set_cookie(_LOCAL_COOKIE, fresh, httponly=True, samesite="strict",
                                path="/ui", secure=request.url.scheme == "https")
        return response

    def actor_of(request: Request) -> str:
        """Who a refused request acts as, for the audit log (never raises)."""
        if not auth:
            return lg.settings.user
        try:
            return lg.authenticate(request.cookies.get(_COOKIE)).name
        except Error:
            return "anonymous"

    async def refuse_foreign(request: Request, action: str) -> Response | None:
        """403, audited, for a POST the browser says another site sent; None otherwise.
        Refusals fold on a fixed key (actor, action, and for anonymous ones the client's
        address); what the request said (its Origin) is only the run's detail."""
        problem = foreign_origin(request)
        if problem is None:
            return None

        def record() -> None:
            actor = actor_of(request)
            payload = {"action": action, "reason": _CROSS_SITE}
            if actor == "anonymous":
                payload["source"] = request.client.host if request.client else "unknown"
            lg.denials.record(AuditEvent(EventType.ACCESS_DENIED, actor, None, None, payload),
                              detail=f"refused {problem}")

        await run_in_threadpool(record)
        err = AccessDeniedError(f"console refused {problem}: state changes come from the "
                                "console's own pages",
                                hint="open the console itself and use its forms")
        return _html(pages.page("Refused", "", None, flash=esc(err.diagnostics()),
                                error=True), err.http_status)

    def guarded(render: Callable[[Request, pages.Viewer], tuple[str, str]]
                ) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            try:
                viewer, fresh = await run_in_threadpool(viewer_of, request)
            except AuthenticationError:
                return RedirectResponse("/ui/login", status_code=303)
            try:
                if not viewer.principal.can("viewer"):
                    raise AccessDeniedError(f"{viewer.principal.name!r} holds no role")
                title, body = await run_in_threadpool(render, request, viewer)
                response = _html(pages.page(title, body, viewer))
            except Error as exc:
                response = _html(pages.page("Error", "", viewer, flash=esc(exc.diagnostics()),
                                            error=True), exc.http_status)
            except Exception:
                log.exception("internal error in %s", request.url.path)
                response = _html(pages.page("Error", "", viewer, flash="internal error",
                                            error=True), 500)
            return with_session(response, request, fresh)

        return handle

    def name_of(request: Request) -> str:
        return validate_name(str(request.path_params["name"]))

    def number_of(request: Request) -> int:
        text = str(request.path_params["number"])
        number = whole_number(text)
        if number is None or len(text) > 9:
            raise NotFoundError(f"no version {text[:32]!r}")
        return number

    def models(request: Request, viewer: pages.Viewer) -> tuple[str, str]:
        return "Models", pages.models_page(lg, viewer)

    def model(request: Request, viewer: pages.Viewer) -> tuple[str, str]:
        name = name_of(request)
        return name, pages.model_page(lg, viewer, name)

    def version(request: Request, viewer: pages.Viewer) -> tuple[str, str]:
        name, number = name_of(request), number_of(request)
        return f"{name}@{number}", pages.version_page(lg, viewer, name, number)

    def drift(request: Request, viewer: pages.Viewer) -> tuple[str, str]:
        name, number = name_of(request), number_of(request)
        return f"Drift of {name}@{number}", pages.drift_page(lg, viewer, name, number)

    def deployments(request: Request, viewer: pages.Viewer) -> tuple[str, str]:
        return "Deployments", pages.deployments_page(lg, viewer)

    def deployment(request: Request, viewer: pages.Viewer) -> tuple[str, str]:
        name = name_of(request)
        figures = None
        if live is not None:
            with lock:
                figures = live.model(name)
        return f"Deployment of {name}", pages.deployment_page(lg, viewer, name, figures)

    def audit(request: Request, viewer: pages.Viewer) -> tuple[str, str]:
        filters = {k: str(request.query_params.get(k, ""))[:128]
                   for k in ("model", "type", "actor")}
        return "Audit trail", pages.audit_page(lg, viewer, filters)

    async def bom_file(request: Request) -> Response:
        try:
            await run_in_threadpool(viewer_of, request)
            v = await run_in_threadpool(lg.get, f"{name_of(request)}@{number_of(request)}")
            data = await run_in_threadpool(lg.file_bytes, v, "bom.cdx.json")
        except AuthenticationError:
            return RedirectResponse("/ui/login", status_code=303)
        except Error as exc:
            return _html(pages.page("Error", "", None, flash=esc(exc.diagnostics()),
                                    error=True), exc.http_status)
        return Response(data, media_type="application/vnd.cyclonedx+json", headers={
            "Content-Disposition": f'attachment; filename="{v.name}-{v.number}.cdx.json"'})

    async def login_form(request: Request) -> Response:
        if not auth:
            return RedirectResponse("/ui/", status_code=303)
        return _html(pages.page("lockgate", pages.login_page(), None))

    async def login(request: Request) -> Response:
        if (refused := await refuse_foreign(request, "console.login")) is not None:
            return refused
        try:
            token = (await _form(request)).get("token", "").strip()
            await run_in_threadpool(lg.authenticate, token)
        except Error as exc:
            return _html(pages.page("lockgate", pages.login_page(exc.message), None), 401)
        response = RedirectResponse("/ui/", status_code=303)
        response.set_cookie(_COOKIE, token, httponly=True, samesite="strict", path="/ui",
                            secure=request.url.scheme == "https")
        return response

    async def logout(request: Request) -> Response:
        if (refused := await refuse_foreign(request, "console.logout")) is not None:
            return refused
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(_COOKIE, path="/ui")
        return response

    async def action(request: Request) -> Response:
        kind = str(request.path_params["action"])[:64]
        if (refused := await refuse_foreign(request, _action_name(kind))) is not None:
            return refused
        try:
            viewer, fresh = await run_in_threadpool(viewer_of, request)
        except AuthenticationError:
            return RedirectResponse("/ui/login", status_code=303)
        if fresh is not None:  # no session cookie: no form of this browser can be valid
            viewer = replace(viewer, csrf="")
        back = "/ui/"
        try:
            fields = await _form(request)
            if not viewer.csrf or not hmac.compare_digest(fields.get("csrf", ""), viewer.csrf):
                await run_in_threadpool(lg.denials.record, AuditEvent(
                    EventType.ACCESS_DENIED, viewer.principal.name, None, None,
                    {"action": _action_name(kind),
                     "reason": "console refused a form whose token is missing or wrong"}))
                raise InvalidInputError("the form is stale or forged: reload the page")
            name = validate_name(fields.get("model", ""))
            back = (pages.version_path(name, _int(fields, "version"))
                    if kind in ("approve", "promote") else f"/ui/deployments/{quote(name)}")
            op, path, body, summary = _plan(kind, name, fields)
            if fields.get("confirm") != "yes":
                keep = {k: v for k, v in fields.items() if k not in ("csrf", "confirm")}
                return _html(pages.page("Confirm", pages.confirm_page(
                    viewer, kind, summary, keep, back), viewer))

            def run() -> list[Any]:
                before = lg.audit_seq()
                invoke(lg, viewer.principal, op, path, body)
                return lg.audit_after(before, model=name)

            events = await run_in_threadpool(run)
            return _html(pages.page("Done", pages.result_page(summary, events, back), viewer))
        except Error as exc:
            return _html(pages.page("Refused", f"<p><a href='{esc(back)}'>Back</a></p>", viewer,
                                    flash=esc(exc.diagnostics()), error=True),
                         exc.http_status)
        except Exception:
            log.exception("internal error in a console action")
            return _html(pages.page("Error", "", viewer, flash="internal error", error=True),
                         500)

    async def root(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    h = _host_checked if not auth else _unchanged
    return [
        Route("/ui", h(root), methods=["GET"]),
        Route("/ui/", h(guarded(models)), methods=["GET"]),
        Route("/ui/login", h(login_form), methods=["GET"]),
        Route("/ui/login", h(login), methods=["POST"]),
        Route("/ui/logout", h(logout), methods=["POST"]),
        Route("/ui/models/{name}", h(guarded(model)), methods=["GET"]),
        Route("/ui/models/{name}/versions/{number}", h(guarded(version)), methods=["GET"]),
        Route("/ui/models/{name}/versions/{number}/drift", h(guarded(drift)),
              methods=["GET"]),
        Route("/ui/models/{name}/versions/{number}/files/bom.cdx.json", h(bom_file),
              methods=["GET"]),
        Route("/ui/deployments", h(guarded(deployments)), methods=["GET"]),
        Route("/ui/deployments/{name}", h(guarded(deployment)), methods=["GET"]),
        Route("/ui/audit", h(guarded(audit)), methods=["GET"]),
        Route("/ui/actions/{action}", h(action), methods=["POST"]),
    ]


def _unchanged(handler: Endpoint) -> Endpoint:
    return handler


def _host_checked(handler: Endpoint) -> Endpoint:
    """``handler``, answering 421 first to a request whose Host is not a loopback name (the
    no-login console: a page re-pointed at 127.0.0.1 by DNS reads and changes nothing)."""

    async def handle(request: Request) -> Response:
        try:
            check_loopback_host(request)
        except Error as exc:
            return _html(pages.page("Refused", "", None, flash=esc(exc.diagnostics()),
                                    error=True), exc.http_status)
        return await handler(request)

    return handle


def _plan(kind: str, name: str, f: Mapping[str, str]
          ) -> tuple[str, dict[str, str], dict[str, Any] | None, str]:
    """The registry operation an action runs: (operation id, path, body, summary)."""
    m = esc(name)
    if kind == "approve":
        n = _int(f, "version")
        decision = f.get("decision", "approve")
        if decision not in ("approve", "reject"):
            raise InvalidInputError("decision must be approve or reject")
        op = "approveVersion" if decision == "approve" else "rejectVersion"
        body: dict[str, Any] = {"stage": f.get("stage", ""), "comment": f.get("comment", "")}
        return (op, {"name": name, "ref": str(n)}, body,
                f"{'Approve' if decision == 'approve' else 'Reject'} <strong>{m}@{n}</strong> "
                f"for stage <strong>{esc(body['stage'])}</strong>"
                + (f" with comment “{esc(body['comment'])}”" if body["comment"] else "") + ".")
    if kind == "promote":
        n = _int(f, "version")
        to = f.get("to", "")
        return ("promoteVersion", {"name": name, "ref": str(n)}, {"to": to},
                f"Promote <strong>{m}@{n}</strong> to <strong>{esc(to)}</strong> through its "
                "gates.")
    if kind == "canary":
        n, w = _int(f, "version"), _int(f, "weight")
        return ("deploy", {"name": name}, {"version": n, "canary": w},
                f"Start <strong>{m}@{n}</strong> as the canary taking <strong>{w}%</strong> "
                "of traffic.")
    if kind == "weight":
        w = _int(f, "weight")
        return ("setCanaryWeight", {"name": name}, {"weight": w},
                f"Move the canary of <strong>{m}</strong> to <strong>{w}%</strong>.")
    if kind == "promote-candidate":
        return ("promoteCandidate", {"name": name}, None,
                f"Make the candidate of <strong>{m}</strong> the stable version.")
    if kind == "rollback":
        reason = f.get("reason", "")
        return ("rollback", {"name": name}, {"reason": reason},
                f"Roll back <strong>{m}</strong>"
                + (f" because “{esc(reason)}”" if reason else "") + ".")
    raise NotFoundError(f"no action {kind!r}")


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
        return _html(pages.page("Not found" if status == 404 else "Error", "", None,
                                flash=esc(str(getattr(exc, "detail", "error"))), error=True),
                     status)

    async def home(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    return Starlette(routes=[Route("/", home if auth else _host_checked(home),
                                   methods=["GET"]),
                             *ui_routes(lg, auth=auth, metrics_source=metrics_source)],
                     exception_handlers={HTTPException: not_found},
                     lifespan=_flushing(lg, _nothing))
