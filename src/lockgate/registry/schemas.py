"""JSON Schemas (2020-12, as OpenAPI 3.1 uses) of the registry API's bodies and responses.

Request bodies are validated against these same schemas, so the published document and the
server cannot disagree.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SCHEMAS", "ref"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ROLE = {"type": "string", "enum": ["viewer", "developer", "approver", "deployer", "inference",
                                   "monitoring", "admin"]}
_OBJ: dict[str, Any] = {"type": "object"}
_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
_PROVIDERS = {"type": ["object", "null"],
              "description": "{\"providers\": [{\"name\": ..., \"options\": {...}}], "
                             "\"fallback\": \"none\" | \"cpu\"}; null: the servers' own"}
_VERSION = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _closed(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties,
                           "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def _open(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


_GATE_RESULT = _open({
    "gate": {"type": "string"},
    "status": {"type": "string", "enum": ["pass", "fail", "error", "waived", "skipped"]},
    "message": {"type": "string"},
    "measured": _OBJ,
    "thresholds": _OBJ,
}, ["gate", "status", "message"])

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _open({
        "error": {"type": "string", "description": "What went wrong and, when known, what "
                                                   "to do (one line)."},
        "type": {"type": "string", "description": "The lockgate error class."},
        "hint": _NULLABLE_STR,
        "results": {"type": "array", "items": ref("GateResult"),
                    "description": "Every gate's result, when gates refused a promotion."},
    }, ["error"]),
    "Principal": _open({
        "name": {"type": "string"},
        "roles": {"type": "array", "items": {"type": "string"}},
        "grants": {"type": "array", "items": _OBJ},
        "auth": {"type": "boolean"},
    }, ["name", "roles", "grants"]),
    "ModelSummary": _open({
        "name": {"type": "string"},
        "versions": {"type": "integer"},
        "latest": {"type": "integer"},
        "stages": {"type": "object", "additionalProperties": {
            "type": "array", "items": {"type": "integer"}}},
        "aliases": {"type": "object", "additionalProperties": {"type": "integer"}},
    }, ["name", "versions", "latest", "stages", "aliases"]),
    "Version": _open({
        "name": {"type": "string"},
        "version": {"type": "integer", "minimum": 1},
        "stage": {"type": "string"},
        "digest": {"type": "string"},
        "framework": {"type": "string"},
        "framework_version": {"type": "string"},
        "opset": {"type": "integer"},
        "ir_version": {"type": "integer"},
        "signature": _OBJ,
        "parity": {"type": ["object", "null"]},
        "environment": _OBJ,
        "creator": {"type": "string"},
        "created_at": {"type": "string"},
        "description": {"type": "string"},
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
        "seeds": {"type": "object", "additionalProperties": {"type": "integer"}},
        "files": {"type": "object", "additionalProperties": {"type": "string"}},
        "signature_bundle": _NULLABLE_STR,
        "signed_by": {"type": "string"},
    }, ["name", "version", "stage", "digest", "framework", "signature", "creator",
        "created_at"]),
    "VersionDetail": {"allOf": [ref("Version"), _open({
        "gate_runs": {"type": "array", "items": ref("GateRun")},
        "decisions": {"type": "array", "items": ref("Decision")},
    }, ["gate_runs", "decisions"])]},
    "GateRun": _open({
        "name": {"type": "string"},
        "number": {"type": "integer"},
        "from_stage": {"type": "string"},
        "to_stage": {"type": "string"},
        "passed": {"type": "boolean"},
        "results": {"type": "array", "items": _OBJ},
        "actor": {"type": "string"},
        "created_at": {"type": "string"},
    }, ["name", "number", "from_stage", "to_stage", "passed", "results", "actor",
        "created_at"]),
    "GateResult": _GATE_RESULT,
    "GateReport": _open({
        "model": {"type": "string"},
        "to": {"type": "string"},
        "passed": {"type": "boolean"},
        "gates": {"type": "array", "items": ref("GateResult")},
    }, ["model", "to", "passed", "gates"]),
    "Promotion": _open({
        "model": {"type": "string"},
        "version": ref("Version"),
        "from": {"type": "string"},
        "to": {"type": "string"},
        "gates": {"type": "array", "items": ref("GateResult")},
        "retired": {"type": "array", "items": {"type": "integer"}},
        "alias": _NULLABLE_STR,
    }, ["model", "version", "from", "to", "gates", "retired", "alias"]),
    "Decision": _open({
        "kind": {"type": "string"},
        "model": {"type": "string"},
        "version": {"type": "integer"},
        "stage": {"type": "string"},
        "actor": {"type": "string"},
        "at": {"type": "string"},
        "comment": {"type": "string"},
        "gate": {"type": "string"},
        "expires": _NULLABLE_STR,
        "detail": _OBJ,
    }, ["kind", "model", "version", "stage", "actor", "at"]),
    "Aliases": {"type": "object", "additionalProperties": {"type": "integer"}},
    "AliasChange": _open({
        "model": {"type": "string"},
        "alias": {"type": "string"},
        "version": _NULLABLE_INT,
    }, ["model", "alias", "version"]),
    "History": _open({
        "timeline": {"type": "array", "items": _OBJ},
        "holdings": {"type": "array", "items": _OBJ},
    }, ["timeline", "holdings"]),
    "Deployment": _open({
        "model": {"type": "string"},
        "stable": {"type": "integer"},
        "candidate": _NULLABLE_INT,
        "weight": {"type": "integer", "minimum": 0, "maximum": 100},
        "shadow": _NULLABLE_INT,
        "previous": _NULLABLE_INT,
        "state": {"type": "string"},
        "analysis": {"type": ["object", "null"]},
        "batching": {"type": ["object", "null"]},
        "providers": _PROVIDERS,
        "generation": {"type": "integer"},
        "updated_at": {"type": "string"},
    }, ["model", "stable", "weight", "state", "generation"]),
    "Deployments": {"type": "object", "additionalProperties": ref("Deployment")},
    "AuditRecord": _open({
        "seq": {"type": "integer"},
        "ts": {"type": "string"},
        "type": {"type": "string"},
        "actor": {"type": "string"},
        "model": _NULLABLE_STR,
        "version": _NULLABLE_INT,
        "payload": _OBJ,
        "prev_hash": {"type": "string"},
        "hash": {"type": "string"},
    }, ["seq", "ts", "type", "actor", "payload", "prev_hash", "hash"]),
    "AuditPage": _open({
        "events": {"type": "array", "items": ref("AuditRecord")},
        "next_after": _NULLABLE_INT,
    }, ["events", "next_after"]),
    "ChainReport": _open({
        "ok": {"type": "boolean"},
        "count": {"type": "integer"},
        "first_broken": _NULLABLE_INT,
        "reason": {"type": "string"},
    }, ["ok", "count", "first_broken", "reason"]),
    "VulnerabilityReport": _OBJ,
    "User": _open({
        "name": {"type": "string"},
        "roles": {"type": "array", "items": {"type": "string"}},
        "grants": {"type": "array", "items": _OBJ},
        "disabled": {"type": "boolean"},
        "created_at": {"type": "string"},
    }, ["name", "roles", "grants", "disabled"]),
    "Token": _open({
        "id": {"type": "string"},
        "user": {"type": "string"},
        "description": {"type": "string"},
        "created_at": {"type": "string"},
        "expires_at": _NULLABLE_STR,
        "revoked_at": _NULLABLE_STR,
    }, ["id", "user", "created_at"]),
    "NewToken": {"allOf": [ref("Token"), _open({
        "token": {"type": "string", "description": "The token; shown this once only."},
    }, ["token"])]},
    # -- request bodies ---------------------------------------------------------------------
    "PromoteRequest": _closed({
        "to": {"type": "string", "pattern": NAME_PATTERN},
        "run_all": {"type": "boolean"},
    }, ["to"]),
    "ApproveRequest": _closed({
        "stage": {"type": "string", "pattern": NAME_PATTERN},
        "comment": {"type": "string", "maxLength": 10000},
    }, ["stage"]),
    "RejectRequest": _closed({
        "stage": {"type": "string", "pattern": NAME_PATTERN},
        "comment": {"type": "string", "minLength": 1, "maxLength": 10000,
                    "pattern": r"\S"},
    }, ["stage", "comment"]),
    "WaiveRequest": _closed({
        "stage": {"type": "string", "pattern": NAME_PATTERN},
        "gate": {"type": "string", "pattern": NAME_PATTERN},
        "reason": {"type": "string", "minLength": 1, "maxLength": 10000, "pattern": r"\S"},
        "expires": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$",
                    "description": "Last day the waiver applies (YYYY-MM-DD)."},
    }, ["stage", "gate", "reason", "expires"]),
    "AliasRequest": _closed({"version": _VERSION}, ["version"]),
    "DeployRequest": _closed({
        "version": _VERSION,
        "canary": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
        "shadow": {"type": "boolean"},
        "analysis": {"type": ["object", "null"]},
        "providers": _PROVIDERS,
    }, ["version"]),
    "WeightRequest": _closed({"weight": {"type": "integer", "minimum": 0, "maximum": 100}},
                             ["weight"]),
    "ProvidersRequest": _closed({"providers": _PROVIDERS}, ["providers"]),
    "BatchingRequest": _closed({"batching": {"type": ["object", "null"]}}, ["batching"]),
    "RollbackRequest": _closed({"reason": {"type": "string", "maxLength": 10000}}),
    "UserRequest": _closed({
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "roles": {"type": "array", "items": ROLE, "maxItems": 5},
        "grants": {"type": "array", "maxItems": 100, "items": _closed({
            "model": {"type": "string", "pattern": r"^[A-Za-z0-9._*?\[\]-]{1,128}$"},
            "role": ROLE,
        }, ["model", "role"])},
        "disabled": {"type": "boolean"},
    }, ["name", "roles"]),
    "TokenRequest": _closed({
        "description": {"type": "string", "maxLength": 200},
        "days": {"type": ["integer", "null"], "minimum": 1, "maximum": 3650},
    }),
}
