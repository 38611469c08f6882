"""The registry HTTP API: every registry operation the CLI offers, with tokens and roles.

Every route is declared once in ``OPERATIONS`` (method, path, role, body and response schema);
the router, the role checks and the OpenAPI 3.1 document at ``/openapi.json`` all come from it.
Errors are JSON ``{"error", "type", "hint"}`` with the error's HTTP status (401 without a valid
token, 403 without the role); no traceback reaches the client. Requests authenticate with
``Authorization: Bearer lgt_...``; the token is never logged or echoed. With ``auth=False``
(loopback only, a single user) every request acts as the home's user with every role, and is
served only when its ``Host`` is a loopback name (421 otherwise: DNS rebinding). Whatever the
mode, a state-changing request a browser marks as sent by another site is refused (403,
audited), and a JSON body must come as ``Content-Type: application/json`` (415 otherwise), which
no cross-site form or ``no-cors`` fetch can send (see :mod:`lockgate.registry.guard`). The
lifespan shutdown writes the folded refusals still open.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import shutil
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lockgate.access.identity import ROLES, Principal
from lockgate.audit import AuditEvent, EventType
from lockgate.errors import (
    AccessDeniedError,
    Error,
    GateFailedError,
    InvalidInputError,
    NotFoundError,
)
from lockgate.registry.bundle import (
    MAX_JSON_BYTES,
    Upload,
    check_options,
    load_json,
    read_bundle,
)
from lockgate.registry.guard import check_loopback_host, foreign_origin
from lockgate.registry.schemas import NAME_PATTERN, SCHEMAS, ref
from lockgate.types import ModelRef, validate_name, whole_number

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
_PREFIX = "/api/v1"
_ONNX = "application/octet-stream"
_TAR = ("application/x-tar", "application/gzip", "application/x-gtar")
_VALIDATORS = {name: jsonschema.Draft202012Validator(schema)
               for name, schema in SCHEMAS.items() if name.endswith("Request")}


class _PayloadTooLargeError(InvalidInputError):
    http_status = 413


class _UnsupportedMediaError(InvalidInputError):
    http_status = 415


@dataclass(frozen=True)
class Param:
    name: str
    kind: type
    description: str
    minimum: int | None = None
    maximum: int | None = None
    repeated: bool = False


@dataclass
class Call:
    """One request, decoded: who, the path and query parameters, the JSON body or upload."""

    lg: Lockgate
    principal: Principal
    path: dict[str, str]
    query: dict[str, Any]
    body: dict[str, Any] = field(default_factory=dict)
    upload: Upload | None = None
    auth: bool = True

    @property
    def actor(self) -> str:
        return self.principal.name

    @property
    def model(self) -> str:
        return validate_name(self.path["name"])

    def ref(self) -> ModelRef:
        sel = self.path["ref"]
        if sel == "latest":
            return ModelRef(self.model)
        number = whole_number(sel)
        return ModelRef(self.model, number if number is not None else validate_name(sel))

    def require(self, role: str, model: str | None = None, action: str = "") -> None:
        if not self.principal.can(role, model):
            problem = f"{self.actor!r} does not hold the {role!r} role" + (
                f" for model {model!r}" if model else "")
            self.lg.denials.record(AuditEvent(
                EventType.ACCESS_DENIED, self.actor, model, None,
                {"action": action, "reason": problem}))
            raise AccessDeniedError(problem, hint="an admin grants roles with "
                                                  "`lockgate user add NAME --role ROLE`")


Handler = Callable[[Call], Any]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    op_id: str
    summary: str
    role: str
    handler: Handler
    tag: str
    body: str | None = None
    """A request schema name, or "upload" for an ONNX file or bundle."""
    response: str | None = None
    status: int = 200
    media: str = "application/json"
    query: tuple[Param, ...] = ()
    model_scoped: bool = True
    role_by_body: bool = False
    """The handler checks the role itself, from the body (a promotion's target stage)."""


# -- handlers ----------------------------------------------------------------------------------
def _whoami(c: Call) -> dict[str, Any]:
    return {**c.principal.to_dict(), "auth": c.auth}


def _models(c: Call) -> list[dict[str, Any]]:
    return [s.to_dict() for s in c.lg.models()]


def _versions(c: Call) -> list[dict[str, Any]]:
    found = c.lg.versions(c.model)
    if not found:
        raise NotFoundError(f"no model named {c.model!r}")
    offset, limit = c.query.get("offset", 0), c.query.get("limit", 1000)
    return [v.to_dict() for v in found[offset:offset + limit]]


def _show(c: Call) -> dict[str, Any]:
    v = c.lg.get(c.ref())
    runs, decisions = c.lg.version_runs(v)  # v is resolved: no second look-up
    return {**v.to_dict(), "gate_runs": [dict(r.__dict__) for r in runs],
            "decisions": [d.to_dict() for d in decisions]}


def _register(c: Call) -> dict[str, Any]:
    assert c.upload is not None
    opts = {**c.upload.options, **c.query}
    v = c.lg.register(
        str(c.upload.model), None, name=c.model, creator=c.actor,
        description=str(opts.get("description", "")), tags=opts.get("tags"),
        metrics=opts.get("metrics"), seed=opts.get("seed"), seeds=opts.get("seeds"),
        atol=opts.get("atol"), rtol=opts.get("rtol"),
        considerations=str(opts.get("considerations", "")),
        datasets=opts.get("datasets", ()), lock_file=c.upload.lock_file,
        reference=c.upload.reference,
    )
    return v.to_dict()


def _history(c: Call) -> dict[str, Any]:
    return c.lg.history(c.model)


def _aliases(c: Call) -> dict[str, int]:
    if not c.lg.versions(c.model):
        raise NotFoundError(f"no model named {c.model!r}")
    return c.lg.aliases(c.model)


def _set_alias(c: Call) -> dict[str, Any]:
    alias = validate_name(c.path["alias"])
    c.lg.set_alias(c.model, alias, int(c.body["version"]), actor=c.actor)
    return {"model": c.model, "alias": alias, "version": int(c.body["version"])}


def _remove_alias(c: Call) -> dict[str, Any]:
    alias = validate_name(c.path["alias"])
    c.lg.set_alias(c.model, alias, None, actor=c.actor)
    return {"model": c.model, "alias": alias, "version": None}


def _promote_role(c: Call, to: str) -> None:
    """Developers promote up to the serving stage; into it and beyond takes a deployer."""
    stages = list(c.lg.settings.stages)
    serving = c.lg.serving_stage
    late = to in stages and stages.index(to) >= stages.index(serving)
    c.require("deployer" if late else "developer", c.model, action="promoteVersion")


def _promote(c: Call) -> dict[str, Any]:
    to = str(c.body["to"])
    _promote_role(c, to)
    r = c.lg.promote(c.ref(), to, actor=c.actor, run_all=bool(c.body.get("run_all", False)))
    moved = replace(r.version, stage=r.to_stage)
    return {"model": moved.name, "version": moved.to_dict(), "from": r.from_stage,
            "to": r.to_stage, "gates": [g.to_dict() for g in r.results],
            "retired": list(r.retired), "alias": r.alias}


def _gates(c: Call) -> dict[str, Any]:
    to = str(c.body["to"])
    v = c.lg.get(c.ref())
    results = c.lg.check_gates(v.ref, to, actor=c.actor,
                               run_all=bool(c.body.get("run_all", True)))
    return {"model": f"{v.name}@{v.number}", "to": to, "passed": all(r.ok for r in results),
            "gates": [r.to_dict() for r in results]}


def _approve(c: Call) -> dict[str, Any]:
    return c.lg.approve(c.ref(), str(c.body["stage"]), comment=str(c.body.get("comment", "")),
                        actor=c.actor).to_dict()


def _reject(c: Call) -> dict[str, Any]:
    return c.lg.reject(c.ref(), str(c.body["stage"]), comment=str(c.body["comment"]),
                       actor=c.actor).to_dict()


def _waive(c: Call) -> dict[str, Any]:
    try:
        until = date.fromisoformat(str(c.body["expires"]))
    except ValueError:
        raise InvalidInputError(f"expires {c.body['expires']!r} is not a date") from None
    return c.lg.waive(c.ref(), str(c.body["stage"]), str(c.body["gate"]),
                      reason=str(c.body["reason"]), expires=until, actor=c.actor).to_dict()


def _evidence(c: Call) -> Response:
    with tempfile.TemporaryDirectory(prefix="lockgate-evidence-") as tmp:
        folder = c.lg.export_evidence(c.ref(), Path(tmp) / "evidence", actor=c.actor)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(folder).as_posix())
    v = c.lg.get(c.ref())
    return Response(buf.getvalue(), media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{v.name}-{v.number}-evidence.zip"'})


def _model_file(c: Call) -> Response:
    v = c.lg.get(c.ref())
    return Response(c.lg.model_bytes(v), media_type=_ONNX, headers={
        "Content-Disposition": f'attachment; filename="{v.name}-{v.number}.onnx"',
        "Digest-SHA256": str(v.digest)})


def _vulnerabilities(c: Call) -> dict[str, Any]:
    return c.lg.vulnerability_report(c.ref()).to_dict()


def _deployments(c: Call) -> dict[str, Any]:
    return {n: d.to_dict() for n, d in c.lg.deployments().items()}


def _deployment(c: Call) -> dict[str, Any]:
    found = c.lg.deployments().get(c.model)
    if found is None:
        raise NotFoundError(f"model {c.model!r} has no deployment",
                            hint="it has no version in the serving stage and none deployed")
    return found.to_dict()


def _deploy(c: Call) -> dict[str, Any]:
    target = ModelRef(c.model, int(c.body["version"]))
    return c.lg.deploy(target, canary=c.body.get("canary"),
                       shadow=bool(c.body.get("shadow", False)),
                       analysis=c.body.get("analysis"), actor=c.actor).to_dict()


def _weight(c: Call) -> dict[str, Any]:
    return c.lg.set_canary_weight(c.model, int(c.body["weight"]), actor=c.actor).to_dict()


def _promote_candidate(c: Call) -> dict[str, Any]:
    return c.lg.promote_candidate(c.model, actor=c.actor).to_dict()


def _batching(c: Call) -> dict[str, Any]:
    return c.lg.set_batching(c.model, c.body["batching"], actor=c.actor).to_dict()


def _rollback(c: Call) -> dict[str, Any]:
    return c.lg.rollback(c.model, actor=c.actor,
                         reason=str(c.body.get("reason", ""))).to_dict()


def _audit(c: Call) -> dict[str, Any]:
    model = c.query.get("model")
    if model is not None:
        validate_name(model)
    after, limit = c.query.get("after", 0), c.query.get("limit", 1000)
    records = [r for r in c.lg.audit_log(model=model) if r.seq > after]
    page = records[:limit]
    return {"events": [r.to_dict() for r in page],
            "next_after": page[-1].seq if len(records) > limit else None}


def _audit_verify(c: Call) -> dict[str, Any]:
    return c.lg.audit_verify().to_dict()


def _users(c: Call) -> list[dict[str, Any]]:
    return [u.to_dict() for u in c.lg.users()]


def _put_user(c: Call) -> dict[str, Any]:
    grants = [(str(g["model"]), str(g["role"])) for g in c.body.get("grants", [])]
    return c.lg.add_user(str(c.body["name"]), list(c.body["roles"]), grants=grants,
                         disabled=bool(c.body.get("disabled", False)),
                         actor=c.actor).to_dict()


def _new_token(c: Call) -> dict[str, Any]:
    user = validate_name(c.path["user"])
    row, token = c.lg.create_token(user, description=str(c.body.get("description", "")),
                                   days=c.body.get("days"), actor=c.actor)
    return {**row.to_dict(), "token": token}


def _tokens(c: Call) -> list[dict[str, Any]]:
    user = c.query.get("user")
    return [t.to_dict() for t in c.lg.tokens(validate_name(user) if user else None)]


def _revoke_token(c: Call) -> dict[str, Any]:
    token_id = c.path["token_id"]
    if not re.fullmatch(r"[0-9a-f]{12}", token_id):
        raise NotFoundError(f"no token {token_id!r}")
    return c.lg.revoke_token(token_id, actor=c.actor).to_dict()


_M = _PREFIX + "/models/{name}"
_V = _M + "/versions/{ref}"
_D = _PREFIX + "/deployments/{name}"
_PAGE = (Param("offset", int, "Skip this many.", minimum=0),
         Param("limit", int, "At most this many (default 1000).", minimum=1, maximum=10000))

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", _PREFIX + "/whoami", "whoami", "Who the token acts as", "viewer",
              _whoami, "identity", response="Principal", model_scoped=False),
    Operation("GET", _PREFIX + "/models", "listModels", "List models", "viewer", _models,
              "models", response="ModelSummary[]", model_scoped=False),
    Operation("GET", _M + "/versions", "listVersions", "List a model's versions", "viewer",
              _versions, "models", response="Version[]", query=_PAGE),
    Operation("POST", _M + "/versions", "registerVersion",
              "Register an uploaded ONNX file or bundle as a new version", "developer",
              _register, "models", body="upload", response="Version", status=201,
              query=(Param("description", str, "Free text stored with the version."),
                     Param("seed", int, "Training seed, recorded."),
                     Param("atol", float, "Parity absolute tolerance."),
                     Param("rtol", float, "Parity relative tolerance."),
                     Param("considerations", str, "Known limitations, for the model card."))),
    Operation("GET", _V, "showVersion", "One version, its gate runs and decisions", "viewer",
              _show, "models", response="VersionDetail"),
    Operation("GET", _M + "/history", "modelHistory",
              "Which version held each stage and alias, and when", "viewer", _history,
              "models", response="History"),
    Operation("GET", _M + "/aliases", "listAliases", "A model's aliases", "viewer", _aliases,
              "aliases", response="Aliases"),
    Operation("PUT", _M + "/aliases/{alias}", "setAlias", "Point an alias at a version",
              "developer", _set_alias, "aliases", body="AliasRequest", response="AliasChange"),
    Operation("DELETE", _M + "/aliases/{alias}", "removeAlias", "Remove an alias",
              "developer", _remove_alias, "aliases", response="AliasChange"),
    Operation("POST", _V + "/promote", "promoteVersion",
              "Run the transition's gates and move the version (deployer role for the "
              "serving stage and later)", "developer", _promote, "promotion",
              body="PromoteRequest", response="Promotion", role_by_body=True),
    Operation("POST", _V + "/gates", "checkGates",
              "Evaluate the transition's gates without moving anything", "developer", _gates,
              "promotion", body="PromoteRequest", response="GateReport"),
    Operation("POST", _V + "/approve", "approveVersion", "Approve a version for a stage",
              "approver", _approve, "promotion", body="ApproveRequest", response="Decision"),
    Operation("POST", _V + "/reject", "rejectVersion", "Reject a version for a stage",
              "approver", _reject, "promotion", body="RejectRequest", response="Decision"),
    Operation("POST", _V + "/waive", "waiveGate", "Waive a failing gate until a date",
              "approver", _waive, "promotion", body="WaiveRequest", response="Decision"),
    Operation("GET", _V + "/evidence", "downloadEvidence",
              "The version's evidence pack as a zip", "viewer", _evidence, "evidence",
              media="application/zip"),
    Operation("GET", _V + "/model", "downloadModel",
              "The version's ONNX file, after verifying its signature and digest", "viewer",
              _model_file, "evidence", media=_ONNX),
    Operation("GET", _V + "/vulnerabilities", "scanVersion",
              "Vulnerabilities of the version's packages (offline snapshot)", "viewer",
              _vulnerabilities, "evidence", response="VulnerabilityReport"),
    Operation("GET", _PREFIX + "/deployments", "listDeployments", "Every deployment",
              "viewer", _deployments, "deployments", response="Deployments",
              model_scoped=False),
    Operation("GET", _D, "showDeployment", "One model's deployment", "viewer", _deployment,
              "deployments", response="Deployment"),
    Operation("POST", _D, "deploy",
              "Blue/green switch to a version, or start a canary or shadow", "deployer",
              _deploy, "deployments", body="DeployRequest", response="Deployment"),
    Operation("POST", _D + "/weight", "setCanaryWeight", "Change the candidate's weight",
              "deployer", _weight, "deployments", body="WeightRequest", response="Deployment"),
    Operation("POST", _D + "/promote-candidate", "promoteCandidate",
              "Make the candidate the stable version", "deployer", _promote_candidate,
              "deployments", response="Deployment"),
    Operation("PUT", _D + "/batching", "setBatching", "Set or clear dynamic batching",
              "deployer", _batching, "deployments", body="BatchingRequest",
              response="Deployment"),
    Operation("POST", _D + "/rollback", "rollback",
              "Drop the canary, or return to the previous stable version", "deployer",
              _rollback, "deployments", body="RollbackRequest", response="Deployment"),
    Operation("GET", _PREFIX + "/audit", "auditLog", "Audit events, oldest first", "viewer",
              _audit, "audit", response="AuditPage", model_scoped=False,
              query=(Param("model", str, "Only this model's events."),
                     Param("after", int, "Only events after this sequence number.",
                           minimum=0),
                     Param("limit", int, "At most this many (default 1000).", minimum=1,
                           maximum=10000))),
    Operation("GET", _PREFIX + "/audit/verify", "auditVerify", "Recompute the hash chain",
              "viewer", _audit_verify, "audit", response="ChainReport", model_scoped=False),
    Operation("GET", _PREFIX + "/users", "listUsers", "Users", "admin", _users, "identity",
              response="User[]", model_scoped=False),
    Operation("POST", _PREFIX + "/users", "putUser", "Create a user or replace its roles",
              "admin", _put_user, "identity", body="UserRequest", response="User",
              model_scoped=False),
    Operation("POST", _PREFIX + "/users/{user}/tokens", "createToken",
              "A new API token (shown once)", "admin", _new_token, "identity",
              body="TokenRequest", response="NewToken", status=201, model_scoped=False),
    Operation("GET", _PREFIX + "/tokens", "listTokens", "Tokens (never their secrets)",
              "admin", _tokens, "identity", response="Token[]", model_scoped=False,
              query=(Param("user", str, "Only this user's tokens."),)),
    Operation("DELETE", _PREFIX + "/tokens/{token_id}", "revokeToken", "Revoke a token",
              "admin", _revoke_token, "identity", response="Token", model_scoped=False),
)


