"""The approval gate counts approvers whose identity was proven (an API token through the
registry server) where [roles] are configured; every decision records how its actor was
identified. Real `lockgate` processes on a real SQLite home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lockgate.api.facade import Lockgate
from lockgate.audit import AuditEvent, EventType
from lockgate.types import Digest, Signature, TensorSpec, Version
from registry_server import registry_process

POLICY = """
[gates]
"*" = ["approval"]

[roles]
approver = ["appr"]
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env.update(ORT_DISABLE_TELEMETRY="1", COLUMNS="400", **extra)
    return env


def _lockgate(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lockgate", *args, "--home", str(home)],
                          capture_output=True, text=True, env=_env(**env), timeout=120)


def _gates(home: Path) -> tuple[int, dict[str, Any]]:
    proc = _lockgate(home, "gates", "m@1", "--to", "stabilized", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    (result,) = [g for g in doc["gates"] if g["gate"] == "approval"]
    return proc.returncode, result


@pytest.fixture
def gated_home(tmp_path: Path) -> Path:
    """A home whose every transition needs one approval from `appr`, with m@1 registered by
    `dev` and `appr` a registry user with the approver role."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "lockgate.toml").write_text(POLICY, encoding="utf-8")
    with Lockgate.open(home) as lg:
        draft = Version(
            name="m", number=0, digest=Digest.of_bytes(b"m"), framework="test",
            framework_version="0", opset=17, ir_version=8,
            signature=Signature((TensorSpec("x", "float32", ("batch", 2)),),
                                (TensorSpec("y", "float32", ("batch", 1)),)),
            parity=None, environment={}, creator="dev", created_at="now")
        lg.meta.create_version("m", lambda _n: draft.record(), lg.settings.stages[0],
                               AuditEvent(EventType.MODEL_REGISTERED, "dev"))
        lg.add_user("appr", ["approver"], actor="setup")
    return home


@pytest.fixture
def registry_url(gated_home: Path) -> Iterator[tuple[str, str]]:
    """A real `lockgate server` over the home, and appr's API token."""
    with Lockgate.open(gated_home) as lg:
        _, token = lg.create_token("appr", actor="setup")
    with registry_process(gated_home, _env(), gated_home.parent) as (port, _lines):
        yield f"http://127.0.0.1:{port}", token


def _decisions(home: Path) -> list[dict[str, Any]]:
    with Lockgate.open(home) as lg:
        return [d.to_dict() for d in lg.decisions("m@1")]


def test_lockgate_user_alone_does_not_satisfy_the_gate_where_roles_are_set(
        gated_home: Path) -> None:
    approved = _lockgate(gated_home, "approve", "m@1", "--stage", "stabilized",
                         LOCKGATE_USER="appr")
    assert approved.returncode == 0, approved.stderr
    assert "identified by local" in approved.stdout
    (decision,) = _decisions(gated_home)
    assert decision["actor"] == "appr"
    assert decision["detail"]["identified_by"] == "local"

    rc, result = _gates(gated_home)
    assert rc == 1
    assert result["status"] == "fail"
    assert result["measured"]["approved_by"] == []
    assert result["measured"]["not_counted_local"] == ["appr"]
    assert result["measured"]["identified_by"] == {"appr": "local"}
    assert "not counted: appr approved as a local user" in result["message"]
    assert "[gate.approval] allow_local_identity = true" in result["message"]

    promoted = _lockgate(gated_home, "promote", "m@1", "--to", "stabilized",
                         LOCKGATE_USER="appr")
    assert promoted.returncode == 1
    with Lockgate.open(gated_home) as lg:
        assert lg.get("m@1").stage == "prototype"


def test_allow_local_identity_counts_local_approvers_and_says_so(gated_home: Path) -> None:
    (gated_home / "lockgate.toml").write_text(
        POLICY + "\n[gate.approval]\nallow_local_identity = true\n", encoding="utf-8")
    assert _lockgate(gated_home, "approve", "m@1", "--stage", "stabilized",
                     LOCKGATE_USER="appr").returncode == 0
    rc, result = _gates(gated_home)
    assert rc == 0
    assert result["status"] == "pass"
    assert result["thresholds"]["allow_local_identity"] is True
    assert result["message"] == ("approved by appr (local); local identities counted "
                                 "([gate.approval] allow_local_identity = true)")


def test_an_approval_with_the_approvers_token_satisfies_the_gate(
        gated_home: Path, registry_url: tuple[str, str]) -> None:
    url, token = registry_url
    approved = _lockgate(gated_home, "approve", "m@1", "--stage", "stabilized",
                         "--server", url, LOCKGATE_TOKEN=token, LOCKGATE_USER="someone-else")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.startswith("appr approved m@1 for stabilized (identified by token)")

    rc, result = _gates(gated_home)
    assert rc == 0, result
    assert result["status"] == "pass"
    assert result["message"] == "approved by appr (token)"
    assert result["measured"]["identified_by"] == {"appr": "token"}
    with Lockgate.open(gated_home) as lg:
        events = [e for e in lg.audit_log() if e.type == EventType.APPROVED.value]
    assert [e.payload["identified_by"] for e in events] == ["token"]


def test_rejections_and_waivers_record_how_the_actor_was_identified(
        gated_home: Path, registry_url: tuple[str, str]) -> None:
    url, token = registry_url
    rejected = _lockgate(gated_home, "reject", "m@1", "--stage", "stabilized", "--comment",
                         "metrics regressed", LOCKGATE_USER="appr")
    assert rejected.returncode == 0, rejected.stderr
    # a rejection blocks whoever made it: stopping a release needs no proof
    rc, result = _gates(gated_home)
    assert rc == 1
    assert result["message"] == "rejected by appr (metrics regressed)"
    assert result["measured"]["identified_by"] == {"appr": "local"}

    waived = _lockgate(gated_home, "waive", "m@1", "--stage", "stabilized", "--gate",
                       "approval", "--reason", "hotfix, reviewed live", "--expires", _soon(),
                       "--server", url, LOCKGATE_TOKEN=token)
    assert waived.returncode == 0, waived.stderr
    kinds = {d["kind"]: d["detail"]["identified_by"] for d in _decisions(gated_home)}
    assert kinds == {"waiver": "token", "rejection": "local"}
    rc, result = _gates(gated_home)
    assert rc == 0
    assert result["status"] == "waived"
    assert result["message"].startswith("WAIVED by appr until ")


def test_a_local_waiver_of_the_approval_gate_does_not_count(gated_home: Path) -> None:
    waived = _lockgate(gated_home, "waive", "m@1", "--stage", "stabilized", "--gate",
                       "approval", "--reason", "trust me", "--expires", _soon(),
                       LOCKGATE_USER="appr")
    assert waived.returncode == 0, waived.stderr
    rc, result = _gates(gated_home)
    assert rc == 1
    assert result["status"] == "fail"
    assert "the waiver by appr does not count: it was given as a local user" in result["message"]
    assert result["measured"]["refused_waiver"]["detail"] == {"identified_by": "local"}


def _soon() -> str:
    return (datetime.now(UTC).date() + timedelta(days=7)).isoformat()
