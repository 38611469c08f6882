"""The per-model registration lock: while one registration of a model holds it, that model's
next version number is its own to seal and sign, and no other registration of the model may
store one. Registrations of other models, and every other writer, never wait for it.

On PostgreSQL it is a session advisory lock keyed by the model name (its key space does not
overlap the single-key write lock's); on a SQLite file, an ``flock`` on a file named after the
model in ``<database>.locks/``; otherwise (an in-memory database, a platform without
``flock``) a lock of this process alone. Threads of one process also queue on a lock of the
store. The operating system or the database server releases a lock whose holder died.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from lockgate.errors import StorageError

if sys.platform != "win32":
    import fcntl

__all__ = ["RegistrationLocks"]

_ADVISORY_CLASS = 0x6C67  # "lg": the first key of every registration advisory lock


class RegistrationLocks:
    """One lock per model name, across processes where the database allows it."""

    def __init__(self, engine: Engine, *, postgres: bool, folder: Path | None) -> None:
        # lock holders get connections of their own, outside the store's pool: a registration
        # that holds one for minutes never starves the pool of the transactions meanwhile
        self._engine = sa.create_engine(engine.url, poolclass=NullPool) if postgres else engine
        self._postgres = postgres
        self._folder = folder if sys.platform != "win32" else None
        self._guard = threading.Lock()
        self._local: dict[str, threading.Lock] = {}

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        with self._guard:
            local = self._local.setdefault(name, threading.Lock())
        with local:
            if self._postgres:
                with self._advisory(name):
                    yield
            elif self._folder is not None:
                with self._flock(name):
                    yield
            else:
                yield

    @contextlib.contextmanager
    def _advisory(self, name: str) -> Iterator[None]:
        key = int.from_bytes(_digest(name)[:4], "big", signed=True)
        try:
            conn = self._engine.connect()
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_ADVISORY_CLASS}, {key})")
            conn.commit()
        except DBAPIError as exc:
            raise StorageError(f"cannot take the registration lock of {name}: {exc.orig}") \
                from exc
        try:
            yield
        finally:
            try:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_ADVISORY_CLASS}, {key})")
                conn.commit()
            except DBAPIError:
                conn.invalidate()  # the server ends the session, and the lock with it
            conn.close()

    @contextlib.contextmanager
    def _flock(self, name: str) -> Iterator[None]:
        assert self._folder is not None  # never on Windows, which has no flock
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._folder / _digest(name).hex()[:32], os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot take the registration lock of {name} in "
                               f"{self._folder}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def _digest(name: str) -> bytes:
    return hashlib.sha256(name.encode("utf-8")).digest()
