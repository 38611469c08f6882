"""Versions and what promotion changes about them: stages, aliases, gate runs, decisions, and
the optimistic checks a promotion makes before it writes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lockgate.audit import canonical_json, now
from lockgate.errors import NotFoundError, PromotionError
from lockgate.store.metadata.schema import aliases, decisions, gate_runs, versions
from lockgate.types import Decision, GateRun, VersionRow

__all__ = [
    "all_aliases", "check_holders", "check_stages", "get_decisions", "get_gate_runs",
    "get_version", "insert_decisions", "insert_gate_runs", "insert_version", "list_models",
    "list_versions", "model_aliases", "next_number", "set_aliases", "set_stages",
    "stage_holders", "version_index", "versions_in_stage",
]


# -- versions ----------------------------------------------------------------------------------
def next_number(conn: Connection, name: str) -> int:
    """One more than the model's highest version number (1 for a new model)."""
    top = conn.execute(
        sa.select(sa.func.max(versions.c.number)).where(versions.c.name == name)
    ).scalar()
    return int(top or 0) + 1


def insert_version(conn: Connection, name: str, number: int, stage: str,
                   record: Mapping[str, Any]) -> None:
    conn.execute(versions.insert().values(
        name=name, number=number, stage=stage, record=canonical_json(dict(record)),
        created_at=now()))


def get_version(conn: Connection, name: str, number: int) -> VersionRow | None:
    row = conn.execute(
        sa.select(versions).where(versions.c.name == name, versions.c.number == number)
    ).mappings().first()
    return _version(row) if row else None


def list_versions(conn: Connection, name: str) -> list[VersionRow]:
    rows = conn.execute(
        sa.select(versions).where(versions.c.name == name).order_by(versions.c.number)
    ).mappings()
    return [_version(r) for r in rows]


def versions_in_stage(conn: Connection, name: str, stage: str) -> list[VersionRow]:
    rows = conn.execute(
        sa.select(versions).where(versions.c.name == name, versions.c.stage == stage)
        .order_by(versions.c.number)
    ).mappings().all()
    return [_version(r) for r in rows]


def list_models(conn: Connection) -> list[str]:
    query = sa.select(versions.c.name).distinct().order_by(versions.c.name)
    return [str(r[0]) for r in conn.execute(query)]


def version_index(conn: Connection) -> list[tuple[str, int, str]]:
    query = (sa.select(versions.c.name, versions.c.number, versions.c.stage)
             .order_by(versions.c.name, versions.c.number))
    return [(str(r.name), int(r.number), str(r.stage)) for r in conn.execute(query)]


def stage_holders(conn: Connection, stage: str) -> dict[str, int]:
    rows = conn.execute(
        sa.select(versions.c.name, sa.func.max(versions.c.number))
        .where(versions.c.stage == stage).group_by(versions.c.name)
    ).all()
    return {str(name): int(number) for name, number in rows}


# -- promotion checks and writes ---------------------------------------------------------------
def check_stages(conn: Connection, expect: Mapping[tuple[str, int], str]) -> None:
    """PromotionError unless every version is still in the stage ``expect`` names."""
    for (name, number), stage in expect.items():
        current = conn.execute(
            sa.select(versions.c.stage).where(
                versions.c.name == name, versions.c.number == number)
        ).scalar()
        if current is None:
            raise NotFoundError(f"version {name}@{number} does not exist")
        if current != stage:
            raise PromotionError(
                f"{name}@{number} is now in stage {current!r}, not {stage!r}",
                hint="another change landed first; look again and retry",
            )


def check_holders(conn: Connection,
                  expect: Mapping[tuple[str, str], frozenset[int]]) -> None:
    """PromotionError unless each (model, stage) still holds exactly the expected numbers."""
    for (name, stage), numbers in expect.items():
        held = frozenset(conn.execute(
            sa.select(versions.c.number).where(
                versions.c.name == name, versions.c.stage == stage)
        ).scalars())
        if held != numbers:
            raise PromotionError(
                f"{name} in stage {stage!r} changed meanwhile: now "
                f"{sorted(held) or 'none'}, expected {sorted(numbers) or 'none'}",
                hint="another promotion landed first; look again and retry",
            )


def set_stages(conn: Connection, stages: Mapping[tuple[str, int], str]) -> None:
    for (name, number), stage in stages.items():
        conn.execute(versions.update()
                     .where(versions.c.name == name, versions.c.number == number)
                     .values(stage=stage))


def set_aliases(conn: Connection, targets: Mapping[tuple[str, str], int | None]) -> None:
    """Point each (model, alias) at a version number, or remove it for None."""
    for (name, alias), target in targets.items():
        conn.execute(aliases.delete().where(aliases.c.name == name, aliases.c.alias == alias))
        if target is not None:
            conn.execute(aliases.insert().values(name=name, alias=alias, number=target))


def insert_gate_runs(conn: Connection, runs: Iterable[GateRun]) -> None:
    for run in runs:
        conn.execute(gate_runs.insert().values(
            name=run.name, number=run.number, from_stage=run.from_stage,
            to_stage=run.to_stage, passed=run.passed,
            results=canonical_json([dict(r) for r in run.results]),
            actor=run.actor, created_at=run.created_at,
        ))


def insert_decisions(conn: Connection, found: Iterable[Decision]) -> None:
    for d in found:
        conn.execute(decisions.insert().values(
            kind=d.kind, name=d.name, number=d.number, stage=d.stage, gate=d.gate,
            actor=d.actor, comment=d.comment, expires=d.expires,
            detail=canonical_json(dict(d.detail)), created_at=d.created_at,
        ))


# -- reads of what promotion wrote -------------------------------------------------------------
def model_aliases(conn: Connection, name: str) -> dict[str, int]:
    return {str(r.alias): int(r.number)
            for r in conn.execute(sa.select(aliases).where(aliases.c.name == name))}


def all_aliases(conn: Connection) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in conn.execute(sa.select(aliases)):
        out.setdefault(str(r.name), {})[str(r.alias)] = int(r.number)
    return out


def get_gate_runs(conn: Connection, name: str, number: int) -> list[GateRun]:
    rows = conn.execute(
        sa.select(gate_runs)
        .where(gate_runs.c.name == name, gate_runs.c.number == number)
        .order_by(gate_runs.c.id)
    ).mappings()
    return [GateRun(name=r["name"], number=r["number"], from_stage=r["from_stage"],
                    to_stage=r["to_stage"], passed=bool(r["passed"]),
                    results=json.loads(r["results"]), actor=r["actor"],
                    created_at=r["created_at"]) for r in rows]


def get_decisions(conn: Connection, name: str, number: int) -> list[Decision]:
    rows = conn.execute(
        sa.select(decisions).where(decisions.c.name == name, decisions.c.number == number)
        .order_by(decisions.c.id)
    ).all()
    return [Decision(kind=r.kind, name=r.name, number=r.number, stage=r.stage,
                     actor=r.actor, created_at=r.created_at, comment=r.comment,
                     gate=r.gate, expires=r.expires, detail=json.loads(r.detail))
            for r in rows]


def _version(row: Any) -> VersionRow:
    return VersionRow(name=row["name"], number=int(row["number"]), stage=row["stage"],
                      record=json.loads(row["record"]))