_BY_ID = {op.op_id: op for op in OPERATIONS}


def _authorize(call: Call, op: Operation) -> None:
    """The operation's role check (for the model in the path, when there is one); a
    promotion checks its own, by target stage."""
    if not op.role_by_body:
        scope = call.model if op.model_scoped and "name" in call.path else None
        call.require(op.role, scope, op.op_id)


def invoke(lg: Lockgate, principal: Principal, op_id: str, path: dict[str, str],
           body: dict[str, Any] | None = None) -> Any:
    """Run one JSON operation as ``principal``, with the same role checks and body
    validation as over HTTP (the web console's actions go through here). Blocking."""
    op = _BY_ID[op_id]
    call = Call(lg, principal, dict(path), {})
    _authorize(call, op)
    if op.body is not None and op.body != "upload":
        call.body = _json_body(json.dumps(body or {}).encode(), op.body)
    return op.handler(call)


# -- decoding ----------------------------------------------------------------------------------
def _query(request: Request, op: Operation) -> dict[str, Any]:
    known = {p.name: p for p in op.query}
    out: dict[str, Any] = {}
    for key in request.query_params:
        if key not in known:
            raise InvalidInputError(f"unknown query parameter {key!r}",
                                    hint=f"parameters: {sorted(known) or 'none'}")
    for p in op.query:
        text = request.query_params.get(p.name)
        if text is None:
            continue
        value = _query_value(p, text)
        if (p.minimum is not None and value < p.minimum) or (
                p.maximum is not None and value > p.maximum):
            raise InvalidInputError(f"query parameter {p.name!r} is out of range")
        out[p.name] = value
    return out


