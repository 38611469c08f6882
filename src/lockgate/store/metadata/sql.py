"""Metadata in a SQL database through SQLAlchemy; schema managed by Alembic, upgraded on open.

SQLite (the embedded default) runs every transaction as ``BEGIN IMMEDIATE`` with a busy timeout,
so writers from several processes queue instead of failing: one writer path. Version numbers and
audit sequence numbers are primary keys, so a database that lets two writers race (PostgreSQL)
turns the loser into an IntegrityError, and the transaction is retried.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from lockgate.audit import AuditEvent, AuditRecord, canonical_json, chain_record, now
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
from lockgate.store.metadata.schema import (
    aliases,
    audit_log,
    decisions,
    deployments,
    gate_runs,
    observations,
    outbox,
    tokens,
    users,
    versions,
    vuln_records,
    vuln_snapshots,
)

__all__ = ["SqlMetadataStore"]

T = TypeVar("T")
_MIGRATIONS = Path(__file__).parent / "migrations"
_RETRIES = 20
_MIGRATE_LOCK = threading.Lock()
_CHANNEL = "lockgate_changes"
_WRITE_LOCK = 0x6C6F636B  # "lock": the advisory lock every PostgreSQL write transaction takes


def _sqlite_engine(url: str) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin hook issue BEGIN
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class SqlMetadataStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._postgres = url.startswith("postgresql")
        try:
            if url.startswith("sqlite"):
                path = sa.make_url(url).database
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.engine = _sqlite_engine(url)
            else:
                self.engine = sa.create_engine(url, pool_pre_ping=True)
            self._migrate()
        except DBAPIError as exc:
            raise StorageError(
                f"cannot open the metadata store {_safe(url)}: {exc.orig}"
            ) from exc
        except ImportError as exc:
            raise StorageError(f"no database driver for {_safe(url)}: {exc}") from exc

    def _migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        # Alembic's op/context proxies are process-global: one migration at a time per
        # process; the advisory lock makes it one at a time across PostgreSQL clients too.
        with _MIGRATE_LOCK, self.engine.begin() as conn:
            if self._postgres:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                if self._postgres:
                    # one writer at a time, as SQLite's BEGIN IMMEDIATE: checks and the audit
                    # chain's next link see every committed write (released at commit)
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK})")
                yield conn
        except SAIntegrityError:
            raise
        except DBAPIError as exc:
            raise StorageError(f"metadata store error: {exc.orig}") from exc

    def _retry(self, fn: Callable[[Connection], T]) -> T:
        for attempt in range(_RETRIES):
            try:
                with self._tx() as conn:
                    return fn(conn)
            except SAIntegrityError:
                if attempt == _RETRIES - 1:
                    raise StorageError("metadata store: too many conflicting writers") from None
                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")

    @contextmanager
    def exclusive(self) -> Iterator[int]:
        with self._tx() as conn:  # SQLite's BEGIN IMMEDIATE, PostgreSQL's advisory lock
            last = self._last_record(conn)
            yield last.seq if last else 0

    def audit_tail(self) -> int:
        last = self._read(self._last_record)
        return last.seq if last else 0

    # -- audit -------------------------------------------------------------------------------
    def _last_record(self, conn: Connection) -> AuditRecord | None:
        row = conn.execute(
            sa.select(audit_log).order_by(audit_log.c.seq.desc()).limit(1)
        ).mappings().first()
        return _record(row) if row else None

    def _append(self, conn: Connection, ev: AuditEvent) -> AuditRecord:
        rec = chain_record(self._last_record(conn), ev)
        conn.execute(
            audit_log.insert().values(
                seq=rec.seq, ts=rec.ts, type=rec.type, actor=rec.actor, model=rec.model,
                version=rec.version, payload=canonical_json(dict(rec.payload)),
                prev_hash=rec.prev_hash, hash=rec.hash,
            )
        )
        return rec

    def append_event(self, event: AuditEvent) -> AuditRecord:
        return self._retry(lambda conn: self._append(conn, event))

    # -- writes ------------------------------------------------------------------------------
    def create_version(
        self, name: str, build: RecordBuilder, stage: str, event: AuditEvent | EventBuilder
    ) -> int:
        def write(conn: Connection) -> int:
            top = conn.execute(
                sa.select(sa.func.max(versions.c.number)).where(versions.c.name == name)
            ).scalar()
            number = int(top or 0) + 1
            record = dict(build(number))
            body = canonical_json(record)
            conn.execute(
                versions.insert().values(
                    name=name, number=number, stage=stage, record=body, created_at=now()
                )
            )
            ev = event(record) if callable(event) else event
            self._append(conn, replace(ev, model=name, version=number))
            return number

        return self._retry(write)

    def apply(self, change: Change) -> None:
        def write(conn: Connection) -> None:
            for (name, number), stage in change.expect.items():
                current = conn.execute(
                    sa.select(versions.c.stage).where(
                        versions.c.name == name, versions.c.number == number
                    )
                ).scalar()
                if current is None:
                    raise NotFoundError(f"version {name}@{number} does not exist")
                if current != stage:
                    raise PromotionError(
                        f"{name}@{number} is now in stage {current!r}, not {stage!r}",
                        hint="another change landed first; look again and retry",
                    )
            for (name, stage), numbers in change.expect_holders.items():
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
            for (name, number), stage in change.stages.items():
                conn.execute(
                    versions.update()
                    .where(versions.c.name == name, versions.c.number == number)
                    .values(stage=stage)
                )
            for (name, alias), target in change.aliases.items():
                conn.execute(
                    aliases.delete().where(aliases.c.name == name, aliases.c.alias == alias)
                )
                if target is not None:
                    conn.execute(aliases.insert().values(name=name, alias=alias, number=target))
            for run in change.gate_runs:
                conn.execute(
                    gate_runs.insert().values(
                        name=run.name, number=run.number, from_stage=run.from_stage,
                        to_stage=run.to_stage, passed=run.passed,
                        results=canonical_json([dict(r) for r in run.results]),
                        actor=run.actor, created_at=run.created_at,
                    )
                )
            for dname, (expected, record) in change.deployments.items():
                current = conn.execute(sa.select(deployments.c.generation).where(
                    deployments.c.name == dname)).scalar()
                if (current or 0) != expected:
                    raise PromotionError(
                        f"the deployment of {dname} changed meanwhile (generation "
                        f"{current or 0}, expected {expected})",
                        hint="look at `lockgate deploy status` and retry")
                body = canonical_json(dict(record))
                if current is None:
                    conn.execute(deployments.insert().values(
                        name=dname, generation=1, record=body, updated_at=now()))
                else:
                    conn.execute(deployments.update().where(deployments.c.name == dname)
                                 .values(generation=current + 1, record=body,
                                         updated_at=now()))
            for d in change.decisions:
                conn.execute(decisions.insert().values(
                    kind=d.kind, name=d.name, number=d.number, stage=d.stage, gate=d.gate,
                    actor=d.actor, comment=d.comment, expires=d.expires,
                    detail=canonical_json(dict(d.detail)), created_at=d.created_at,
                ))
            for o in change.observations:
                conn.execute(observations.insert().values(
                    kind=o.kind, name=o.name, number=o.number,
                    record=canonical_json(dict(o.record)), created_at=o.created_at))
            for dl in change.deliveries:
                conn.execute(outbox.insert().values(
                    id=dl.id, name=dl.name, target=dl.target,
                    event=canonical_json(dict(dl.event)), created_at=dl.created_at,
                    attempts=dl.attempts, delivered_at=dl.delivered_at,
                    last_error=dl.last_error))
            for ev in change.events:
                self._append(conn, ev)
            if self._postgres and (change.deployments or change.stages):
                conn.exec_driver_sql(f"NOTIFY {_CHANNEL}")  # delivered at commit

        self._retry(write)

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """On PostgreSQL, call ``callback`` (on a background thread) whenever a committed
        change moved a stage or a deployment, until the returned function is called. None on
        other databases: callers poll."""
        if not self._postgres:
            return None
        import psycopg

        dsn = sa.make_url(self.url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        stop = threading.Event()
        listening = threading.Event()

        def listen() -> None:
            while not stop.is_set():
                try:
                    with psycopg.connect(dsn, autocommit=True) as conn:
                        conn.execute(f"LISTEN {_CHANNEL}")
                        if listening.is_set():
                            callback()  # reconnected: changes may have been missed meanwhile
                        listening.set()
                        while not stop.is_set():
                            for _ in conn.notifies(timeout=0.5):
                                callback()
                except psycopg.Error:
                    listening.set()  # give up waiting; polling covers it meanwhile
                    stop.wait(1.0)

        threading.Thread(target=listen, name="lockgate-listen", daemon=True).start()
        # return once LISTEN is in place: a change committed after this call is never missed
        listening.wait(timeout=10.0)
        return stop.set

    def observations(self, name: str, kind: str, *, number: int | None = None,
                     limit: int = 50) -> list[Observation]:
        def read(conn: Connection) -> list[Observation]:
            q = sa.select(observations).where(observations.c.name == name,
                                              observations.c.kind == kind)
            if number is not None:
                q = q.where(observations.c.number == number)
            rows = conn.execute(q.order_by(observations.c.id.desc()).limit(limit)).all()
            return [Observation(r.kind, r.name, r.number, r.created_at, json.loads(r.record),
                                r.id) for r in rows]

        return self._read(read)

    def pending_deliveries(self, limit: int = 100) -> list[Delivery]:
        def read(conn: Connection) -> list[Delivery]:
            rows = conn.execute(sa.select(outbox).where(outbox.c.delivered_at.is_(None))
                                .order_by(outbox.c.created_at, outbox.c.id).limit(limit)).all()
            return [Delivery(r.id, r.name, r.target, json.loads(r.event), r.created_at,
                             r.attempts, r.delivered_at, r.last_error) for r in rows]

        return self._read(read)

    def mark_delivery(self, id: str, *, attempts: int, delivered_at: str | None,
                      last_error: str) -> None:
        def write(conn: Connection) -> None:
            conn.execute(outbox.update().where(outbox.c.id == id).values(
                attempts=attempts, delivered_at=delivered_at, last_error=last_error))

        self._retry(write)

    def stage_holders(self, stage: str) -> dict[str, int]:
        def read(conn: Connection) -> dict[str, int]:
            rows = conn.execute(
                sa.select(versions.c.name, sa.func.max(versions.c.number))
                .where(versions.c.stage == stage).group_by(versions.c.name)
            ).all()
            return {str(name): int(number) for name, number in rows}

        return self._read(read)

    def deployments(self) -> list[DeploymentRow]:
        def read(conn: Connection) -> list[DeploymentRow]:
            rows = conn.execute(sa.select(deployments).order_by(deployments.c.name)).all()
            return [DeploymentRow(r.name, r.generation, json.loads(r.record), r.updated_at)
                    for r in rows]

        return self._read(read)

    def decisions(self, name: str, number: int) -> list[Decision]:
        def read(conn: Connection) -> list[Decision]:
            rows = conn.execute(
                sa.select(decisions).where(decisions.c.name == name,
                                           decisions.c.number == number)
                .order_by(decisions.c.id)
            ).all()
            return [Decision(kind=r.kind, name=r.name, number=r.number, stage=r.stage,
                             actor=r.actor, created_at=r.created_at, comment=r.comment,
                             gate=r.gate, expires=r.expires, detail=json.loads(r.detail))
                    for r in rows]

        return self._read(read)

    # -- reads -------------------------------------------------------------------------------
    def _read(self, fn: Callable[[Connection], T]) -> T:
        try:
            with self.engine.connect() as conn:
                return fn(conn)
        except DBAPIError as exc:
            raise StorageError(f"metadata store error: {exc.orig}") from exc

    def get_version(self, name: str, number: int) -> VersionRow | None:
        def read(conn: Connection) -> VersionRow | None:
            row = conn.execute(
                sa.select(versions).where(versions.c.name == name, versions.c.number == number)
            ).mappings().first()
            return _version(row) if row else None

        return self._read(read)

    def list_versions(self, name: str) -> list[VersionRow]:
        return self._read(
            lambda conn: [
                _version(r)
                for r in conn.execute(
                    sa.select(versions).where(versions.c.name == name)
                    .order_by(versions.c.number)
                ).mappings()
            ]
        )

    def versions_in_stage(self, name: str, stage: str) -> list[VersionRow]:
        def read(conn: Connection) -> list[VersionRow]:
            rows = conn.execute(
                sa.select(versions).where(versions.c.name == name, versions.c.stage == stage)
                .order_by(versions.c.number)
            ).mappings().all()
            return [_version(r) for r in rows]

        return self._read(read)

    def list_models(self) -> list[str]:
        return self._read(
            lambda conn: [
                str(r[0])
                for r in conn.execute(
                    sa.select(versions.c.name).distinct().order_by(versions.c.name)
                )
            ]
        )

    def version_index(self) -> list[tuple[str, int, str]]:
        return self._read(lambda conn: [
            (str(r.name), int(r.number), str(r.stage)) for r in conn.execute(
                sa.select(versions.c.name, versions.c.number, versions.c.stage)
                .order_by(versions.c.name, versions.c.number))])

    def all_aliases(self) -> dict[str, dict[str, int]]:
        def read(conn: Connection) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for r in conn.execute(sa.select(aliases)):
                out.setdefault(str(r.name), {})[str(r.alias)] = int(r.number)
            return out

        return self._read(read)

    def aliases(self, name: str) -> dict[str, int]:
        return self._read(
            lambda conn: {
                str(r.alias): int(r.number)
                for r in conn.execute(sa.select(aliases).where(aliases.c.name == name))
            }
        )

    def gate_runs(self, name: str, number: int) -> list[GateRun]:
        def read(conn: Connection) -> list[GateRun]:
            rows = conn.execute(
                sa.select(gate_runs)
                .where(gate_runs.c.name == name, gate_runs.c.number == number)
                .order_by(gate_runs.c.id)
            ).mappings()
            return [
                GateRun(
                    name=r["name"], number=r["number"], from_stage=r["from_stage"],
                    to_stage=r["to_stage"], passed=bool(r["passed"]),
                    results=json.loads(r["results"]), actor=r["actor"],
                    created_at=r["created_at"],
                )
                for r in rows
            ]

        return self._read(read)

    def audit_records(self, after: int = 0) -> list[AuditRecord]:
        query = sa.select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq)
        return self._read(lambda conn: [_record(r) for r in conn.execute(query).mappings()])

    # -- vulnerability data ------------------------------------------------------------------
    def import_vulns(
        self, snapshot: VulnSnapshot, records: Sequence[tuple[str, str, str]],
        event: AuditEvent,
    ) -> VulnSnapshot:
        def write(conn: Connection) -> VulnSnapshot:
            result = conn.execute(vuln_snapshots.insert().values(
                sha256=snapshot.sha256, snapshot_date=snapshot.snapshot_date,
                imported_at=snapshot.imported_at, source=snapshot.source,
                records=snapshot.records,
            ))
            key = result.inserted_primary_key
            assert key is not None
            sid = int(key[0])
            rows = [{"snapshot_id": sid, "vuln_id": v, "package": p, "record": r}
                    for (v, p, r) in records]
            for i in range(0, len(rows), 1000):
                conn.execute(vuln_records.insert(), rows[i:i + 1000])
            self._append(conn, event)
            return replace(snapshot, id=sid)

        return self._retry(write)

    def vuln_snapshot(self) -> VulnSnapshot | None:
        def read(conn: Connection) -> VulnSnapshot | None:
            row = conn.execute(
                sa.select(vuln_snapshots).order_by(vuln_snapshots.c.id.desc()).limit(1)
            ).mappings().first()
            if row is None:
                return None
            return VulnSnapshot(int(row["id"]), row["sha256"], row["snapshot_date"],
                                row["imported_at"], row["source"], int(row["records"]))

        return self._read(read)

    def vuln_records(self, packages: Sequence[str]) -> list[str]:
        current = self.vuln_snapshot()
        if current is None or not packages:
            return []
        wanted = sorted(set(packages))

        def read(conn: Connection) -> list[str]:
            out: list[str] = []
            for i in range(0, len(wanted), 500):
                out.extend(str(r[0]) for r in conn.execute(
                    sa.select(vuln_records.c.record).where(
                        vuln_records.c.snapshot_id == current.id,
                        vuln_records.c.package.in_(wanted[i:i + 500]),
                    )
                ))
            return out

        return self._read(read)

    # -- identity ----------------------------------------------------------------------------
    def put_user(self, user: UserRow, event: AuditEvent) -> None:
        values = {"roles": json.dumps(list(user.roles)),
                  "grants": json.dumps([list(g) for g in user.grants]),
                  "disabled": user.disabled, "created_at": user.created_at}

        def write(conn: Connection) -> None:
            done = conn.execute(users.update().where(users.c.name == user.name).values(**values))
            if done.rowcount == 0:
                conn.execute(users.insert().values(name=user.name, **values))
            self._append(conn, event)

        self._retry(write)

    def get_user(self, name: str) -> UserRow | None:
        def read(conn: Connection) -> UserRow | None:
            row = conn.execute(sa.select(users).where(users.c.name == name)).first()
            return _user(row) if row else None

        return self._read(read)

    def list_users(self) -> list[UserRow]:
        return self._read(lambda conn: [
            _user(r) for r in conn.execute(sa.select(users).order_by(users.c.name))])

    def put_token(self, token: TokenRow, event: AuditEvent) -> None:
        values = {"user": token.user, "hash": token.hash, "description": token.description,
                  "created_at": token.created_at, "expires_at": token.expires_at,
                  "revoked_at": token.revoked_at}

        def write(conn: Connection) -> None:
            done = conn.execute(tokens.update().where(tokens.c.id == token.id).values(**values))
            if done.rowcount == 0:
                conn.execute(tokens.insert().values(id=token.id, **values))
            self._append(conn, event)

        self._retry(write)

    def get_token(self, id: str) -> TokenRow | None:
        def read(conn: Connection) -> TokenRow | None:
            row = conn.execute(sa.select(tokens).where(tokens.c.id == id)).first()
            return _token(row) if row else None

        return self._read(read)

    def list_tokens(self, user: str | None = None) -> list[TokenRow]:
        def read(conn: Connection) -> list[TokenRow]:
            q = sa.select(tokens).order_by(tokens.c.created_at, tokens.c.id)
            if user is not None:
                q = q.where(tokens.c.user == user)
            return [_token(r) for r in conn.execute(q)]

        return self._read(read)

    def close(self) -> None:
        self.engine.dispose()


def _version(row: Any) -> VersionRow:
    return VersionRow(
        name=row["name"], number=int(row["number"]), stage=row["stage"],
        record=json.loads(row["record"]),
    )


def _record(row: Any) -> AuditRecord:
    return AuditRecord(
        seq=int(row["seq"]), ts=row["ts"], type=row["type"], actor=row["actor"],
        model=row["model"], version=row["version"], payload=json.loads(row["payload"]),
        prev_hash=row["prev_hash"], hash=row["hash"],
    )


def _user(row: Any) -> UserRow:
    return UserRow(name=row.name, roles=tuple(json.loads(row.roles)),
                   grants=tuple((str(m), str(r)) for m, r in json.loads(row.grants)),
                   disabled=bool(row.disabled), created_at=row.created_at)


def _token(row: Any) -> TokenRow:
    return TokenRow(id=row.id, user=row.user, hash=row.hash, created_at=row.created_at,
                    description=row.description, expires_at=row.expires_at,
                    revoked_at=row.revoked_at)


def _safe(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"
