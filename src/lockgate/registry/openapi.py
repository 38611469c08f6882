"""The OpenAPI 3.1 document of the registry API (served at ``/openapi.json``), built from
:data:`lockgate.registry.operations.OPERATIONS` and the schemas of
:mod:`lockgate.registry.schemas`."""

from __future__ import annotations

import re
from typing import Any

from lockgate.registry.bundle import ONNX_MEDIA
from lockgate.registry.operations import OPERATIONS, Operation
from lockgate.registry.schemas import NAME_PATTERN, SCHEMAS, ref
from lockgate.serve.about import lockgate_version

__all__ = ["openapi_document"]

def _response_schema(name: str) -> dict[str, Any]:
    if name.endswith("[]"):
        return {"type": "array", "items": ref(name[:-2])}
    return ref(name)


def _parameters(op: Operation) -> list[dict[str, Any]]:
    """The operation's path parameters, then its query parameters."""
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
    return params


def _entry(op: Operation, error: dict[str, Any]) -> dict[str, Any]:
    """The operation's entry under its path and method; ``error`` answers every failure."""
    ok: dict[str, Any] = {"description": "OK"}
    if op.response is not None:
        ok["content"] = {op.media: {"schema": _response_schema(op.response)}}
    else:
        ok["content"] = {op.media: {"schema": {"type": "string", "format": "binary"}}}
    entry: dict[str, Any] = {
        "operationId": op.op_id, "summary": op.summary, "tags": [op.tag],
        "description": "Role: deployer into the serving stage and later, developer "
                       "before it." if op.role_by_body else f"Role: {op.role}.",
        "parameters": _parameters(op),
        "responses": {str(op.status): ok, "default": error},
        "security": [{"bearer": []}],
    }
    if op.body == "upload":
        binary = {"schema": {"type": "string", "format": "binary"}}
        entry["requestBody"] = {"required": True, "content": {
            ONNX_MEDIA: binary, "application/x-tar": binary, "application/gzip": binary}}
    elif op.body is not None:
        entry["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": ref(op.body)}}}
        entry["responses"]["415"] = {**error, "description": "The body is not sent as "
                                     "application/json"}
    return entry


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route."""
    error = {"description": "Error", "content": {"application/json": {"schema": ref("Error")}}}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _entry(op, error)
    return {
        "openapi": "3.1.0",
        "info": {"title": "lockgate registry API", "version": lockgate_version(),
                 "description": "Register, govern, promote and deploy models. Authenticate "
                                "with 'Authorization: Bearer lgt_...'."},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