def _query_value(p: Param, text: str) -> Any:
    """A query parameter's value: integers are ASCII digits only, numbers finite."""
    value: Any = None
    if p.kind is int:
        negative = text.startswith("-") and (p.minimum is None or p.minimum < 0)
        value = whole_number(text[1:] if negative else text)
        if negative and value is not None:
            value = -value
    elif p.kind is float:
        try:
            value = float(text) if text.isascii() else None
        except ValueError:
            value = None
        if value is not None and not math.isfinite(value):
            raise InvalidInputError(f"query parameter {p.name!r} is not a finite number")
    else:
        value = p.kind(text)
    if value is None:
        raise InvalidInputError(f"query parameter {p.name!r}: expected "
                                f"{p.kind.__name__}, got {text[:64]!r}")
    return value


def _json_body(raw: bytes, schema: str) -> dict[str, Any]:
    if not raw.strip():
        body: Any = {}
    else:
        body = load_json(raw, "the body")
    errors = sorted(_VALIDATORS[schema].iter_errors(body), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "body"
        raise InvalidInputError(f"{where}: {errors[0].message}",
                                hint=f"see components.schemas.{schema} in /openapi.json")
    assert isinstance(body, dict)
    return body


async def _small_body(request: Request) -> bytes:
    """A JSON body, refused (413) past ``MAX_JSON_BYTES`` before it is all read."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise _PayloadTooLargeError(f"the body is over {MAX_JSON_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _spool(request: Request, path: Path, limit: int) -> None:
    size = 0
    with path.open("wb") as fh:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _PayloadTooLargeError(f"the upload is over {limit} bytes")
            fh.write(chunk)
    if size == 0:
        raise InvalidInputError("the upload is empty",
                                hint="send an ONNX file or a tar bundle as the body")


def _error(exc: Error) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.diagnostics(), "type": type(exc).__name__,
                            "hint": exc.hint}
    if isinstance(exc, GateFailedError):
        body["results"] = [r.to_dict() for r in exc.results]
    if exc.http_status >= 500:
        log.warning("%s", exc.diagnostics())
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


def _json_media(request: Request) -> None:
    """415 unless the request says its body is JSON (``application/json``, any parameters)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise _UnsupportedMediaError(
            f"content type {media[:64] or 'none'!r} is not accepted: the body must be JSON",
            hint="send the body with Content-Type: application/json")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def create_registry_app(lg: Lockgate, *, auth: bool = True,
                        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> Starlette:
    """The registry API over ``lg``. ``auth=False`` acts as ``lg.settings.user`` with every
    role (a single user on loopback; the CLI refuses it on other addresses)."""
    local = Principal(lg.settings.user, frozenset(ROLES))
    document = openapi_document()

    def actor_of(request: Request) -> str:
        """Who a refused request acts as, for the audit log (never raises)."""
        if not auth:
            return local.name
        try:
            return lg.authenticate(_bearer(request)).name
        except Error:
            return "anonymous"

    def refuse_foreign(request: Request, op: Operation) -> None:
        """403, audited (folded on actor and operation), for a state-changing request the
        browser says another site sent."""
        problem = foreign_origin(request)
        if problem is None:
            return
        actor = actor_of(request)
        payload = {"action": op.op_id, "reason": "registry refused a cross-site request"}
        if actor == "anonymous":
            payload["source"] = request.client.host if request.client else "unknown"
        lg.denials.record(AuditEvent(EventType.ACCESS_DENIED, actor, None, None, payload),
                          detail=f"refused {problem}")
        raise AccessDeniedError(f"refused {problem}: the registry API takes no state changes "
                                "from other sites' pages",
                                hint="call it from a script or the CLI, not from a web page")

    def endpoint(op: Operation) -> Callable[[Request], Any]:
        changes = op.method != "GET"

        async def handle(request: Request) -> Response:
            try:
                if not auth:
                    check_loopback_host(request)
                if changes:
                    await run_in_threadpool(refuse_foreign, request, op)
                if op.body is not None and op.body != "upload":
                    _json_media(request)
                principal = (await run_in_threadpool(lg.authenticate, _bearer(request))
                             if auth else local)
                call = Call(lg, principal, dict(request.path_params), _query(request, op),
                            auth=auth)
                await run_in_threadpool(_authorize, call, op)
                if op.body == "upload":
                    return await _upload(request, op, call)
                if op.body is not None:
                    call.body = _json_body(await _small_body(request), op.body)
                result = await run_in_threadpool(op.handler, call)
                if isinstance(result, Response):
                    return result
                return JSONResponse(result, status_code=op.status)
            except Error as exc:
                return _error(exc)
            except Exception:
                log.exception("internal error in %s %s", op.method, op.path)
                return JSONResponse({"error": "internal error", "type": "InternalError"},
                                    status_code=500)

        return handle

    async def _upload(request: Request, op: Operation, call: Call) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in (_ONNX, *_TAR):
            raise _UnsupportedMediaError(
                f"upload content type {media or 'none'!r} is not accepted",
                hint=f"send {_ONNX} (an ONNX file) or application/x-tar or "
                     "application/gzip (a bundle)")
        tmp = Path(tempfile.mkdtemp(prefix="lockgate-upload-"))
        try:
            raw = tmp / "upload.bin"
            await _spool(request, raw, max_upload_bytes)
            if media == _ONNX:
                model = tmp / "model.onnx"
                raw.rename(model)
                call.upload = Upload(model=model)
            else:
                folder = tmp / "bundle"
                folder.mkdir()
                call.upload = await run_in_threadpool(read_bundle, raw, folder,
                                                      max_upload_bytes)
            call.query = check_options(call.query)
            result = await run_in_threadpool(op.handler, call)
            return JSONResponse(result, status_code=op.status)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    async def openapi(request: Request) -> Response:
        if not auth:
            try:
                check_loopback_host(request)
            except Error as exc:
                return _error(exc)
        return JSONResponse(document)

    async def health(request: Request) -> Response:
        if not auth:
            try:
                check_loopback_host(request)
            except Error as exc:
                return _error(exc)
        return JSONResponse({"ok": True})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:  # a SIGTERM ends the process right after, before Lockgate.close
            await run_in_threadpool(lg.denials.flush)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return JSONResponse({"error": str(detail), "type": "HTTPError"}, status_code=status)

    routes = [Route("/openapi.json", openapi, methods=["GET"]),
              Route(_PREFIX + "/health", health, methods=["GET"])]
    by_path: dict[str, list[Operation]] = {}
    for op in OPERATIONS:
        by_path.setdefault(op.path, []).append(op)
    for path, ops in by_path.items():
        for op in ops:
            routes.append(Route(path, endpoint(op), methods=[op.method]))
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error},
                     lifespan=lifespan)


