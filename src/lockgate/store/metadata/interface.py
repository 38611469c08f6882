"""The metadata store: versions, stages, aliases, gate runs and the audit log."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lockgate.audit import AuditEvent, AuditRecord

__all__ = ["Change", "GateRun", "MetadataStore", "VersionRow"]


@dataclass(frozen=True)
class VersionRow:
    name: str
    number: int
    stage: str
    record: Mapping[str, Any]


@dataclass(frozen=True)
class GateRun:
    name: str
    number: int
    from_stage: str
    to_stage: str
    passed: bool
    results: Sequence[Mapping[str, Any]]
    actor: str
    created_at: str


@dataclass(frozen=True)
class Change:
    """State changes applied in one transaction, or not at all.

    ``expect`` holds the stage each touched version must still be in (optimistic concurrency);
    ``aliases`` maps (model, alias) to a version number, or None to remove the alias.
    """

    expect: Mapping[tuple[str, int], str] = field(default_factory=dict)
    stages: Mapping[tuple[str, int], str] = field(default_factory=dict)
    aliases: Mapping[tuple[str, str], int | None] = field(default_factory=dict)
    gate_runs: Sequence[GateRun] = ()
    events: Sequence[AuditEvent] = ()


class MetadataStore(Protocol):
    def create_version(
        self, name: str, record: Mapping[str, Any], stage: str, event: AuditEvent
    ) -> int:
        """Allocate the next number for ``name``, store the version and its audit event in one
        transaction, and return the number."""
        ...

    def apply(self, change: Change) -> None:
        """Apply ``change`` atomically; PromotionError if an ``expect`` no longer holds."""
        ...

    def append_event(self, event: AuditEvent) -> AuditRecord: ...

    def get_version(self, name: str, number: int) -> VersionRow | None: ...

    def list_versions(self, name: str) -> list[VersionRow]: ...

    def list_models(self) -> list[str]: ...

    def aliases(self, name: str) -> dict[str, int]: ...

    def gate_runs(self, name: str, number: int) -> list[GateRun]: ...

    def audit_records(self) -> list[AuditRecord]: ...

    def close(self) -> None: ...
