"""The audit log's statements: its last record, one chained append, records in order."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lockgate.audit import AuditEvent, AuditRecord, canonical_json, chain_record
from lockgate.store.metadata.schema import audit_log

__all__ = ["append", "last_record", "records"]


def last_record(conn: Connection) -> AuditRecord | None:
    row = conn.execute(
        sa.select(audit_log).order_by(audit_log.c.seq.desc()).limit(1)
    ).mappings().first()
    return _record(row) if row else None


def append(conn: Connection, ev: AuditEvent) -> AuditRecord:
    """Chain ``ev`` after the last record and insert it (the caller holds the write lock)."""
    rec = chain_record(last_record(conn), ev)
    conn.execute(
        audit_log.insert().values(
            seq=rec.seq, ts=rec.ts, type=rec.type, actor=rec.actor, model=rec.model,
            version=rec.version, payload=canonical_json(dict(rec.payload)),
            prev_hash=rec.prev_hash, hash=rec.hash,
        )
    )
    return rec


def records(conn: Connection, after: int) -> list[AuditRecord]:
    query = sa.select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq)
    return [_record(r) for r in conn.execute(query).mappings()]


def _record(row: Any) -> AuditRecord:
    return AuditRecord(
        seq=int(row["seq"]), ts=row["ts"], type=row["type"], actor=row["actor"],
        model=row["model"], version=row["version"], payload=json.loads(row["payload"]),
        prev_hash=row["prev_hash"], hash=row["hash"],
    )
