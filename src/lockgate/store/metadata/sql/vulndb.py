"""Imported OSV snapshots and the records that affect each normalised package name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lockgate.store.metadata.schema import vuln_records, vuln_snapshots
from lockgate.types import VulnSnapshot

__all__ = ["current_snapshot", "insert_snapshot", "records_for"]

_INSERT_CHUNK = 1000
_QUERY_CHUNK = 500


def insert_snapshot(conn: Connection, snapshot: VulnSnapshot,
                    records: Sequence[tuple[str, str, str]]) -> VulnSnapshot:
    """Store the snapshot and its ``(vuln id, package, record JSON)`` rows; returns it with
    its id."""
    result = conn.execute(vuln_snapshots.insert().values(
        sha256=snapshot.sha256, snapshot_date=snapshot.snapshot_date,
        imported_at=snapshot.imported_at, source=snapshot.source, records=snapshot.records,
        ecosystem=snapshot.ecosystem, export=snapshot.export,
    ))
    key = result.inserted_primary_key
    assert key is not None
    sid = int(key[0])
    rows = [{"snapshot_id": sid, "vuln_id": v, "package": p, "record": r}
            for (v, p, r) in records]
    for i in range(0, len(rows), _INSERT_CHUNK):
        conn.execute(vuln_records.insert(), rows[i:i + _INSERT_CHUNK])
    return replace(snapshot, id=sid)


def current_snapshot(conn: Connection) -> VulnSnapshot | None:
    row = conn.execute(
        sa.select(vuln_snapshots).order_by(vuln_snapshots.c.id.desc()).limit(1)
    ).mappings().first()
    if row is None:
        return None
    return VulnSnapshot(int(row["id"]), row["sha256"], row["snapshot_date"],
                        row["imported_at"], row["source"], int(row["records"]),
                        str(row["ecosystem"]), bool(row["export"]))


def records_for(conn: Connection, snapshot_id: int, packages: Sequence[str]) -> list[str]:
    """Record JSON of snapshot ``snapshot_id`` affecting any of ``packages``."""
    wanted = sorted(set(packages))
    out: list[str] = []
    for i in range(0, len(wanted), _QUERY_CHUNK):
        out.extend(str(r[0]) for r in conn.execute(
            sa.select(vuln_records.c.record).where(
                vuln_records.c.snapshot_id == snapshot_id,
                vuln_records.c.package.in_(wanted[i:i + _QUERY_CHUNK]),
            )
        ))
    return out
