"""Every gate of the policy, passing and failing with the reason asserted, on real scikit-learn
and PyTorch models in a real SQLite home; validation gates start a real child server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from gate_models import sklearn_model, torch_model, write_policy

from lockgate.access.identity import IdentifiedBy
from lockgate.api.facade import Lockgate
from lockgate.errors import AccessDeniedError, GateFailedError, InvalidInputError
from lockgate.types import GateResult, GateStatus

pytestmark = pytest.mark.sklearn


@pytest.fixture
def open_home(home: Path) -> Iterator[object]:
    opened: list[Lockgate] = []

    def open_with(policy: str) -> Lockgate:
        write_policy(home, policy + '\n[roles]\napprover = ["ann", "bob", "tester"]\n')
        lg = Lockgate.open(home)
        opened.append(lg)
        return lg

    yield open_with
    for lg in opened:
        lg.close()


def _only(lg: Lockgate, ref: str, to: str = "stabilized") -> GateResult:
    (result,) = lg.check_gates(ref, to)
    return result


def _policy(gate: str, extra: str = "") -> str:
    return f'[gates]\n"*" = ["{gate}"]\n{extra}'


def test_seeds_recorded(open_home) -> None:  # type: ignore[no-untyped-def]
    lg = open_home(_policy("seeds_recorded"))
    model, x = sklearn_model()
    lg.register(model, x, name="m", seed=7)
    lg.register(model, x, name="m")
    ok = _only(lg, "m@1")
    assert ok.status is GateStatus.PASS
    assert "seed=7" in ok.message
    bad = _only(lg, "m@2")
    assert bad.status is GateStatus.FAIL
    assert "no seeds were recorded" in bad.message


def test_pinned_dependencies(open_home, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lg = open_home(_policy("pinned_dependencies", "[gate.pinned_dependencies]\n"
                                                  "require_hashes = true\n"))
    model, x = sklearn_model()
    hashed = tmp_path / "requirements.txt"
    hashed.write_text(f"numpy==2.1.0 --hash=sha256:{'a' * 64}\n"
                      f"scikit-learn==1.6.1 \\\n    --hash=sha256:{'b' * 64}\n")
    loose = tmp_path / "loose" / "requirements.txt"
    loose.parent.mkdir()
    loose.write_text("numpy>=1.26\nscikit-learn==1.6.1\n")
    lg.register(model, x, name="m", lock_file=hashed)
    lg.register(model, x, name="m", lock_file=loose)
    lg.register(model, x, name="m")
    assert _only(lg, "m@1").status is GateStatus.PASS
    bad = _only(lg, "m@2")
    assert bad.status is GateStatus.FAIL
    assert "numpy: >=1.26 is not one exact version" in bad.message
    assert "scikit-learn: no hash" in bad.message
    assert "no lock file was recorded" in _only(lg, "m@3").message


def test_metrics_against_the_champion(open_home) -> None:  # type: ignore[no-untyped-def]
    lg = open_home('[gates]\n"*->production" = ["metrics"]\n"*" = ["parity"]\n'
                   '[gate.metrics]\naccuracy = { threshold = 0.8, min_absolute_change = 0.01, '
                   'greater_is_better = true }\n')
    model, x = sklearn_model()
    lg.register(model, x, name="m", metrics={"accuracy": 0.90})
    lg.register(model, x, name="m", metrics={"accuracy": 0.905})
    lg.register(model, x, name="m", metrics={"accuracy": 0.95})
    lg.register(model, x, name="m", metrics={"accuracy": 0.70})
    first = lg.promote("m@1", "production").results[0]
    assert first.status is GateStatus.PASS
    assert "no champion yet, change thresholds skipped" in first.message
    small = _only(lg, "m@2", "production")
    assert small.status is GateStatus.FAIL
    assert "improves by 0.005 on the champion (0.9 -> 0.905); needs 0.01" in small.message
    better = _only(lg, "m@3", "production")
    assert better.status is GateStatus.PASS
    assert "against champion m@1" in better.message
    low = _only(lg, "m@4", "production")
    assert "accuracy = 0.7 is below the threshold 0.8" in low.message


def test_metrics_without_thresholds_fail_closed(open_home) -> None:  # type: ignore[no-untyped-def]
    lg = open_home(_policy("metrics"))
    model, x = sklearn_model()
    lg.register(model, x, name="m", metrics={"accuracy": 0.9})
    assert "no metric thresholds configured" in _only(lg, "m@1").message


@pytest.mark.slow
def test_infra_validation_and_latency_in_a_child_server(open_home) -> None:  # type: ignore[no-untyped-def]
    lg = open_home('[gates]\n"*" = ["infra_validation", '
                   '{ gate = "latency_budget", p99_ms = 2000, requests = 40, concurrency = 2 }]\n')
    model, x = sklearn_model()
    lg.register(model, x, name="m")
    infra, latency = lg.check_gates("m@1", "stabilized")
    assert infra.status is GateStatus.PASS, infra.message
    assert "recorded sample answers match" in infra.message
    assert latency.status is GateStatus.PASS, latency.message
    assert latency.measured["requests"] == 40
    assert latency.measured["errors"] == 0
    assert latency.measured["p99_ms"] > 0
    types = [r.type for r in lg.audit_log()]
    assert types.count("serve.started") == 1  # one child server shared by both gates


@pytest.mark.slow
def test_infra_and_latency_failures(open_home) -> None:  # type: ignore[no-untyped-def]
    lg = open_home('[gates]\n"*" = [{ gate = "infra_validation", max_loading_time_s = 0.0 }, '
                   '{ gate = "latency_budget", p99_ms = 0.0001, requests = 20, '
                   'max_loading_time_s = 0.0 }]\n')
    model, x = sklearn_model()
    lg.register(model, x, name="m")
    infra, latency = lg.check_gates("m@1", "stabilized")
    assert infra.status is GateStatus.FAIL
    assert "did not load within 0 s" in infra.message
    assert latency.status is GateStatus.FAIL
    lg = open_home('[gates]\n"*" = [{ gate = "latency_budget", p99_ms = 0.0001, '
                   'requests = 20 }]\n')
    (latency,) = lg.check_gates("m@1", "stabilized")
    assert latency.status is GateStatus.FAIL
    assert "over budget: p99_ms" in latency.message


def test_approval_separation_of_duties(open_home) -> None:  # type: ignore[no-untyped-def]
    lg = open_home(_policy("approval", "[gate.approval]\nrequired = 2\n"))
    model, x = sklearn_model()
    lg.register(model, x, name="m")  # registered by "tester", who is also an approver
    with pytest.raises(AccessDeniedError, match="separation of duties"):
        lg.approve("m@1", "stabilized", actor="tester")
    with pytest.raises(AccessDeniedError, match="does not hold the 'approver' role"):
        lg.approve("m@1", "stabilized", actor="mallory")
    denied = [r for r in lg.audit_log() if r.type == "access.denied"]
    assert [r.actor for r in denied] == ["tester", "mallory"]
    # as the registry server records them: identified by the approvers' API tokens
    lg.approve("m@1", "stabilized", actor="ann", comment="looks good",
               identified_by=IdentifiedBy.TOKEN)
    one = _only(lg, "m@1")
    assert one.status is GateStatus.FAIL
    assert "1 of 2 approval(s)" in one.message
    lg.approve("m@1", "stabilized", actor="bob", identified_by=IdentifiedBy.TOKEN)
    two = _only(lg, "m@1")
    assert two.status is GateStatus.PASS
    assert two.message == "approved by ann (token), bob (token)"
    lg.reject("m@1", "stabilized", actor="bob", comment="found a data leak")
    rejected = _only(lg, "m@1")
    assert rejected.status is GateStatus.FAIL
    assert "rejected by bob (found a data leak)" in rejected.message
    with pytest.raises(GateFailedError):
        lg.promote("m@1", "stabilized")


def test_rollback_ready_and_waivers(open_home) -> None:  # type: ignore[no-untyped-def]
    lg = open_home('[gates]\n"*->production" = ["rollback_ready"]\n"*" = ["parity"]\n')
    model, x = sklearn_model()
    lg.register(model, x, name="m")
    lg.register(model, x, name="m")
    first = _only(lg, "m@1", "production")
    assert first.status is GateStatus.FAIL
    assert "no version in production to roll back to" in first.message
    with pytest.raises(AccessDeniedError):
        lg.waive("m@1", "production", "rollback_ready", reason="first", actor="mallory",
                 expires=date.today() + timedelta(days=3))
    with pytest.raises(InvalidInputError, match="in the past"):
        lg.waive("m@1", "production", "rollback_ready", reason="first", actor="ann",
                 expires=date.today() - timedelta(days=1))
    lg.waive("m@1", "production", "rollback_ready", reason="first release", actor="ann",
             expires=date.today() + timedelta(days=3))
    waived = lg.promote("m@1", "production").results[0]
    assert waived.status is GateStatus.WAIVED
    assert "WAIVED by ann until" in waived.message
    assert "first release" in waived.message
    second = lg.promote("m@2", "production").results[0]
    assert second.status is GateStatus.PASS
    assert "rollback target m@1 verified" in second.message


def test_shadow_divergence_fails_closed(open_home) -> None:  # type: ignore[no-untyped-def]
    lg = open_home(_policy("shadow_divergence"))
    model, x = sklearn_model()
    lg.register(model, x, name="m")
    assert "no shadow traffic" in _only(lg, "m@1").message


def test_stop_at_first_failure_unless_all(open_home) -> None:  # type: ignore[no-untyped-def]
    lg = open_home('[gates]\n"*" = ["seeds_recorded", "parity", "approval"]\n')
    model, x = sklearn_model()
    lg.register(model, x, name="m")
    with pytest.raises(GateFailedError) as info:
        lg.promote("m@1", "stabilized")
    assert [r.status for r in info.value.results] == [
        GateStatus.FAIL, GateStatus.SKIPPED, GateStatus.SKIPPED]
    with pytest.raises(GateFailedError) as info:
        lg.promote("m@1", "stabilized", run_all=True)
    assert [r.status for r in info.value.results] == [
        GateStatus.FAIL, GateStatus.PASS, GateStatus.FAIL]
    runs = lg.gate_runs("m@1")
    assert len(runs) == 2
    assert not any(r.passed for r in runs)
    refused = [r for r in lg.audit_log() if r.type == "promotion.refused"]
    assert len(refused) == 2


@pytest.mark.torch
@pytest.mark.slow
def test_full_production_policy_on_a_torch_model(open_home) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("torch")
    lg = open_home('[gates]\n"*->production" = ["parity", "sbom_valid", "signature", '
                   '"seeds_recorded", "metrics", "infra_validation", '
                   '{ gate = "latency_budget", p99_ms = 2000, requests = 30 }, "approval", '
                   '"rollback_ready"]\n"*" = ["parity"]\n'
                   '[gate.metrics]\nauc = { threshold = 0.5, greater_is_better = true }\n')
    net, sample = torch_model()
    lg.register(net, sample, name="net", seed=0, metrics={"auc": 0.9})
    with pytest.raises(GateFailedError) as info:
        lg.promote("net@1", "production")
    failed = [r.gate for r in info.value.results if r.status is GateStatus.FAIL]
    assert failed == ["approval"]
    lg.approve("net@1", "production", actor="ann", identified_by=IdentifiedBy.TOKEN)
    lg.waive("net@1", "production", "rollback_ready", actor="bob", reason="first release",
             expires=date.today() + timedelta(days=1))
    result = lg.promote("net@1", "production")
    statuses = {r.gate: r.status for r in result.results}
    assert statuses.pop("rollback_ready") is GateStatus.WAIVED
    assert set(statuses.values()) == {GateStatus.PASS}
    assert lg.get("net@champion").number == 1


def test_sbom_and_signature_gates_fail_on_an_edited_record(open_home) -> None:  # type: ignore[no-untyped-def]
    import json

    import sqlalchemy as sa

    lg = open_home('[gates]\n"*" = ["sbom_valid", "signature"]\n')
    model, x = sklearn_model()
    other, _ = sklearn_model(seed=5)
    lg.register(model, x, name="m")
    lg.register(other, x, name="m")
    ok = lg.check_gates("m@1", "stabilized")
    assert [r.status for r in ok] == [GateStatus.PASS, GateStatus.PASS]
    # Point m@1 at m@2's BOM, as someone with database access might.
    engine = sa.create_engine(lg.settings.database_url)
    with engine.begin() as conn:
        rows = {n: json.loads(r) for n, r in conn.execute(
            sa.text("SELECT number, record FROM versions WHERE name='m'"))}
        rows[1]["files"]["bom.cdx.json"] = rows[2]["files"]["bom.cdx.json"]
        conn.execute(sa.text("UPDATE versions SET record=:r WHERE name='m' AND number=1"),
                     {"r": json.dumps(rows[1])})
    engine.dispose()
    sbom, signature = lg.check_gates("m@1", "stabilized")
    assert sbom.status is GateStatus.FAIL
    assert "does not describe this version's model file" in sbom.message
    assert signature.status is GateStatus.FAIL
    assert "does not match its signature" in signature.message
