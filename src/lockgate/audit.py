"""Typed audit events in an append-only, hash-chained log.

Each record's ``hash`` is ``sha256(prev_hash + canonical_json(record fields))``; the first record
chains from 64 zeros. Editing, deleting or reordering any row breaks the chain at that row, which
:func:`verify_chain` names.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "GENESIS",
    "AuditEvent",
    "AuditRecord",
    "ChainReport",
    "EventType",
    "canonical_json",
    "seal",
    "verify_chain",
]

GENESIS = "0" * 64


class EventType(enum.StrEnum):
    MODEL_REGISTERED = "model.registered"
    STAGE_CHANGED = "version.stage_changed"
    PROMOTION_REFUSED = "promotion.refused"
    ALIAS_SET = "alias.set"
    ALIAS_REMOVED = "alias.removed"
    SERVE_STARTED = "serve.started"
    SERVE_STOPPED = "serve.stopped"
    ARTIFACT_REFUSED = "artifact.refused"
    MODEL_LOAD_FAILED = "model.load_failed"
    SIGNATURE_REFUSED = "signature.refused"
    VULNDB_IMPORTED = "vulndb.imported"
    ENVIRONMENT_DRIFT = "environment.drift"
    EVIDENCE_EXPORTED = "evidence.exported"
    APPROVED = "version.approved"
    REJECTED = "version.rejected"
    WAIVED = "gate.waived"
    ACCESS_DENIED = "access.denied"
    REPRODUCED = "version.reproduced"
    DEPLOYMENT_CHANGED = "deployment.changed"
    DEPLOY_SWITCHED = "deploy.switched"
    DEPLOY_FAILED = "deploy.failed"
    DEPLOY_ROLLED_BACK = "deploy.rolled_back"
    REFERENCE_SET = "reference.set"
    REGISTRATION_REFUSED = "registration.refused"
    MONITOR_STATE_CHANGED = "monitor.state_changed"
    MONITOR_TRIGGERED = "monitor.triggered"
    MONITOR_ROLLBACK_FAILED = "monitor.rollback_failed"
    USER_CHANGED = "user.changed"
    TOKEN_CREATED = "token.created"
    TOKEN_REVOKED = "token.revoked"


@dataclass(frozen=True)
class AuditEvent:
    """An event before it is written: what happened, who did it, to which model version."""

    type: EventType
    actor: str
    model: str | None = None
    version: int | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: str
    type: str
    actor: str
    model: str | None
    version: int | None
    payload: Mapping[str, Any]
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "type": self.type,
            "actor": self.actor,
            "model": self.model,
            "version": self.version,
            "payload": dict(self.payload),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "prev_hash": self.prev_hash, "hash": self.hash}


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, UTF-8, no NaN: the same bytes for the same value."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(body)).encode("utf-8")).hexdigest()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def seal(prev: AuditRecord | None, event: AuditEvent, ts: str | None = None) -> AuditRecord:
    """The record that follows ``prev`` (None for the first) for ``event``."""
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS if prev is None else prev.hash
    body = {
        "seq": seq,
        "ts": ts or now(),
        "type": str(event.type),
        "actor": event.actor,
        "model": event.model,
        "version": event.version,
        "payload": json.loads(canonical_json(dict(event.payload))),
    }
    return AuditRecord(
        seq=seq,
        ts=body["ts"],
        type=body["type"],
        actor=event.actor,
        model=event.model,
        version=event.version,
        payload=body["payload"],
        prev_hash=prev_hash,
        hash=_hash(prev_hash, body),
    )


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    count: int
    first_broken: int | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "first_broken": self.first_broken,
            "reason": self.reason,
        }


def verify_chain(records: Iterable[AuditRecord]) -> ChainReport:
    """Recompute every hash in sequence order; report the first row that does not fit."""
    prev_hash = GENESIS
    expected_seq = 1
    count = 0
    for rec in records:
        count += 1
        if rec.seq != expected_seq:
            return ChainReport(False, count, rec.seq,
                               f"row {rec.seq}: expected sequence number {expected_seq} "
                               "(a row was deleted or inserted)")
        if rec.prev_hash != prev_hash:
            return ChainReport(False, count, rec.seq,
                               f"row {rec.seq}: prev_hash does not match the hash of row "
                               f"{rec.seq - 1}")
        actual = _hash(prev_hash, rec.body())
        if actual != rec.hash:
            return ChainReport(False, count, rec.seq,
                               f"row {rec.seq}: content does not match its hash (edited)")
        prev_hash = rec.hash
        expected_seq += 1
    return ChainReport(True, count)
