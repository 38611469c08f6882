"""Registration builds, seals and signs a version before its one short transaction, which
stores the version, its audit event and its reference profile all or nothing: on real SQLite,
and on PostgreSQL where its server binaries are installed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from lockgate.api.facade import Lockgate
from lockgate.config.settings import GateSpec, Settings
from lockgate.errors import InvalidInputError, StorageError
from lockgate.seal import folder as sealing
from lockgate.seal.folder import ensure_default_keys
from lockgate.seal.integrity import references
from lockgate.store.artifacts import EntryKind
from lockgate.store.metadata import SqlMetadataStore
from onnx_models import linear_onnx
from services import NEEDS_POSTGRES

REFERENCE = {"input": np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=NEEDS_POSTGRES)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A home on a real SQL database with local artifacts; every Lockgate opened on it shares
    both."""
    url = (f"sqlite:///{tmp_path / 'reg.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    s = Settings.for_home(tmp_path / "home", user="tester", database_url=url,
                          gates={"*": (GateSpec("parity"),)})
    ensure_default_keys(s)
    return s


@pytest.fixture
def lg(settings: Settings) -> Iterator[Lockgate]:
    with Lockgate(settings) as instance:
        yield instance


def _engine(lg: Lockgate) -> sa.engine.Engine:
    assert isinstance(lg.meta, SqlMetadataStore)
    return lg.meta.engine


def _fail_statement(lg: Lockgate, table: str, error: Exception, times: int) -> list[str]:
    """Make the next ``times`` INSERTs into ``table`` raise ``error`` before they reach the
    database; returns the list every INSERT into it is appended to."""
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(f"INSERT INTO {table.upper()}"):
            seen.append(statement)
            if len(seen) <= times:
                raise error

    event.listen(_engine(lg), "before_cursor_execute", before)
    return seen


def _stored_nothing(lg: Lockgate) -> None:
    assert lg.models() == []
    assert lg.audit_log() == []
    assert references(lg.meta) == {}


def test_reference_data_the_model_cannot_profile_stores_nothing(lg: Lockgate) -> None:
    with pytest.raises(InvalidInputError):
        lg.register(linear_onnx(), name="m", reference={"input": np.zeros((5, 7), np.float32)})
    _stored_nothing(lg)


def test_a_failed_reference_write_stores_no_version(lg: Lockgate) -> None:
    """The reference profile is written in the version's transaction: when its row cannot be
    written, the version row and the registration's audit event roll back with it."""
    error = sa.exc.OperationalError("INSERT INTO observations", {}, Exception("disk full"))
    seen = _fail_statement(lg, "observations", error, times=1)
    with pytest.raises(StorageError, match="disk full"):
        lg.register(linear_onnx(), name="m", reference=REFERENCE)
    assert len(seen) == 1
    _stored_nothing(lg)
    v = lg.register(linear_onnx(), name="m", reference=REFERENCE)  # the next one is 1 again
    assert v.number == 1
    assert [r.type for r in lg.audit_log()] == ["model.registered", "reference.set"]
    profile = lg.reference_profile("m@1")
    assert profile is not None
    assert profile.rows == 200


def test_a_retried_transaction_neither_rebuilds_nor_re_signs(
    lg: Lockgate, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_seal = sealing.seal
    seals: list[int] = []

    def counting_seal(version: Any, *args: Any, **kwargs: Any) -> Any:
        seals.append(version.number)
        return real_seal(version, *args, **kwargs)

    monkeypatch.setattr(sealing, "seal", counting_seal)
    conflict = sa.exc.IntegrityError("INSERT INTO versions", {}, Exception("conflict"))
    attempts = _fail_statement(lg, "versions", conflict, times=1)
    v = lg.register(linear_onnx(), name="m", reference=REFERENCE)
    assert len(attempts) == 2  # the first attempt failed, the retry stored it
    assert seals == [1]
    assert v.number == 1
    # one signature was made: every stored blob is the version's own or its profile's
    blobs = {e.digest for e in lg.artifacts.entries() if e.kind is EntryKind.BLOB}
    assert blobs == set(references(lg.meta))
    assert v.signature_bundle in blobs
    assert lg.verify(lg.get("m@1")) == v.signed_by
    assert [r.type for r in lg.audit_log()] == ["model.registered", "reference.set"]
    assert lg.audit_verify().ok


def test_eight_concurrent_registrations_get_consecutive_numbers(settings: Settings) -> None:
    homes = [Lockgate(settings) for _ in range(8)]
    start = threading.Barrier(len(homes))
    found: dict[int, Any] = {}

    def register(i: int) -> None:
        start.wait()
        try:
            found[i] = homes[i].register(linear_onnx(seed=i), name="m", metrics={"i": i})
        except BaseException as exc:  # reported below, with the thread's index
            found[i] = exc

    threads = [threading.Thread(target=register, args=(i,)) for i in range(len(homes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for h in homes:
        h.close()
    errors = {i: r for i, r in found.items() if isinstance(r, BaseException)}
    assert errors == {}
    assert sorted(v.number for v in found.values()) == list(range(1, 9))
    with Lockgate(settings) as lg:
        stored = lg.versions("m")
        assert [v.number for v in stored] == list(range(1, 9))
        for i, v in found.items():  # each number holds what its registration sealed
            assert lg.get(f"m@{v.number}").metrics == {"i": float(i)}
            assert lg.verify(lg.get(f"m@{v.number}")) == v.signed_by
        registered = [r for r in lg.audit_log() if r.type == "model.registered"]
        assert sorted(r.version for r in registered if r.version) == list(range(1, 9))
        assert lg.audit_verify().ok


def test_a_held_registration_lock_blocks_no_other_model(lg: Lockgate) -> None:
    done: list[int] = []
    with lg.meta.registering("a") as number:
        assert number == 1
        other = threading.Thread(
            target=lambda: done.append(lg.register(linear_onnx(), name="b").number))
        other.start()
        other.join(timeout=300)
        assert not other.is_alive()
        assert done == [1]
    assert lg.register(linear_onnx(), name="a").number == 1
