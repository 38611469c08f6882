"""What happens to versions once they serve: deployments (generation-checked), observations
(reference profiles, monitor runs, comparisons) and the outbox of deliveries."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lockgate.audit import canonical_json, now
from lockgate.errors import PromotionError
from lockgate.store.metadata.schema import deployments, observations, outbox
from lockgate.types import Delivery, DeploymentRow, Observation

__all__ = ["get_deployments", "get_observations", "insert_deliveries", "insert_observations",
           "mark_delivery", "pending_deliveries", "write_deployments"]


def write_deployments(conn: Connection,
                      changes: Mapping[str, tuple[int, Mapping[str, Any]]]) -> None:
    """Store each model's new deployment record if its generation is still the expected one
    (0 for none); PromotionError otherwise."""
    for name, (expected, record) in changes.items():
        current = conn.execute(sa.select(deployments.c.generation).where(
            deployments.c.name == name)).scalar()
        if (current or 0) != expected:
            raise PromotionError(
                f"the deployment of {name} changed meanwhile (generation "
                f"{current or 0}, expected {expected})",
                hint="look at `lockgate deploy status` and retry")
        body = canonical_json(dict(record))
        if current is None:
            conn.execute(deployments.insert().values(
                name=name, generation=1, record=body, updated_at=now()))
        else:
            conn.execute(deployments.update().where(deployments.c.name == name).values(
                generation=current + 1, record=body, updated_at=now()))


def get_deployments(conn: Connection) -> list[DeploymentRow]:
    rows = conn.execute(sa.select(deployments).order_by(deployments.c.name)).all()
    return [DeploymentRow(r.name, r.generation, json.loads(r.record), r.updated_at)
            for r in rows]


def insert_observations(conn: Connection, found: Iterable[Observation]) -> None:
    for o in found:
        conn.execute(observations.insert().values(
            kind=o.kind, name=o.name, number=o.number,
            record=canonical_json(dict(o.record)), created_at=o.created_at))


def get_observations(conn: Connection, name: str, kind: str, number: int | None,
                     limit: int) -> list[Observation]:
    q = sa.select(observations).where(observations.c.name == name,
                                      observations.c.kind == kind)
    if number is not None:
        q = q.where(observations.c.number == number)
    rows = conn.execute(q.order_by(observations.c.id.desc()).limit(limit)).all()
    return [Observation(r.kind, r.name, r.number, r.created_at, json.loads(r.record), r.id)
            for r in rows]


def insert_deliveries(conn: Connection, found: Iterable[Delivery]) -> None:
    for dl in found:
        conn.execute(outbox.insert().values(
            id=dl.id, name=dl.name, target=dl.target, event=canonical_json(dict(dl.event)),
            created_at=dl.created_at, attempts=dl.attempts, delivered_at=dl.delivered_at,
            last_error=dl.last_error))


def pending_deliveries(conn: Connection, limit: int) -> list[Delivery]:
    rows = conn.execute(sa.select(outbox).where(outbox.c.delivered_at.is_(None))
                        .order_by(outbox.c.created_at, outbox.c.id).limit(limit)).all()
    return [Delivery(r.id, r.name, r.target, json.loads(r.event), r.created_at, r.attempts,
                     r.delivered_at, r.last_error) for r in rows]


def mark_delivery(conn: Connection, id: str, *, attempts: int, delivered_at: str | None,
                  last_error: str) -> None:
    conn.execute(outbox.update().where(outbox.c.id == id).values(
        attempts=attempts, delivered_at=delivered_at, last_error=last_error))
