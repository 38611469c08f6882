"""Every registry operation, declared once: method, path, role, body and response schema.

:data:`OPERATIONS` is the table the router of :mod:`lockgate.registry.routes`, the role checks
and the OpenAPI document of :mod:`lockgate.registry.openapi` are all built from.
:func:`invoke` runs one JSON operation without HTTP, with the same role check and body
validation (the web console's actions go through it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lockgate.access.identity import Principal
from lockgate.registry.bundle import ONNX_MEDIA
from lockgate.registry.call import Call, Handler, Param
from lockgate.registry.decoding import json_body
from lockgate.registry.handlers import (
    aliases,
    approve,
    audit,
    audit_verify,
    batching,
    deploy,
    deployment,
    deployments,
    evidence,
    gates,
    history,
    model_file,
    models,
    new_token,
    promote,
    promote_candidate,
    providers,
    put_user,
    register,
    reject,
    remove_alias,
    revoke_token,
    rollback,
    set_alias,
    show,
    tokens,
    users,
    versions,
    vulnerabilities,
    waive,
    weight,
    whoami,
)

if TYPE_CHECKING:
    from lockgate.api.facade import Lockgate

__all__ = ["OPERATIONS", "PREFIX", "Operation", "authorize", "invoke"]

PREFIX = "/api/v1"


@dataclass(frozen=True)
class Operation:
    """One route of the registry API: what it is called, who may call it, what it takes."""

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


_M = PREFIX + "/models/{name}"
_V = _M + "/versions/{ref}"
_D = PREFIX + "/deployments/{name}"
_PAGE = (Param("offset", int, "Skip this many.", minimum=0),
         Param("limit", int, "At most this many (default 1000).", minimum=1, maximum=10000))

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", PREFIX + "/whoami", "whoami", "Who the token acts as", "viewer",
              whoami, "identity", response="Principal", model_scoped=False),
    Operation("GET", PREFIX + "/models", "listModels", "List models", "viewer", models,
              "models", response="ModelSummary[]", model_scoped=False),
    Operation("GET", _M + "/versions", "listVersions", "List a model's versions", "viewer",
              versions, "models", response="Version[]", query=_PAGE),
    Operation("POST", _M + "/versions", "registerVersion",
              "Register an uploaded ONNX file or bundle as a new version", "developer",
              register, "models", body="upload", response="Version", status=201,
              query=(Param("description", str, "Free text stored with the version."),
                     Param("seed", int, "Training seed, recorded."),
                     Param("atol", float, "Parity absolute tolerance."),
                     Param("rtol", float, "Parity relative tolerance."),
                     Param("considerations", str, "Known limitations, for the model card."))),
    Operation("GET", _V, "showVersion", "One version, its gate runs and decisions", "viewer",
              show, "models", response="VersionDetail"),
    Operation("GET", _M + "/history", "modelHistory",
              "Which version held each stage and alias, and when", "viewer", history,
              "models", response="History"),
    Operation("GET", _M + "/aliases", "listAliases", "A model's aliases", "viewer", aliases,
              "aliases", response="Aliases"),
    Operation("PUT", _M + "/aliases/{alias}", "setAlias", "Point an alias at a version",
              "developer", set_alias, "aliases", body="AliasRequest", response="AliasChange"),
    Operation("DELETE", _M + "/aliases/{alias}", "removeAlias", "Remove an alias",
              "developer", remove_alias, "aliases", response="AliasChange"),
    Operation("POST", _V + "/promote", "promoteVersion",
              "Run the transition's gates and move the version (deployer role for the "
              "serving stage and later)", "developer", promote, "promotion",
              body="PromoteRequest", response="Promotion", role_by_body=True),
    Operation("POST", _V + "/gates", "checkGates",
              "Evaluate the transition's gates without moving anything", "developer", gates,
              "promotion", body="PromoteRequest", response="GateReport"),
    Operation("POST", _V + "/approve", "approveVersion", "Approve a version for a stage",
              "approver", approve, "promotion", body="ApproveRequest", response="Decision"),
    Operation("POST", _V + "/reject", "rejectVersion", "Reject a version for a stage",
              "approver", reject, "promotion", body="RejectRequest", response="Decision"),
    Operation("POST", _V + "/waive", "waiveGate", "Waive a failing gate until a date",
              "approver", waive, "promotion", body="WaiveRequest", response="Decision"),
    Operation("GET", _V + "/evidence", "downloadEvidence",
              "The version's evidence pack as a zip", "viewer", evidence, "evidence",
              media="application/zip"),
    Operation("GET", _V + "/model", "downloadModel",
              "The version's ONNX file, after verifying its signature and digest", "viewer",
              model_file, "evidence", media=ONNX_MEDIA),
    Operation("GET", _V + "/vulnerabilities", "scanVersion",
              "Vulnerabilities of the version's packages (offline snapshot)", "viewer",
              vulnerabilities, "evidence", response="VulnerabilityReport"),
    Operation("GET", PREFIX + "/deployments", "listDeployments", "Every deployment",
              "viewer", deployments, "deployments", response="Deployments",
              model_scoped=False),
    Operation("GET", _D, "showDeployment", "One model's deployment", "viewer", deployment,
              "deployments", response="Deployment"),
    Operation("POST", _D, "deploy",
              "Blue/green switch to a version, or start a canary or shadow", "deployer",
              deploy, "deployments", body="DeployRequest", response="Deployment"),
    Operation("POST", _D + "/weight", "setCanaryWeight", "Change the candidate's weight",
              "deployer", weight, "deployments", body="WeightRequest", response="Deployment"),
    Operation("POST", _D + "/promote-candidate", "promoteCandidate",
              "Make the candidate the stable version", "deployer", promote_candidate,
              "deployments", response="Deployment"),
    Operation("PUT", _D + "/providers", "setProviders",
              "Set or clear the execution providers the model's versions load on",
              "deployer", providers, "deployments", body="ProvidersRequest",
              response="Deployment"),
    Operation("PUT", _D + "/batching", "setBatching", "Set or clear dynamic batching",
              "deployer", batching, "deployments", body="BatchingRequest",
              response="Deployment"),
    Operation("POST", _D + "/rollback", "rollback",
              "Drop the canary, or return to the previous stable version", "deployer",
              rollback, "deployments", body="RollbackRequest", response="Deployment"),
    Operation("GET", PREFIX + "/audit", "auditLog", "Audit events, oldest first", "viewer",
              audit, "audit", response="AuditPage", model_scoped=False,
              query=(Param("model", str, "Only this model's events."),
                     Param("after", int, "Only events after this sequence number.",
                           minimum=0),
                     Param("limit", int, "At most this many (default 1000).", minimum=1,
                           maximum=10000))),
    Operation("GET", PREFIX + "/audit/verify", "auditVerify", "Recompute the hash chain",
              "viewer", audit_verify, "audit", response="ChainReport", model_scoped=False),
    Operation("GET", PREFIX + "/users", "listUsers", "Users", "admin", users, "identity",
              response="User[]", model_scoped=False),
    Operation("POST", PREFIX + "/users", "putUser", "Create a user or replace its roles",
              "admin", put_user, "identity", body="UserRequest", response="User",
              model_scoped=False),
    Operation("POST", PREFIX + "/users/{user}/tokens", "createToken",
              "A new API token (shown once)", "admin", new_token, "identity",
              body="TokenRequest", response="NewToken", status=201, model_scoped=False),
    Operation("GET", PREFIX + "/tokens", "listTokens", "Tokens (never their secrets)",
              "admin", tokens, "identity", response="Token[]", model_scoped=False,
              query=(Param("user", str, "Only this user's tokens."),)),
    Operation("DELETE", PREFIX + "/tokens/{token_id}", "revokeToken", "Revoke a token",
              "admin", revoke_token, "identity", response="Token", model_scoped=False),
)


_BY_ID = {op.op_id: op for op in OPERATIONS}


def authorize(call: Call, op: Operation) -> None:
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
    authorize(call, op)
    if op.body is not None and op.body != "upload":
        call.body = json_body(json.dumps(body or {}).encode(), op.body)
    return op.handler(call)
