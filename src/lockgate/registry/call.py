"""One registry request as its handler sees it, and the query parameters an operation takes.

A :class:`Call` is what :mod:`lockgate.registry.routes` (over HTTP) and
:func:`lockgate.registry.operations.invoke` (for the web console) hand to a handler of
:mod:`lockgate.registry.handlers`: who asks, the decoded path and query parameters, and the
validated JSON body or the spooled upload. :meth:`Call.require` is the one role check, audited
when it refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lockgate.access.identity import Principal
from lockgate.audit import AuditEvent, EventType
from lockgate.errors import AccessDeniedError
from lockgate.registry.bundle import Upload
from lockgate.types import ModelRef, validate_name, whole_number

if TYPE_CHECKING:
    from lockgate.api.facade import Lockgate

__all__ = ["Call", "Handler", "Param"]


@dataclass(frozen=True)
class Param:
    """A query parameter: its name, type, description and, for numbers, its range."""

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
"""What runs an operation: a JSON-ready value, or a ready :class:`starlette.responses.Response`."""
