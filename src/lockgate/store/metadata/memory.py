"""Metadata in memory, for fast tests: same semantics as the SQL store, one lock (and one
registration lock per model name)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from lockgate.audit import AuditEvent, AuditRecord, chain_record, now
from lockgate.errors import NotFoundError, PromotionError, StorageError
from lockgate.store.metadata.interface import (
    Change,
    Decision,
    Delivery,
    DeploymentRow,
    EventBuilder,
    GateRun,
    Observation,
    RecordBuilder,
    TokenRow,
    UserRow,
    VersionRow,
    VulnSnapshot,
)

__all__ = ["MemoryMetadataStore"]


class MemoryMetadataStore:
    """Every table as a Python collection, behind one re-entrant lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._versions: dict[tuple[str, int], VersionRow] = {}
        self._aliases: dict[tuple[str, str], int] = {}
        self._gate_runs: list[GateRun] = []
        self._decisions: list[Decision] = []
        self._deployments: dict[str, DeploymentRow] = {}
        self._observations: list[Observation] = []
        self._outbox: dict[str, Delivery] = {}
        self.records: list[AuditRecord] = []
        self._snapshots: list[VulnSnapshot] = []
        self._vulns: dict[int, list[tuple[str, str, str]]] = {}
        self._users: dict[str, UserRow] = {}
        self._tokens: dict[str, TokenRow] = {}
        self._registering: dict[str, threading.Lock] = {}

    def _append(self, event: AuditEvent) -> AuditRecord:
        rec = chain_record(self.records[-1] if self.records else None, event)
        self.records.append(rec)
        return rec

    @contextmanager
    def registering(self, name: str) -> Iterator[int]:
        with self._lock:
            lock = self._registering.setdefault(name, threading.Lock())
        with lock:
            with self._lock:
                number = self._next_number(name)
            yield number

    def _next_number(self, name: str) -> int:
        return 1 + max((n for (m, n) in self._versions if m == name), default=0)

    def create_version(
        self, name: str, build: RecordBuilder, stage: str, event: AuditEvent | EventBuilder,
        *, number: int | None = None, extra: Change | None = None,
    ) -> int:
        with self._lock:
            next_ = self._next_number(name)
            if number is not None and number != next_:
                raise StorageError(f"{name}@{number} was stored by another registration "
                                   "meanwhile", hint="register it again")
            record = dict(build(next_))
            if extra is not None:
                self._check(extra)
            self._versions[(name, next_)] = VersionRow(name, next_, stage, record)
            ev = event(record) if callable(event) else event
            self._append(replace(ev, model=name, version=next_))
            if extra is not None:
                self._write(extra)
            return next_

    def apply(self, change: Change) -> None:
        with self._lock:
            self._check(change)
            self._write(change)

    def _check(self, change: Change) -> None:
        """PromotionError (or NotFoundError) unless every expectation of ``change`` holds."""
        for key, stage in change.expect.items():
            row = self._versions.get(key)
            if row is None:
                raise NotFoundError(f"version {key[0]}@{key[1]} does not exist")
            if row.stage != stage:
                raise PromotionError(
                    f"{key[0]}@{key[1]} is now in stage {row.stage!r}, not {stage!r}",
                    hint="another change landed first; look again and retry",
                )
        for (name, stage), numbers in change.expect_holders.items():
            held = frozenset(n for (m, n), r in self._versions.items()
                             if m == name and r.stage == stage)
            if held != numbers:
                raise PromotionError(
                    f"{name} in stage {stage!r} changed meanwhile: now "
                    f"{sorted(held) or 'none'}, expected {sorted(numbers) or 'none'}",
                    hint="another promotion landed first; look again and retry",
                )
        for dname, (expected, _record) in change.deployments.items():
            current = self._deployments.get(dname)
            if (current.generation if current else 0) != expected:
                raise PromotionError(f"the deployment of {dname} changed meanwhile")
        for dl in change.deliveries:
            if dl.id in self._outbox:
                raise PromotionError(f"delivery {dl.id} exists already")

    def _write(self, change: Change) -> None:
        for key, stage in change.stages.items():
            self._versions[key] = replace(self._versions[key], stage=stage)
        for akey, number in change.aliases.items():
            if number is None:
                self._aliases.pop(akey, None)
            else:
                self._aliases[akey] = number
        for dname, (_, record) in change.deployments.items():
            current = self._deployments.get(dname)
            self._deployments[dname] = DeploymentRow(
                dname, (current.generation if current else 0) + 1, dict(record), now())
        self._gate_runs.extend(change.gate_runs)
        self._decisions.extend(change.decisions)
        for o in change.observations:
            self._observations.append(replace(o, id=len(self._observations) + 1))
        for dl in change.deliveries:
            self._outbox[dl.id] = dl
        for event in change.events:
            self._append(event)

    def append_event(self, event: AuditEvent) -> AuditRecord:
        with self._lock:
            return self._append(event)

    def get_version(self, name: str, number: int) -> VersionRow | None:
        return self._versions.get((name, number))

    def list_versions(self, name: str) -> list[VersionRow]:
        with self._lock:
            return sorted(
                (r for (m, _), r in self._versions.items() if m == name), key=lambda r: r.number
            )

    def versions_in_stage(self, name: str, stage: str) -> list[VersionRow]:
        return [r for r in self.list_versions(name) if r.stage == stage]

    def list_models(self) -> list[str]:
        with self._lock:
            return sorted({m for (m, _) in self._versions})

    def version_index(self) -> list[tuple[str, int, str]]:
        with self._lock:
            return sorted((m, n, r.stage) for (m, n), r in self._versions.items())

    def all_aliases(self) -> dict[str, dict[str, int]]:
        with self._lock:
            out: dict[str, dict[str, int]] = {}
            for (m, a), n in self._aliases.items():
                out.setdefault(m, {})[a] = n
            return out

    def aliases(self, name: str) -> dict[str, int]:
        with self._lock:
            return {a: n for (m, a), n in self._aliases.items() if m == name}

    def gate_runs(self, name: str, number: int) -> list[GateRun]:
        with self._lock:
            return [g for g in self._gate_runs if (g.name, g.number) == (name, number)]

    def audit_records(self, after: int = 0) -> list[AuditRecord]:
        with self._lock:
            return [r for r in self.records if r.seq > after]

    def audit_tail(self) -> int:
        with self._lock:
            return self.records[-1].seq if self.records else 0

    @contextmanager
    def exclusive(self) -> Iterator[int]:
        with self._lock:
            yield self.records[-1].seq if self.records else 0

    def stage_holders(self, stage: str) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for (name, number), row in self._versions.items():
                if row.stage == stage:
                    out[name] = max(number, out.get(name, 0))
            return out

    def deployments(self) -> list[DeploymentRow]:
        with self._lock:
            return [self._deployments[n] for n in sorted(self._deployments)]

    def observations(self, name: str, kind: str, *, number: int | None = None,
                     limit: int = 50) -> list[Observation]:
        with self._lock:
            found = [o for o in reversed(self._observations) if o.name == name
                     and o.kind == kind and (number is None or o.number == number)]
            return found[:limit]

    def pending_deliveries(self, limit: int = 100) -> list[Delivery]:
        with self._lock:
            return [d for d in self._outbox.values() if d.delivered_at is None][:limit]

    def mark_delivery(self, id: str, *, attempts: int, delivered_at: str | None,
                      last_error: str) -> None:
        with self._lock:
            d = self._outbox[id]
            self._outbox[id] = replace(d, attempts=attempts, delivered_at=delivered_at,
                                       last_error=last_error)

    def decisions(self, name: str, number: int) -> list[Decision]:
        with self._lock:
            return [d for d in self._decisions if (d.name, d.number) == (name, number)]

    def import_vulns(
        self, snapshot: VulnSnapshot, records: Sequence[tuple[str, str, str]],
        event: AuditEvent,
    ) -> VulnSnapshot:
        with self._lock:
            stored = replace(snapshot, id=len(self._snapshots) + 1)
            self._snapshots.append(stored)
            self._vulns[stored.id] = list(records)
            self._append(event)
            return stored

    def vuln_snapshot(self) -> VulnSnapshot | None:
        with self._lock:
            return self._snapshots[-1] if self._snapshots else None

    def vuln_records(self, packages: Sequence[str]) -> list[str]:
        with self._lock:
            if not self._snapshots:
                return []
            wanted = set(packages)
            rows = self._vulns[self._snapshots[-1].id]
            return [rec for (_, pkg, rec) in rows if pkg in wanted]

    def put_user(self, user: UserRow, event: AuditEvent) -> None:
        with self._lock:
            self._users[user.name] = user
            self._append(event)

    def get_user(self, name: str) -> UserRow | None:
        return self._users.get(name)

    def list_users(self) -> list[UserRow]:
        with self._lock:
            return [self._users[n] for n in sorted(self._users)]

    def put_token(self, token: TokenRow, event: AuditEvent) -> None:
        with self._lock:
            self._tokens[token.id] = token
            self._append(event)

    def get_token(self, id: str) -> TokenRow | None:
        return self._tokens.get(id)

    def list_tokens(self, user: str | None = None) -> list[TokenRow]:
        with self._lock:
            return [t for t in self._tokens.values() if user is None or t.user == user]

    def close(self) -> None:
        return None
