"""The metadata store: versions, stages, aliases, gate runs and the audit log."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from lockgate.audit import AuditEvent, AuditRecord
from lockgate.types import (
    Decision,
    Delivery,
    DeploymentRow,
    GateRun,
    Observation,
    TokenRow,
    UserRow,
    VersionRow,
    VulnSnapshot,
)

__all__ = [
    "Change",
    "Decision",
    "Delivery",
    "DeploymentRow",
    "EventBuilder",
    "GateRun",
    "MetadataStore",
    "Observation",
    "RecordBuilder",
    "TokenRow",
    "UserRow",
    "VersionRow",
    "VulnSnapshot",
]

RecordBuilder = Callable[[int], Mapping[str, Any]]
"""Builds a version's record once its number is known."""

EventBuilder = Callable[[Mapping[str, Any]], AuditEvent]
"""Builds the registration's audit event from the record just built."""


@dataclass(frozen=True)
class Change:
    """State changes applied in one transaction, or not at all.

    ``expect`` holds the stage each touched version must still be in (optimistic concurrency);
    ``expect_holders`` the exact set of version numbers each (model, stage) must still hold;
    ``aliases`` maps (model, alias) to a version number, or None to remove the alias.
    """

    expect: Mapping[tuple[str, int], str] = field(default_factory=dict)
    expect_holders: Mapping[tuple[str, str], frozenset[int]] = field(default_factory=dict)
    stages: Mapping[tuple[str, int], str] = field(default_factory=dict)
    aliases: Mapping[tuple[str, str], int | None] = field(default_factory=dict)
    gate_runs: Sequence[GateRun] = ()
    decisions: Sequence[Decision] = ()
    deployments: Mapping[str, tuple[int, Mapping[str, Any]]] = field(default_factory=dict)
    """Model name -> (the generation it must still have, 0 for none; the new record)."""
    observations: Sequence[Observation] = ()
    deliveries: Sequence[Delivery] = ()
    """New outbox entries (their ``id`` must be new)."""
    events: Sequence[AuditEvent] = ()


class MetadataStore(Protocol):
    def registering(self, name: str) -> AbstractContextManager[int]:
        """Hold ``name``'s registration lock and yield the number its next version gets.

        While it is held no other registration of ``name`` can store a version, so a version
        sealed and signed under that number meanwhile is stored under it by
        :meth:`create_version` with ``number``. Other writers never wait for it."""
        ...

    def create_version(
        self, name: str, build: RecordBuilder, stage: str, event: AuditEvent | EventBuilder,
        *, number: int | None = None, extra: Change | None = None,
    ) -> int:
        """Allocate the next number for ``name``, call ``build(number)`` for the record, store
        the version, its audit event and ``extra`` in one transaction, and return the number.

        With ``number`` (taken from :meth:`registering`, still held), StorageError unless it is
        still the next number. ``build`` may run more than once (a retried transaction) and
        must not change shared state beyond content-addressed writes: hand it a record made
        beforehand. ``event`` may be built from the record; ``extra`` (observations, events)
        is written after it, all or nothing with the version."""
        ...

    def apply(self, change: Change) -> None:
        """Apply ``change`` atomically; PromotionError if an ``expect`` no longer holds."""
        ...

    def append_event(self, event: AuditEvent) -> AuditRecord: ...

    def get_version(self, name: str, number: int) -> VersionRow | None: ...

    def list_versions(self, name: str) -> list[VersionRow]: ...

    def list_models(self) -> list[str]: ...

    def version_index(self) -> list[tuple[str, int, str]]:
        """Every version as (model, number, stage), by model and number: no records read
        (model listings need only this)."""
        ...

    def versions_in_stage(self, name: str, stage: str) -> list[VersionRow]:
        """The model's versions now in ``stage``, by number (one indexed query: a promotion
        needs the holders, not every version)."""
        ...

    def aliases(self, name: str) -> dict[str, int]: ...

    def all_aliases(self) -> dict[str, dict[str, int]]:
        """Every model's aliases, by model."""
        ...

    def gate_runs(self, name: str, number: int) -> list[GateRun]: ...

    def audit_records(self, after: int = 0) -> list[AuditRecord]:
        """The audit log's records with a sequence number above ``after``, in order."""
        ...

    def audit_tail(self) -> int:
        """The sequence number of the audit log's last record (0 when empty)."""
        ...

    def exclusive(self) -> AbstractContextManager[int]:
        """Hold the lock every writer holds while it commits (nothing commits meanwhile);
        yields the audit log's tail as seen under it."""
        ...

    def decisions(self, name: str, number: int) -> list[Decision]:
        """Every decision recorded for the version, oldest first."""
        ...

    def deployments(self) -> list[DeploymentRow]:
        """Every model's deployment, by name."""
        ...

    def observations(self, name: str, kind: str, *, number: int | None = None,
                     limit: int = 50) -> list[Observation]:
        """The newest ``limit`` observations of ``kind`` for the model (or one version),
        newest first."""
        ...

    def pending_deliveries(self, limit: int = 100) -> list[Delivery]:
        """Outbox entries not delivered yet, oldest first."""
        ...

    def mark_delivery(self, id: str, *, attempts: int, delivered_at: str | None,
                      last_error: str) -> None:
        """Record a delivery attempt's outcome."""
        ...

    def stage_holders(self, stage: str) -> dict[str, int]:
        """Per model, the highest version number in ``stage`` (one cheap query: servers poll
        it)."""
        ...

    def import_vulns(
        self, snapshot: VulnSnapshot, records: Sequence[tuple[str, str, str]],
        event: AuditEvent,
    ) -> VulnSnapshot:
        """Store a snapshot and its ``(vuln id, normalised package, record JSON)`` rows in one
        transaction; it becomes the current snapshot. Returns it with its id."""
        ...

    def vuln_snapshot(self) -> VulnSnapshot | None:
        """The current (latest imported) snapshot."""
        ...

    def vuln_records(self, packages: Sequence[str]) -> list[str]:
        """Record JSON of the current snapshot affecting any of ``packages`` (normalised)."""
        ...

    def put_user(self, user: UserRow, event: AuditEvent) -> None:
        """Create or replace the user, with its audit event, in one transaction."""
        ...

    def get_user(self, name: str) -> UserRow | None: ...

    def list_users(self) -> list[UserRow]: ...

    def put_token(self, token: TokenRow, event: AuditEvent) -> None:
        """Create or replace (revoke) the token, with its audit event, in one transaction."""
        ...

    def get_token(self, id: str) -> TokenRow | None: ...

    def list_tokens(self, user: str | None = None) -> list[TokenRow]: ...

    def close(self) -> None: ...
