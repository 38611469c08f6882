"""The console's actions: what each form asks the registry API to do.

An action (``POST /ui/actions/NAME``) becomes a :class:`Plan`: the registry operation it
runs (so the same role checks and validation apply as over HTTP) and what the confirmation
and result pages say of it (``templates/console/parts.html``, ``summary``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request

from lockgate.errors import InvalidInputError, NotFoundError
from lockgate.types import whole_number
from lockgate.web.paths import deployment_path, version_path

__all__ = ["ACTIONS", "Plan", "action_name", "back_of", "plan", "read_form", "whole"]

ACTIONS = ("approve", "promote", "canary", "weight", "promote-candidate", "rollback")
"""The console's actions (``POST /ui/actions/NAME``)."""

_MAX_FORM = 64 << 10


@dataclass(frozen=True)
class Plan:
    """A registry operation (id, path parameters, body) an action runs, and the model,
    version and weight its summary names."""

    action: str
    operation: str
    params: dict[str, str]
    body: dict[str, Any] | None
    model: str
    version: int | None = None
    weight: int | None = None


def action_name(kind: str) -> str:
    """The audited name of an action: one of :data:`ACTIONS`, else ``console.unknown``."""
    return f"console.{kind if kind in ACTIONS else 'unknown'}"


async def read_form(request: Request) -> dict[str, str]:
    """The request's urlencoded form (the last value of each field), at most 64 KiB."""
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise InvalidInputError("the form is too large")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidInputError("the form is not UTF-8") from None
    return {k: v[-1] for k, v in parsed.items()}


def whole(fields: Mapping[str, str], key: str) -> int:
    """The field ``key`` as a whole number."""
    number = whole_number(fields.get(key, ""))
    if number is None:
        raise InvalidInputError(f"{key} must be a whole number")
    return number


def back_of(kind: str, name: str, fields: Mapping[str, str]) -> str:
    """The page an action returns to: the version's for approve and promote, else the
    deployment's."""
    if kind in ("approve", "promote"):
        return version_path(name, whole(fields, "version"))
    return deployment_path(name)


def plan(kind: str, name: str, f: Mapping[str, str]) -> Plan:
    """The registry operation the action ``kind`` runs for model ``name`` with form ``f``."""
    if kind == "approve":
        n = whole(f, "version")
        decision = f.get("decision", "approve")
        if decision not in ("approve", "reject"):
            raise InvalidInputError("decision must be approve or reject")
        op = "approveVersion" if decision == "approve" else "rejectVersion"
        return Plan(kind, op, {"name": name, "ref": str(n)},
                    {"stage": f.get("stage", ""), "comment": f.get("comment", "")}, name, n)
    if kind == "promote":
        n = whole(f, "version")
        return Plan(kind, "promoteVersion", {"name": name, "ref": str(n)},
                    {"to": f.get("to", "")}, name, n)
    if kind == "canary":
        n, w = whole(f, "version"), whole(f, "weight")
        return Plan(kind, "deploy", {"name": name}, {"version": n, "canary": w}, name, n, w)
    if kind == "weight":
        w = whole(f, "weight")
        return Plan(kind, "setCanaryWeight", {"name": name}, {"weight": w}, name, weight=w)
    if kind == "promote-candidate":
        return Plan(kind, "promoteCandidate", {"name": name}, None, name)
    if kind == "rollback":
        return Plan(kind, "rollback", {"name": name}, {"reason": f.get("reason", "")}, name)
    raise NotFoundError(f"no action {kind!r}")
