"""Metadata in a SQL database through SQLAlchemy; schema managed by Alembic, upgraded on open.

SQLite (the embedded default) runs every transaction as ``BEGIN IMMEDIATE`` with a busy timeout,
so writers from several processes queue instead of failing: one writer path. PostgreSQL write
transactions take one advisory lock for the same effect. Version numbers and audit sequence
numbers are primary keys besides, so a writer that raced anyway turns into an IntegrityError,
and the transaction is retried. The statements themselves live in this package's modules by
what they touch (see :mod:`lockgate.store.metadata.sql`).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import IntegrityError as SAIntegrityError

import lockgate.store.metadata.sql.activity as activity
import lockgate.store.metadata.sql.audit as audit
import lockgate.store.metadata.sql.identity as identity
import lockgate.store.metadata.sql.versions as versions
import lockgate.store.metadata.sql.vulndb as vulndb
from lockgate.audit import AuditEvent, AuditRecord
from lockgate.errors import StorageError
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
from lockgate.store.metadata.sql.changes import write_change
from lockgate.store.metadata.sql.locks import RegistrationLocks

__all__ = ["SqlMetadataStore"]

T = TypeVar("T")
_MIGRATIONS = Path(__file__).parent.parent / "migrations"
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
    """The metadata store on SQLite or PostgreSQL (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._postgres = url.startswith("postgresql")
        folder = None
        try:
            if url.startswith("sqlite"):
                path = sa.make_url(url).database
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    folder = Path(path).with_name(Path(path).name + ".locks")
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
        self._locks = RegistrationLocks(self.engine, postgres=self._postgres, folder=folder)

    def _migrate(self) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        # Alembic's op/context proxies are process-global: one migration at a time per
        # process; the advisory lock makes it one at a time across PostgreSQL clients too.
        with _MIGRATE_LOCK, self.engine.begin() as conn:
            if self._postgres:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    # -- transactions ------------------------------------------------------------------------
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

    def _read(self, fn: Callable[[Connection], T]) -> T:
        try:
            with self.engine.connect() as conn:
                return fn(conn)
        except DBAPIError as exc:
            raise StorageError(f"metadata store error: {exc.orig}") from exc

    @contextmanager
    def exclusive(self) -> Iterator[int]:
        with self._tx() as conn:  # SQLite's BEGIN IMMEDIATE, PostgreSQL's advisory lock
            last = audit.last_record(conn)
            yield last.seq if last else 0

    # -- versions ----------------------------------------------------------------------------
    @contextmanager
    def registering(self, name: str) -> Iterator[int]:
        with self._locks.hold(name):
            yield self._read(lambda conn: versions.next_number(conn, name))

    def create_version(
        self, name: str, build: RecordBuilder, stage: str, event: AuditEvent | EventBuilder,
        *, number: int | None = None, extra: Change | None = None,
    ) -> int:
        def write(conn: Connection) -> int:
            next_ = versions.next_number(conn, name)
            if number is not None and number != next_:
                raise StorageError(
                    f"{name}@{number} was stored by another registration meanwhile",
                    hint="register it again; registrations of one model take "
                         "`registering(name)` first")
            record = dict(build(next_))
            versions.insert_version(conn, name, next_, stage, record)
            ev = event(record) if callable(event) else event
            audit.append(conn, replace(ev, model=name, version=next_))
            if extra is not None:
                write_change(conn, extra)
            return next_

        return self._retry(write)

    def get_version(self, name: str, number: int) -> VersionRow | None:
        return self._read(lambda conn: versions.get_version(conn, name, number))

    def list_versions(self, name: str) -> list[VersionRow]:
        return self._read(lambda conn: versions.list_versions(conn, name))

    def versions_in_stage(self, name: str, stage: str) -> list[VersionRow]:
        return self._read(lambda conn: versions.versions_in_stage(conn, name, stage))

    def list_models(self) -> list[str]:
        return self._read(versions.list_models)

    def version_index(self) -> list[tuple[str, int, str]]:
        return self._read(versions.version_index)

    def stage_holders(self, stage: str) -> dict[str, int]:
        return self._read(lambda conn: versions.stage_holders(conn, stage))

    def all_aliases(self) -> dict[str, dict[str, int]]:
        return self._read(versions.all_aliases)

    def aliases(self, name: str) -> dict[str, int]:
        return self._read(lambda conn: versions.model_aliases(conn, name))

    def gate_runs(self, name: str, number: int) -> list[GateRun]:
        return self._read(lambda conn: versions.get_gate_runs(conn, name, number))

    def decisions(self, name: str, number: int) -> list[Decision]:
        return self._read(lambda conn: versions.get_decisions(conn, name, number))

    # -- changes and the audit log -----------------------------------------------------------
    def apply(self, change: Change) -> None:
        def write(conn: Connection) -> None:
            write_change(conn, change)
            if self._postgres and (change.deployments or change.stages):
                conn.exec_driver_sql(f"NOTIFY {_CHANNEL}")  # delivered at commit

        self._retry(write)

    def append_event(self, event: AuditEvent) -> AuditRecord:
        return self._retry(lambda conn: audit.append(conn, event))

    def audit_records(self, after: int = 0) -> list[AuditRecord]:
        return self._read(lambda conn: audit.records(conn, after))

    def audit_tail(self) -> int:
        last = self._read(audit.last_record)
        return last.seq if last else 0

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """On PostgreSQL, call ``callback`` (on a background thread) whenever a committed
        change moved a stage or a deployment, until the returned function is called. None on
        other databases: callers poll."""
        if not self._postgres:
            return None
        import psycopg  # the PostgreSQL driver, installed only where it is used

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

    # -- deployments, observations, deliveries -----------------------------------------------
    def deployments(self) -> list[DeploymentRow]:
        return self._read(activity.get_deployments)

    def observations(self, name: str, kind: str, *, number: int | None = None,
                     limit: int = 50) -> list[Observation]:
        return self._read(
            lambda conn: activity.get_observations(conn, name, kind, number, limit))

    def pending_deliveries(self, limit: int = 100) -> list[Delivery]:
        return self._read(lambda conn: activity.pending_deliveries(conn, limit))

    def mark_delivery(self, id: str, *, attempts: int, delivered_at: str | None,
                      last_error: str) -> None:
        self._retry(lambda conn: activity.mark_delivery(
            conn, id, attempts=attempts, delivered_at=delivered_at, last_error=last_error))

    # -- vulnerability data ------------------------------------------------------------------
    def import_vulns(
        self, snapshot: VulnSnapshot, records: Sequence[tuple[str, str, str]],
        event: AuditEvent,
    ) -> VulnSnapshot:
        def write(conn: Connection) -> VulnSnapshot:
            stored = vulndb.insert_snapshot(conn, snapshot, records)
            audit.append(conn, event)
            return stored

        return self._retry(write)

    def vuln_snapshot(self) -> VulnSnapshot | None:
        return self._read(vulndb.current_snapshot)

    def vuln_records(self, packages: Sequence[str]) -> list[str]:
        current = self.vuln_snapshot()
        if current is None or not packages:
            return []
        return self._read(lambda conn: vulndb.records_for(conn, current.id, packages))

    # -- identity ----------------------------------------------------------------------------
    def put_user(self, user: UserRow, event: AuditEvent) -> None:
        def write(conn: Connection) -> None:
            identity.put_user(conn, user)
            audit.append(conn, event)

        self._retry(write)

    def get_user(self, name: str) -> UserRow | None:
        return self._read(lambda conn: identity.get_user(conn, name))

    def list_users(self) -> list[UserRow]:
        return self._read(identity.list_users)

    def put_token(self, token: TokenRow, event: AuditEvent) -> None:
        def write(conn: Connection) -> None:
            identity.put_token(conn, token)
            audit.append(conn, event)

        self._retry(write)

    def get_token(self, id: str) -> TokenRow | None:
        return self._read(lambda conn: identity.get_token(conn, id))

    def list_tokens(self, user: str | None = None) -> list[TokenRow]:
        return self._read(lambda conn: identity.list_tokens(conn, user))

    def close(self) -> None:
        self.engine.dispose()


def _safe(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    with contextlib.suppress(Exception):
        return sa.make_url(url).render_as_string(hide_password=True)
    return "<unparseable database URL>"
