from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockgate.audit import AuditEvent, EventType, verify_chain
from lockgate.errors import NotFoundError, PromotionError, StorageError
from lockgate.store.metadata import (
    Change,
    GateRun,
    MemoryMetadataStore,
    MetadataStore,
    SqlMetadataStore,
    VulnSnapshot,
)
from lockgate.types import Observation
from services import NEEDS_POSTGRES


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=NEEDS_POSTGRES), "memory"])
def meta(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "memory":
        yield MemoryMetadataStore()
        return
    url = (f"sqlite:///{tmp_path / 'meta.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    store = SqlMetadataStore(url)
    yield store
    store.close()


def _ev() -> AuditEvent:
    return AuditEvent(EventType.MODEL_REGISTERED, "tester")


def test_numbers_grow_per_name(meta: MetadataStore) -> None:
    numbers = [meta.create_version("a", lambda _n, i=i: {"k": i}, "prototype", _ev())  # type: ignore[misc]
               for i in range(3)]
    assert numbers == [1, 2, 3]
    assert meta.create_version("b", lambda _n: {}, "prototype", _ev()) == 1
    assert meta.list_models() == ["a", "b"]
    assert [r.number for r in meta.list_versions("a")] == [1, 2, 3]
    row = meta.get_version("a", 2)
    assert row is not None
    assert row.record == {"k": 1}
    recs = meta.audit_records()
    assert [(r.model, r.version) for r in recs] == [("a", 1), ("a", 2), ("a", 3), ("b", 1)]
    assert verify_chain(recs).ok


def test_apply_is_all_or_nothing(meta: MetadataStore) -> None:
    meta.create_version("a", lambda _n: {}, "prototype", _ev())
    meta.create_version("a", lambda _n: {}, "prototype", _ev())
    run = GateRun("a", 1, "prototype", "production", True, [{"gate": "parity"}], "t", "now")
    meta.apply(Change(expect={("a", 1): "prototype"}, stages={("a", 1): "production"},
                      aliases={("a", "champion"): 1}, gate_runs=[run],
                      events=[AuditEvent(EventType.STAGE_CHANGED, "t", "a", 1)]))
    assert meta.aliases("a") == {"champion": 1}
    assert meta.gate_runs("a", 1)[0].results == [{"gate": "parity"}]
    before = len(meta.audit_records())
    with pytest.raises(PromotionError, match="now in stage 'production'"):
        meta.apply(Change(expect={("a", 2): "prototype", ("a", 1): "prototype"},
                          stages={("a", 2): "production"}, aliases={("a", "champion"): 2},
                          events=[AuditEvent(EventType.STAGE_CHANGED, "t", "a", 2)]))
    v2 = meta.get_version("a", 2)
    assert v2 is not None
    assert v2.stage == "prototype"
    assert meta.aliases("a") == {"champion": 1}
    assert len(meta.audit_records()) == before


def test_expect_on_missing_version(meta: MetadataStore) -> None:
    with pytest.raises(NotFoundError):
        meta.apply(Change(expect={("nope", 1): "prototype"}))


def test_alias_removal(meta: MetadataStore) -> None:
    meta.create_version("a", lambda _n: {}, "prototype", _ev())
    meta.apply(Change(aliases={("a", "x"): 1}))
    meta.apply(Change(aliases={("a", "x"): None}))
    assert meta.aliases("a") == {}


def test_sqlite_reopen_keeps_data_and_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'meta.db'}"
    s1 = SqlMetadataStore(url)
    s1.create_version("a", lambda _n: {"x": 1}, "prototype", _ev())
    s1.close()
    s2 = SqlMetadataStore(url)
    assert s2.create_version("a", lambda _n: {}, "prototype", _ev()) == 2
    s2.close()


def test_vuln_snapshots_replace_each_other(meta: MetadataStore) -> None:
    assert meta.vuln_snapshot() is None
    assert meta.vuln_records(["numpy"]) == []
    ev = AuditEvent(EventType.VULNDB_IMPORTED, "tester")
    first = meta.import_vulns(VulnSnapshot(0, "a" * 64, "2026-01-01", "now", "f1", 2),
                              [("X-1", "numpy", '{"id":"X-1"}'), ("X-2", "torch", "{}")], ev)
    assert meta.vuln_records(["numpy", "scipy"]) == ['{"id":"X-1"}']
    second = meta.import_vulns(VulnSnapshot(0, "b" * 64, "2026-02-01", "now", "f2", 1),
                               [("X-3", "scipy", '{"id":"X-3"}')], ev)
    assert second.id != first.id
    current = meta.vuln_snapshot()
    assert current is not None
    assert current.sha256 == "b" * 64
    assert meta.vuln_records(["numpy", "scipy"]) == ['{"id":"X-3"}']


def test_versions_in_stage_reads_only_the_holders(meta: MetadataStore) -> None:
    for _ in range(3):
        meta.create_version("m", lambda n: {"n": n}, "prototype", _ev())
    meta.create_version("other", lambda n: {"n": n}, "prototype", _ev())
    meta.apply(Change(stages={("m", 2): "production", ("other", 1): "production"}))
    assert [r.number for r in meta.versions_in_stage("m", "production")] == [2]
    assert [r.number for r in meta.versions_in_stage("m", "prototype")] == [1, 3]
    assert meta.versions_in_stage("m", "archived") == []


def test_a_number_fixed_under_the_registration_lock_is_stored_with_its_extra_writes(
        meta: MetadataStore) -> None:
    meta.create_version("a", lambda _n: {}, "prototype", _ev())
    with meta.registering("a") as number:
        assert number == 2
        extra = Change(observations=[Observation("reference", "a", number, "now", {"rows": 3})],
                       events=[AuditEvent(EventType.REFERENCE_SET, "tester", "a", number)])
        assert meta.create_version("a", lambda n: {"n": n}, "prototype", _ev(), number=number,
                                   extra=extra) == 2
    assert [o.record for o in meta.observations("a", "reference", number=2)] == [{"rows": 3}]
    assert [(r.type, r.version) for r in meta.audit_records()] == [
        ("model.registered", 1), ("model.registered", 2), ("reference.set", 2)]
    assert verify_chain(meta.audit_records()).ok


def test_a_number_taken_meanwhile_is_refused_and_nothing_is_stored(
        meta: MetadataStore) -> None:
    with pytest.raises(StorageError, match="a@3"):
        meta.create_version("a", lambda _n: {}, "prototype", _ev(), number=3)
    assert meta.list_versions("a") == []
    assert meta.audit_records() == []


def test_extra_writes_that_fail_take_the_version_with_them(meta: MetadataStore) -> None:
    extra = Change(expect={("other", 1): "prototype"},
                   events=[AuditEvent(EventType.REFERENCE_SET, "tester", "a", 1)])
    with pytest.raises(NotFoundError):
        meta.create_version("a", lambda _n: {}, "prototype", _ev(), extra=extra)
    assert meta.list_versions("a") == []
    assert meta.audit_records() == []


def test_registration_locks_are_per_model(meta: MetadataStore) -> None:
    with meta.registering("a") as a:
        got: list[int] = []
        other = threading.Thread(target=lambda: got.append(
            meta.create_version("b", lambda _n: {}, "prototype", _ev())))
        other.start()
        other.join(timeout=120)
        assert not other.is_alive()
        assert (a, got) == (1, [1])
