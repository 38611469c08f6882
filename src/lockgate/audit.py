"""Typed audit events in an append-only, hash-chained log.

Each record's ``hash`` is ``sha256(prev_hash + canonical_json(record fields))``; the first record
chains from 64 zeros. Editing, deleting or reordering any row breaks the chain at that row, which
:func:`verify_chain` names.

Refusals repeat (a script retrying with a token that lacks a role), so :class:`DenialRecorder`
writes the first of a run at once and folds the rest of its window into one row carrying
``count``, ``first`` and ``last``.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lockgate.errors import InvalidInputError

__all__ = [
    "DENIAL_WINDOW_S",
    "GENESIS",
    "MAX_DETAIL",
    "AuditEvent",
    "AuditRecord",
    "ChainReport",
    "DenialRecorder",
    "EventType",
    "canonical_json",
    "chain_record",
    "verify_chain",
]

GENESIS = "0" * 64

log = logging.getLogger("lockgate.audit")


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
    ARTIFACTS_COLLECTED = "artifacts.collected"


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


def chain_record(prev: AuditRecord | None, event: AuditEvent, ts: str | None = None) -> AuditRecord:
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


DENIAL_WINDOW_S = 60.0
"""Repeats of one refusal within this many seconds of its first are folded into one row."""

_MAX_PENDING = 10_000
MAX_DETAIL = 160
"""A refusal's free-text detail (what the client sent) is cut to this many characters."""


@dataclass
class _Run:
    event: AuditEvent
    started: float  # monotonic
    count: int = 0  # repeats since the row written at the start
    first: str = ""
    last: str = ""
    detail: str = ""  # the latest repeat's detail


class DenialRecorder:
    """Appends refusal events through ``append``, one row per run of repeats.

    A run is one actor refused the same operation on the same subject for the same reason
    (equal type, actor, model, version and payload: callers keep the payload to fixed
    values, and pass what the client chose — an Origin, a path — as ``detail``, which is
    kept out of the run's key). Its first refusal is appended at once (with its ``detail``);
    repeats within ``window`` seconds are counted in memory and appended as one event whose
    payload adds ``count`` (the repeats), ``first`` and ``last`` (their times) and
    ``last_detail`` — when the window closes (a daemon thread wakes for it), when the next
    repeat after it arrives, or on :meth:`flush` / :meth:`close`. At most 10,000 runs are
    open; past that the oldest closes early. Every row goes through ``append``, so the hash
    chain stays whole.
    """

    def __init__(self, append: Callable[[AuditEvent], object], *,
                 window: float = DENIAL_WINDOW_S) -> None:
        if window <= 0:
            raise InvalidInputError(f"the denial window must be positive, not {window}")
        self._append = append
        self._window = window
        self._runs: dict[str, _Run] = {}  # in the order the runs started: oldest first
        self._cond = threading.Condition()
        self._sweeper: threading.Thread | None = None
        self._closed = False

    @staticmethod
    def _key(event: AuditEvent) -> str:
        return canonical_json([str(event.type), event.actor, event.model, event.version,
                               dict(event.payload)])

    def record(self, event: AuditEvent, detail: str = "") -> None:
        """Append ``event`` now, or count it into its open run. ``detail`` (cut to
        ``MAX_DETAIL`` characters) is kept beside the run, not in its key."""
        key = self._key(event)
        detail = detail[:MAX_DETAIL]
        due: list[AuditEvent] = []
        with self._cond:
            clock = time.monotonic()
            run = self._runs.get(key)
            if run is not None and clock - run.started < self._window and not self._closed:
                run.count += 1
                run.last = now()
                run.detail = detail
                if not run.first:
                    run.first = run.last
                return
            if run is not None:
                del self._runs[key]
                due.extend(self._summary(run))
            if len(self._runs) >= _MAX_PENDING:  # the oldest run closes early
                oldest = next(iter(self._runs))
                due.extend(self._summary(self._runs.pop(oldest)))
            if not self._closed:
                self._runs[key] = _Run(event, clock)
                self._wake()
        for summary in due:
            self._append(summary)
        self._append(AuditEvent(event.type, event.actor, event.model, event.version,
                                {**event.payload, "detail": detail}) if detail else event)

    def _summary(self, run: _Run) -> list[AuditEvent]:
        if run.count == 0:
            return []
        e = run.event
        extra = {"last_detail": run.detail} if run.detail else {}
        return [AuditEvent(e.type, e.actor, e.model, e.version,
                           {**e.payload, "count": run.count, "first": run.first,
                            "last": run.last, "window_s": self._window, **extra})]

    def _wake(self) -> None:
        if self._sweeper is None or not self._sweeper.is_alive():
            self._sweeper = threading.Thread(target=self._sweep, name="lockgate-denials",
                                             daemon=True)
            self._sweeper.start()
        self._cond.notify_all()

    def _sweep(self) -> None:
        while True:
            due: list[AuditEvent] = []
            with self._cond:
                if not self._runs or self._closed:
                    self._sweeper = None
                    return
                clock = time.monotonic()
                while self._runs:  # oldest first: stop at the first still open
                    key, run = next(iter(self._runs.items()))
                    if clock - run.started < self._window:
                        break
                    del self._runs[key]
                    due.extend(self._summary(run))
                if not due and self._runs:
                    soonest = next(iter(self._runs.values())).started + self._window
                    self._cond.wait(timeout=max(soonest - clock, 0.01))
            for summary in due:
                try:
                    self._append(summary)
                except Exception:  # the store went away: nothing to raise to
                    log.exception("could not append folded refusals to the audit log")

    def flush(self) -> None:
        """Append every open run's repeats now."""
        with self._cond:
            runs = list(self._runs.values())
            self._runs.clear()
            self._cond.notify_all()
        for run in runs:
            for summary in self._summary(run):
                self._append(summary)

    def close(self) -> None:
        """Flush, and record every later refusal at once (the store is going away)."""
        with self._cond:
            self._closed = True
        self.flush()
