from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.audit import AuditEvent, EventType, verify_chain
from lockgate.errors import NotFoundError, PromotionError
from lockgate.store.metadata import (
    Change,
    GateRun,
    MemoryMetadataStore,
    MetadataStore,
    SqlMetadataStore,
)


@pytest.fixture(params=["sqlite", "memory"])
def meta(request: pytest.FixtureRequest, tmp_path: Path) -> MetadataStore:
    if request.param == "sqlite":
        return SqlMetadataStore(f"sqlite:///{tmp_path / 'meta.db'}")
    return MemoryMetadataStore()


def _ev() -> AuditEvent:
    return AuditEvent(EventType.MODEL_REGISTERED, "tester")


def test_numbers_grow_per_name(meta: MetadataStore) -> None:
    assert [meta.create_version("a", {"k": i}, "prototype", _ev()) for i in range(3)] == [1, 2, 3]
    assert meta.create_version("b", {}, "prototype", _ev()) == 1
    assert meta.list_models() == ["a", "b"]
    assert [r.number for r in meta.list_versions("a")] == [1, 2, 3]
    row = meta.get_version("a", 2)
    assert row is not None
    assert row.record == {"k": 1}
    recs = meta.audit_records()
    assert [(r.model, r.version) for r in recs] == [("a", 1), ("a", 2), ("a", 3), ("b", 1)]
    assert verify_chain(recs).ok


def test_apply_is_all_or_nothing(meta: MetadataStore) -> None:
    meta.create_version("a", {}, "prototype", _ev())
    meta.create_version("a", {}, "prototype", _ev())
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
    meta.create_version("a", {}, "prototype", _ev())
    meta.apply(Change(aliases={("a", "x"): 1}))
    meta.apply(Change(aliases={("a", "x"): None}))
    assert meta.aliases("a") == {}


def test_sqlite_reopen_keeps_data_and_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'meta.db'}"
    s1 = SqlMetadataStore(url)
    s1.create_version("a", {"x": 1}, "prototype", _ev())
    s1.close()
    s2 = SqlMetadataStore(url)
    assert s2.create_version("a", {}, "prototype", _ev()) == 2
    s2.close()