# -- OpenAPI -----------------------------------------------------------------------------------
def _response_schema(name: str) -> dict[str, Any]:
    if name.endswith("[]"):
        return {"type": "array", "items": ref(name[:-2])}
    return ref(name)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route."""
    from lockgate.serve.routes import _version

    error = {"description": "Error", "content": {"application/json": {"schema": ref("Error")}}}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        params: list[dict[str, Any]] = []
        for name in re.findall(r"{(\w+)}", op.path):
            schema: dict[str, Any] = {"type": "string", "pattern": (
                r"^[0-9a-f]{12}$" if name == "token_id" else NAME_PATTERN)}
            params.append({"name": name, "in": "path", "required": True, "schema": schema})
        for p in op.query:
            qs: dict[str, Any] = {"type": {int: "integer", float: "number", str: "string"}[
                p.kind]}
            if p.minimum is not None:
                qs["minimum"] = p.minimum
            if p.maximum is not None:
                qs["maximum"] = p.maximum
            params.append({"name": p.name, "in": "query", "required": False,
                           "description": p.description, "schema": qs})
        ok: dict[str, Any] = {"description": "OK"}
        if op.response is not None:
            ok["content"] = {op.media: {"schema": _response_schema(op.response)}}
        else:
            ok["content"] = {op.media: {"schema": {"type": "string", "format": "binary"}}}
        entry: dict[str, Any] = {
            "operationId": op.op_id, "summary": op.summary, "tags": [op.tag],
            "description": "Role: deployer into the serving stage and later, developer "
                           "before it." if op.role_by_body else f"Role: {op.role}.",
            "parameters": params,
            "responses": {str(op.status): ok, "default": error},
            "security": [{"bearer": []}],
        }
        if op.body == "upload":
            binary = {"schema": {"type": "string", "format": "binary"}}
            entry["requestBody"] = {"required": True, "content": {
                _ONNX: binary, "application/x-tar": binary, "application/gzip": binary}}
        elif op.body is not None:
            entry["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": ref(op.body)}}}
            entry["responses"]["415"] = {**error, "description": "The body is not sent as "
                                         "application/json"}
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "lockgate registry API", "version": _version(),
                 "description": "Register, govern, promote and deploy models. Authenticate "
                                "with 'Authorization: Bearer lgt_...'."},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
