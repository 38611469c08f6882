"""Concurrent promotions (exactly one wins), JUnit XML for CI, history, and the decision
commands, through the real CLI and real SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import onnx

from lockgate.api.facade import Lockgate
from lockgate.errors import PromotionError
from onnx_models import linear_onnx

POLICY = '[gates]\n"*" = ["seeds_recorded"]\n[roles]\napprover = ["ann", "bob"]\n'


def run(*args: str, user: str = "tester") -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "lockgate", *args], capture_output=True,
                       text=True, timeout=300,
                       env={**os.environ, "ORT_DISABLE_TELEMETRY": "1", "COLUMNS": "200",
                            "LOCKGATE_USER": user})
    return p.returncode, p.stdout, p.stderr


def test_sixteen_concurrent_promotions_one_wins(db_home: Path) -> None:
    home = db_home
    (home / "lockgate.toml").write_text(POLICY)
    with Lockgate.open(home) as lg:
        for i in range(16):
            lg.register(linear_onnx(seed=i), name="m", seed=i)
    # Every promotion has read the stage and evaluated its gates before any of them commits
    # (the barrier sits in the gate-result callback): a real race for one production slot.
    barrier = threading.Barrier(16, timeout=120)
    outcomes: dict[int, str] = {}

    def promote(n: int) -> None:
        with Lockgate.open(home) as mine:
            try:
                mine.promote(f"m@{n}", "production", on_result=lambda _r: barrier.wait())
                outcomes[n] = "won"
            except PromotionError as exc:
                outcomes[n] = f"lost: {exc.message}"

    threads = [threading.Thread(target=promote, args=(n,)) for n in range(1, 17)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, o in outcomes.items() if o == "won"]
    assert len(outcomes) == 16
    assert len(winners) == 1, outcomes
    assert all("changed meanwhile" in o or "is now in stage" in o
               for n, o in outcomes.items() if n not in winners), outcomes
    with Lockgate.open(home) as lg:
        in_production = [v.number for v in lg.versions("m") if v.stage == "production"]
        assert in_production == winners
        assert lg.get("m@champion").number == winners[0]
        assert lg.audit_verify().ok


def test_eight_concurrent_registrations_get_distinct_numbers(db_home: Path) -> None:
    with Lockgate.open(db_home):
        pass  # create the home (and migrate the database) once, before the race
    barrier = threading.Barrier(8, timeout=120)
    numbers: dict[int, int] = {}
    errors: list[str] = []

    def register(i: int) -> None:
        try:
            with Lockgate.open(db_home) as mine:
                barrier.wait()
                numbers[i] = mine.register(linear_onnx(seed=i), name="m", seed=i).number
        except Exception as exc:  # reported below
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(numbers.values()) == list(range(1, 9))
    with Lockgate.open(db_home) as lg:
        assert lg.audit_verify().ok
        assert len([r for r in lg.audit_log() if r.type == "model.registered"]) == 8


def test_junit_report_lists_one_testcase_per_gate(home: Path, tmp_path: Path) -> None:
    (home / "lockgate.toml").write_text(
        '[gates]\n"*" = ["seeds_recorded", "sbom_valid", "parity", "approval"]\n')
    onnx.save(linear_onnx(), tmp_path / "m.onnx")
    assert run("register", str(tmp_path / "m.onnx"), "--name", "m", "--seed", "1")[0] == 0
    report = tmp_path / "gates.xml"
    code, _, err = run("promote", "m@1", "--to", "stabilized", "--all", "--junit", str(report))
    assert code == 1
    assert "parity fail" in err
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["seeds_recorded", "sbom_valid", "parity",
                                              "approval"]
    assert suite.get("tests") == "4"
    assert suite.get("failures") == "2"
    assert cases[0].find("failure") is None
    failure = cases[2].find("failure")
    assert failure is not None
    assert "no parity report" in (failure.get("message") or "")
    code, out, _ = run("gates", "m@1", "--to", "stabilized", "--dry-run", "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["dry_run"] is True
    assert [g["status"] for g in doc["gates"]] == ["pass", "pass", "fail", "fail"]
    code, out, _ = run("versions", "m", "--json")
    assert json.loads(out)[0]["stage"] == "prototype"  # a dry run moves nothing


def test_decisions_and_history_from_the_cli(home: Path, tmp_path: Path) -> None:
    (home / "lockgate.toml").write_text(
        POLICY.replace('["seeds_recorded"]', '["approval"]')
        + "[gate.approval]\nallow_local_identity = true\n")  # approvals by LOCKGATE_USER
    onnx.save(linear_onnx(), tmp_path / "m.onnx")
    for _ in range(2):
        assert run("register", str(tmp_path / "m.onnx"), "--name", "m")[0] == 0
    code, _, err = run("approve", "m@1", "--stage", "production")
    assert code == 11
    assert "does not hold the 'approver' role" in err
    code, _, err = run("approve", "m@1", "--stage", "production", user="ann")
    assert code == 0, err
    assert run("promote", "m@1", "--to", "production")[0] == 0
    code, _, err = run("waive", "m@2", "--stage", "production", "--gate", "approval",
                       "--reason", "hotfix, reviewed live", "--expires", "2020-01-01",
                       user="bob")
    assert code == 2
    assert "in the past" in err
    code, _, _ = run("reject", "m@2", "--stage", "production", "--comment", "not yet",
                     user="bob")
    assert code == 0
    assert run("promote", "m@2", "--to", "production")[0] == 1
    assert run("approve", "m@2", "--stage", "production", user="ann")[0] == 0
    assert run("approve", "m@2", "--stage", "production", user="bob")[0] == 0
    assert run("promote", "m@2", "--to", "production")[0] == 0
    code, out, _ = run("history", "m", "--json")
    assert code == 0
    h = json.loads(out)
    champion = [(r["version"], r["until"] is None) for r in h["holdings"]
                if r["kind"] == "alias" and r["name"] == "champion"]
    assert champion == [(1, False), (2, True)]
    production = [(r["version"], r["until"] is None) for r in h["holdings"]
                  if r["kind"] == "stage" and r["name"] == "production"]
    assert production == [(1, False), (2, True)]
    moves = [r for r in h["timeline"] if r["event"] == "stage"]
    assert moves[0]["gates"] == ["approval"]
    assert any(r["event"] == "refused" and r["version"] == 2 for r in h["timeline"])
    assert any("rejected for production: not yet" in r["detail"] for r in h["timeline"])
    code, out, _ = run("history", "m")
    assert "champion" in out
