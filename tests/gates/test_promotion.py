"""Promotion through gates, on the in-memory stores (no framework needed)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lockgate.api.facade import Lockgate
from lockgate.audit import AuditEvent, EventType
from lockgate.config.settings import GateSpec
from lockgate.errors import ConfigError, GateFailedError, InvalidInputError
from lockgate.gates import AllOf, GateContext, build
from lockgate.types import (
    Digest,
    GateResult,
    GateStatus,
    OutputParity,
    ParityReport,
    Signature,
    TensorSpec,
    Version,
)


def _add(lg: Lockgate, name: str = "m", *, parity: bool | None = True) -> Version:
    report = None
    if parity is not None:
        out = OutputParity("y", 1e-6 if parity else 0.5, 1e-6, 1e-4, 1e-3,
                           0 if parity else 3, 30, (0, 1), 1.0, 1.5)
        report = ParityReport((out,), (4, 1, 2), 0)
    draft = Version(
        name=name, number=0, digest=Digest.of_bytes(name.encode()), framework="test",
        framework_version="0", opset=17, ir_version=8,
        signature=Signature((TensorSpec("x", "float32", ("batch", 2)),),
                            (TensorSpec("y", "float32", ("batch", 1)),)),
        parity=report, environment={}, creator="tester", created_at="now",
    )
    n = lg.meta.create_version(name, lambda _n: draft.record(), lg.settings.stages[0],
                               AuditEvent(EventType.MODEL_REGISTERED, "tester"))
    return lg.get(f"{name}@{n}")


def test_promote_through_default_stages(sql_lg: Lockgate) -> None:
    v = _add(sql_lg)
    res = sql_lg.promote("m@1", "stabilized")
    assert [r.status for r in res.results] == [GateStatus.PASS]
    sql_lg.promote("m@1", "production")
    assert sql_lg.get("m@production").number == 1
    assert sql_lg.get("m@champion").number == 1
    runs = sql_lg.gate_runs("m@1")
    assert [(r.from_stage, r.to_stage, r.passed) for r in runs] == [
        ("prototype", "stabilized", True), ("stabilized", "production", True)]
    types = [r.type for r in sql_lg.audit_log()]
    assert types.count(EventType.STAGE_CHANGED.value) == 2
    assert EventType.ALIAS_SET.value in types
    assert v.stage == "prototype"


def test_exclusive_stage_retires_previous_holder(sql_lg: Lockgate) -> None:
    _add(sql_lg)
    _add(sql_lg)
    sql_lg.promote("m@1", "production")
    res = sql_lg.promote("m@2", "production")
    assert res.retired == (1,)
    assert sql_lg.get("m@1").stage == "archived"
    assert sql_lg.get("m@production").number == 2
    assert sql_lg.get("m@champion").number == 2


def test_failed_gate_moves_nothing_and_is_recorded(sql_lg: Lockgate) -> None:
    _add(sql_lg, parity=False)
    with pytest.raises(GateFailedError, match="parity fail") as info:
        sql_lg.promote("m@1", "stabilized")
    assert [r.status for r in info.value.results] == [GateStatus.FAIL]
    assert sql_lg.get("m@1").stage == "prototype"
    assert sql_lg.gate_runs("m@1")[0].passed is False
    assert sql_lg.audit_log()[-1].type == EventType.PROMOTION_REFUSED.value


def test_version_without_parity_report_fails_closed(sql_lg: Lockgate) -> None:
    _add(sql_lg, parity=None)
    with pytest.raises(GateFailedError, match="no parity report"):
        sql_lg.promote("m@1", "production")


@pytest.mark.parametrize(
    ("to", "error"),
    [("prototype", InvalidInputError), ("nowhere", InvalidInputError)],
)
def test_bad_transitions_are_refused(sql_lg: Lockgate, to: str, error: type) -> None:
    _add(sql_lg)
    with pytest.raises(error):
        sql_lg.promote("m@1", to)


def test_no_way_back_and_retired_is_final(sql_lg: Lockgate) -> None:
    _add(sql_lg)
    sql_lg.promote("m@1", "production")
    with pytest.raises(InvalidInputError, match="cannot move back"):
        sql_lg.promote("m@1", "stabilized")
    sql_lg.promote("m@1", "archived")
    with pytest.raises(InvalidInputError, match="retired"):
        sql_lg.promote("m@1", "production")


def test_empty_and_unknown_gate_lists_are_config_errors(sql_lg: Lockgate) -> None:
    _add(sql_lg)
    with pytest.raises(ConfigError, match="at least one gate"):
        build([])
    sql_lg.settings = replace(sql_lg.settings, gates={"*": ()})
    with pytest.raises(ConfigError):
        sql_lg.promote("m@1", "stabilized")
    sql_lg.settings = replace(sql_lg.settings, gates={"*": (GateSpec("nope"),)})
    with pytest.raises(ConfigError, match="unknown gate"):
        sql_lg.promote("m@1", "stabilized")
    assert sql_lg.get("m@1").stage == "prototype"


class _Boom:
    name = "boom"

    def evaluate(self, ctx: GateContext) -> GateResult:
        raise RuntimeError("kaput")


def test_a_gate_that_raises_fails_closed(sql_lg: Lockgate) -> None:
    v = _add(sql_lg)
    ctx = GateContext(v, "prototype", "stabilized", "t", sql_lg.settings)
    results = AllOf([_Boom()]).evaluate(ctx)
    assert results[0].status is GateStatus.ERROR
    assert "kaput" in results[0].message
    assert not AllOf.passed(results)


def test_unsafe_allow_passes_but_warns(sql_lg: Lockgate) -> None:
    _add(sql_lg, parity=None)
    sql_lg.settings = replace(sql_lg.settings, gates={"*": (GateSpec("unsafe_allow"),)})
    with pytest.warns(UserWarning, match="without checks"):
        sql_lg.promote("m@1", "stabilized")
    assert sql_lg.get("m@1").stage == "stabilized"


def test_stages_are_configuration(sql_lg: Lockgate) -> None:
    sql_lg.settings = replace(sql_lg.settings, stages=("dev", "live", "gone"),
                              exclusive_stages=("live",), stage_aliases={"live": "current"})
    _add(sql_lg)
    assert sql_lg.get("m@1").stage == "dev"
    sql_lg.promote("m@1", "live")
    assert sql_lg.get("m@current").number == 1
    assert sql_lg.serving_stage == "live"
